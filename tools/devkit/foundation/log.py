"""What devkit says to a person: one prefix, two streams.

`say` writes to stdout, where a nox session's lines go. `say_err` writes to
stderr: the build backend's channel (uv shows it with -v, or when the build
fails), used by what runs inside the backend. Standard library only.
"""

from __future__ import annotations

import sys

PREFIX = "[vllm] "


def say(message: str) -> None:
    """One line for the person running the session."""
    print(PREFIX + message, flush=True)


def say_err(message: str) -> None:
    """One line on stderr, the build backend's channel."""
    print(PREFIX + message, file=sys.stderr, flush=True)
