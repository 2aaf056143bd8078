"""Options shared by every test folder (this conftest loads first, from any path)."""

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        default="cpu",
        choices=("cpu", "cuda"),
        help="device the kernel tests run on (default: cpu); cuda reuses the same tests",
    )
