"""ray job submit --working-dir . -- python jobs/segment.py INPUT... --out DIR [--model CKPT] [--gpu]
(same flags as `raybird segment`)."""

import sys

from raybird.cli import main

if __name__ == "__main__":
    sys.exit(main(["segment", *sys.argv[1:]]))
