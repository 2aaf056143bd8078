"""The package's version: the installed distribution's, made from git at build time
(0.1.0.devN+g<sha12>.cpu; 0.1.0+cpu on the tag v0.1.0; see tools/devkit/build/metadata.py)."""

from importlib.metadata import PackageNotFoundError, version

__base_version__ = "0.1.0"  # the next release; a release is the tag v<this>

try:
    __version__ = version("vllm")
except PackageNotFoundError:  # a source tree, not installed
    __version__ = __base_version__
