"""ray job submit --working-dir . -- python jobs/tune.py DATA --out DIR [flags]  (same flags as `raybird tune`)."""

import sys

from raybird.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
