"""ray job submit --working-dir . -- python jobs/train.py DATA [flags]  (same flags as `raybird train`)."""

import sys

from raybird.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
