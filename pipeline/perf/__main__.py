import sys

from pipeline.perf.cli import main

if __name__ == "__main__":
    sys.exit(main())
