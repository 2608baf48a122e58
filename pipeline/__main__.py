import sys

from pipeline.cli.main import entrypoint

if __name__ == "__main__":
    sys.exit(entrypoint())
