#!/usr/bin/env bash
# Install the embedded default dataset (Fashion-MNIST) from Debian's package when possible.
set -u
dir=/usr/share/datasets/fashion-mnist
if [ -f "$dir/train-images-idx3-ubyte.gz" ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null \
    && exit 0
  echo "warning: apt-get could not install dataset-fashion-mnist" >&2
fi
echo "Fashion-MNIST is not installed: run 'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu)," >&2
echo "  pass --data-root to a folder holding its IDX files, or let torchvision download it when online." >&2
exit 0
