"""Each method's chosen student out of the platform (analysis/export.py):

    python study/export.py runs/<name> [--trial ID ...] [--out DIR] [--images 256]
"""

from __future__ import annotations

import sys

from analysis.export import main

if __name__ == "__main__":
    sys.exit(main())
