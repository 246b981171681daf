#!/usr/bin/env bash
# Headless Chromium and ChromeDriver (Debian packages) for the report's browser test.
set -u
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing Chromium and ChromeDriver (Debian packages chromium, chromium-driver)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
    chromium-driver >/dev/null && exit 0
  echo "warning: apt-get could not install chromium and chromium-driver" >&2
fi
echo "Chromium is not installed: run 'sudo apt-get install chromium chromium-driver' (Debian/Ubuntu);" >&2
echo "  the report's browser test needs /usr/bin/chromium and /usr/bin/chromedriver." >&2
exit 0
