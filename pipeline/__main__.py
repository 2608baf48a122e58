import sys

from pipeline.cli import entrypoint

if __name__ == "__main__":
    sys.exit(entrypoint())
