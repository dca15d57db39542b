"""ray job submit --working-dir . -- python jobs/ingest.py INPUT... --out DIR  (same flags as `raybird ingest`)."""

import sys

from raybird.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
