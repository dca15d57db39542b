"""ray job submit --working-dir . -- python jobs/evaluate.py --pred DIR --ref LABELS...
(same flags as `raybird evaluate`)."""

import sys

from raybird.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
