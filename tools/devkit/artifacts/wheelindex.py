"""The static index of prebuilt wheels: its layout, locating a wheel, publishing one.

Maintainers publish wheels into a static index (`nox -s wheel -- --index DIR`)
that any HTTP server or bucket can serve:

    DIR/<commit>/<variant>/vllm-<version>-<tags>.whl
    DIR/<commit>/<variant>/metadata.json    wheel, sha256, size, commit,
                                            commit_time, build_info
    DIR/<commit>/<variant>/simple/vllm/     a PEP 503 simple index of that wheel
    DIR/nightly/<variant>/...               the same, of the newest commit
    DIR/keys/<binary key>/<variant>/...     the same, by binary key (devkit.artifacts.binkey):
                                            what dev-precompiled and ci look up

<variant> is the target's version suffix (cpu, cu130, rocm7.1), so
`uv pip install --index-url <base>/nightly/cpu/simple vllm` installs a nightly.
The project's own index is one setting, pyproject.toml's
[tool.vllm.precompiled] index, which VLLM_PRECOMPILED_WHEEL_INDEX overrides.
Standard library only (the build backend locates through it).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from devkit import DevkitError
from devkit.artifacts.wheelcheck import problems_here, read_build_info
from devkit.foundation import envs, gitbase, locations
from devkit.foundation.envs import ROOT
from devkit.foundation.files import atomic_write, sha256_of
from devkit.foundation.log import say_err
from devkit.toolchains import targets

METADATA = "metadata.json"

NIGHTLY = "nightly"

KEYS = "keys"  # <index>/keys/<binary key>/<variant>/: entries by what they are built from

SIMPLE = "simple"  # the PEP 503 index beside each entry's wheel

INDEX_HINT = "set VLLM_PRECOMPILED_WHEEL_INDEX, or pyproject.toml's [tool.vllm.precompiled] index"


@dataclass(frozen=True)
class Wheel:
    """A wheel to take binaries from, and how it was chosen."""

    location: str  # a local path or an http(s):// or file:// URL
    sha256: str | None  # from the index's metadata; None when nothing says
    origin: str  # for the log: "VLLM_PRECOMPILED_WHEEL_LOCATION", "dist/", ...

    @property
    def name(self) -> str:
        path = urllib.parse.unquote(urllib.parse.urlparse(self.location).path)
        return PurePosixPath(path).name


def merge_base(root: Path = ROOT) -> str | None:
    """The commit where HEAD left the main branch (HEAD itself on main); None outside git."""
    try:
        return gitbase.merge_base(root=root)[1]
    except DevkitError:
        return None


def default_index(environ: Mapping[str, str] | None = None, root: Path = ROOT) -> str | None:
    """VLLM_PRECOMPILED_WHEEL_INDEX, else pyproject.toml's [tool.vllm.precompiled] index
    (a directory there is relative to the checkout); None when neither is set."""
    index = envs.get("VLLM_PRECOMPILED_WHEEL_INDEX", environ)
    if index:
        return index
    try:
        import tomllib
    except ImportError:  # Python 3.10: nox and scikit-build-core both bring tomli
        import tomli as tomllib
    path = root / "pyproject.toml"
    if not path.is_file():
        return None
    try:
        project = tomllib.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DevkitError(f"can't read {root / 'pyproject.toml'} ({exc}); fix it") from None
    index = project.get("tool", {}).get("vllm", {}).get("precompiled", {}).get("index") or None
    if index and not locations.is_url(index):
        index = str(root / index)
    return index


def read_metadata(index: str, commit: str, variant: str) -> dict[str, Any] | None:
    """An index entry's metadata; None when the index has no such entry."""
    url = locations.join(index, commit, variant, METADATA)
    raw = locations.read(url, f"the {variant} wheel of {commit[:12]}")
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
        meta["wheel"], meta["sha256"]  # noqa: B018 - both must be there
    except (ValueError, KeyError, TypeError):
        raise DevkitError(f"{url} is not an index entry's metadata; republish it") from None
    problem = metadata_problem(meta)
    if problem:
        raise DevkitError(f"{url}: {problem}; republish the entry (nox -s wheel -- --index)")
    return meta


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def metadata_problem(meta: Mapping[str, Any]) -> str | None:
    """What is wrong with an index entry's metadata, or None: the wheel a plain file
    name, its sha256 64 hex digits (or null: refused later, unless named by hand),
    the build info an object."""
    wheel, digest = meta.get("wheel"), meta.get("sha256")
    if not isinstance(wheel, str) or not wheel.endswith(".whl") or "/" in wheel or "\\" in wheel:
        return f"its wheel {wheel!r} is not a wheel's file name"
    if wheel.startswith("."):
        return f"its wheel {wheel!r} is not a wheel's file name"
    if digest is not None and not (isinstance(digest, str) and _SHA256.match(digest)):
        return f"its sha256 {digest!r} is not 64 hex digits"
    if "build_info" in meta and not isinstance(meta["build_info"], dict):
        return f"its build_info {meta['build_info']!r} is not an object"
    return None


def _from_index(index: str, commit: str, variant: str) -> Wheel | None:
    meta = read_metadata(index, commit, variant)
    if meta is None:
        return None
    location = locations.join(index, commit, variant, meta["wheel"])
    if meta["sha256"] is None:
        raise DevkitError(
            f"{index} lists {meta['wheel']} for {commit[:12]} without a sha256, so it can't be "
            f"checked: republish it, or take it unchecked by naming it: "
            f"VLLM_PRECOMPILED_WHEEL_LOCATION={location}"
        )
    return Wheel(location, meta["sha256"], f"index {index} at {commit[:12]}")


def _fits(wheel: Path, target: targets.Target, torch: targets.TorchInfo) -> bool:
    try:
        return not problems_here(read_build_info(wheel), target, torch)
    except DevkitError:
        return False


def locate(
    target: targets.Target,
    torch: targets.TorchInfo | None = None,
    environ: Mapping[str, str] | None = None,
    root: Path = ROOT,
) -> Wheel:
    """The wheel to take binaries from, in the order CONTRIBUTING.md documents.

    With `torch`, a wheel in dist/ counts only if it fits that torch (and this
    machine); otherwise the newest of the target's wheels there is taken.
    """
    variant = target.version_suffix
    location = envs.get("VLLM_PRECOMPILED_WHEEL_LOCATION", environ)
    if location:
        return Wheel(location, None, "VLLM_PRECOMPILED_WHEEL_LOCATION")

    in_dist = sorted(
        (p for p in (root / "dist").glob("vllm-*-*.whl") if is_variant(p.name, variant)),
        key=lambda p: p.stat().st_mtime,
    )
    for wheel in reversed(in_dist):
        if torch is None or _fits(wheel, target, torch):
            return Wheel(str(wheel), None, "dist/ (the newest wheel that fits)")
    if in_dist:
        say_err(f"dist/ has {len(in_dist)} {variant} wheel(s), none for this venv; looking further")

    index = default_index(environ, root)
    if index:
        commit = envs.get("VLLM_PRECOMPILED_WHEEL_COMMIT", environ) or merge_base(root)
        if commit:
            found = _from_index(index, commit, variant)
            if found:
                return found
            say_err(
                f"warning: {index} has no {variant} wheel for {commit[:12]}; taking nightly, "
                "whose binaries may not match your csrc/"
            )
        else:
            say_err(f"warning: no merge-base with main here; taking {index}'s nightly")
        found = _from_index(index, NIGHTLY, variant)
        if found:
            return Wheel(found.location, found.sha256, f"index {index}, nightly")
        raise DevkitError(
            f"{index} has no {variant} wheel for {commit or 'this checkout'} nor in nightly/; "
            "publish one (nox -s wheel -- --index DIR) or set VLLM_PRECOMPILED_WHEEL_LOCATION"
        )
    raise DevkitError(
        "no precompiled wheel to use: no index is configured (pyproject.toml's "
        "[tool.vllm.precompiled] index is empty); set VLLM_PRECOMPILED_WHEEL_INDEX (a wheel "
        "index's URL or directory) or VLLM_PRECOMPILED_WHEEL_LOCATION (a wheel's path or URL), "
        f"or build one into dist/ with `nox -s wheel -- --target {target.name}`"
    )


def is_variant(name: str, variant: str) -> bool:
    """Whether a wheel's file name carries `variant` as its version's last local part:
    vllm-0.1.0+cpu-... and vllm-0.1.0.dev3+g0123456789ab.cpu-... are cpu wheels."""
    version = name.split("-")[1] if name.count("-") >= 4 else ""
    local = version.partition("+")[2]
    return local == variant or local.endswith(f".{variant}")


def _commit_time(commit: str, root: Path) -> int | None:
    out = gitbase.git("show", "-s", "--format=%ct", commit, root=root)
    return int(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None


def simple_pages(wheel_name: str, sha256: str) -> dict[str, bytes]:
    """The PEP 503 pages of an entry holding one wheel, by path under the entry.

    `simple/` lists the project, `simple/vllm/` links the wheel (two levels
    up, with its sha256), so `--index-url <entry>/simple` serves it from any
    static file server.
    """
    href = "../../" + urllib.parse.quote(wheel_name) + f"#sha256={sha256}"
    page = (
        '<!DOCTYPE html>\n<html><head><meta name="pypi:repository-version" content="1.0">'
        "<title>{title}</title></head>\n<body>\n{links}\n</body></html>\n"
    )
    return {
        f"{SIMPLE}/index.html": page.format(
            title="Simple index", links='<a href="vllm/">vllm</a>'
        ).encode(),
        f"{SIMPLE}/vllm/index.html": page.format(
            title="Links for vllm", links=f'<a href="{href}">{wheel_name}</a>'
        ).encode(),
    }


def _write_entry(entry: Path, wheel: Path, meta: Mapping[str, Any]) -> None:
    """The wheel first, then its simple index and metadata.json, which readers go by;
    then old wheels go."""
    entry.mkdir(parents=True, exist_ok=True)
    atomic_write(entry / wheel.name, wheel)
    for name, page in simple_pages(wheel.name, meta["sha256"]).items():
        (entry / name).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(entry / name, page)
    atomic_write(entry / METADATA, (json.dumps(meta, indent=2) + "\n").encode())
    for old in entry.glob("*.whl"):
        if old.name != wheel.name:
            old.unlink()


def publish(wheel: Path, index: Path, root: Path = ROOT, key: str | None = None) -> str:
    """Adds the wheel to the index by its binary key (keys/<key>/, what lookups use), at its
    commit (an alias for people), and to nightly/ if newest; returns a summary."""
    info = read_build_info(wheel)
    commit = info.get("git_commit") or ""
    if not commit or commit.endswith("-dirty"):
        raise DevkitError(
            f"{wheel.name} was built from {'uncommitted changes' if commit else 'outside git'}; "
            "an index entry must name the commit its sources are: commit, then rebuild"
        )
    variant = targets.get_target(info["target"]).version_suffix
    meta = {
        "wheel": wheel.name,
        "sha256": sha256_of(wheel),
        "size": wheel.stat().st_size,
        "commit": commit,
        "commit_time": _commit_time(commit, root),
        "variant": variant,
        "build_info": info,
        "binary_key": key,
    }
    if key:
        _write_entry(index / KEYS / key / variant, wheel, meta)
    _write_entry(index / commit / variant, wheel, meta)
    by_key = f" (key {key[:16]})" if key else ""
    done = f"published {wheel.name}{by_key} to {index / commit / variant}"
    current = read_metadata(str(index), NIGHTLY, variant)
    newer = current and (current.get("commit_time") or 0) > (meta["commit_time"] or 0)
    if newer:
        return f"{done}; nightly/ keeps the newer {current['commit'][:12]}"
    _write_entry(index / NIGHTLY / variant, wheel, meta)
    return f"{done} and to nightly/"
