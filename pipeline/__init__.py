"""Build, verify and publish speculative-decoding MTP draft models."""

__version__ = "0.1.0"
