"""The package's base version. Builds append the target as a local tag (+cpu)."""

__version__ = "0.1.0"
