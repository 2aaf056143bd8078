"""Where the target's torch comes from.

Two inputs: the target's PyTorch index (or VLLM_TORCH_INDEX_URL), and the
user's pip mirrors (index-url, extra-index-url, find-links from pip's config
files and PIP_* variables). uv ignores pip's configuration, so the mirrors are
read here and handed to uv as flags. When the PyTorch index can't be reached,
the mirrors are used alone if one of them holds the pin; otherwise the build
stops within seconds with one line naming the override.
"""

from __future__ import annotations

import configparser
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from devkit import DevkitError
from devkit.foundation import envs, locations
from devkit.toolchains.targets import Target, python_tag

REACH_TIMEOUT_S = 4.0
SYSTEM_PIP_CONF = Path("/etc/pip.conf")


@dataclass(frozen=True)
class PipSources:
    """The package sources pip is configured with."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()

    def mirrors(self) -> tuple[str, ...]:
        """Every location other than the default index, then the default index."""
        return (*self.extra_index_urls, *self.find_links, *filter(None, [self.index_url]))

    def uv_args(self) -> list[str]:
        args: list[str] = []
        if self.index_url:
            args += ["--default-index", self.index_url]
        for url in self.extra_index_urls:
            args += ["--index", url]
        for link in self.find_links:
            args += ["--find-links", link]
        return args


def pip_config_files(environ: Mapping[str, str]) -> list[Path]:
    """pip's config files, lowest priority first (pip's documented order)."""
    config_file = environ.get("PIP_CONFIG_FILE")
    if config_file == os.devnull:
        return []
    xdg_dirs = environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":")
    home = Path(environ.get("HOME", "~")).expanduser()
    xdg_home = Path(environ.get("XDG_CONFIG_HOME", home / ".config"))
    files = [Path(d) / "pip" / "pip.conf" for d in xdg_dirs if d]
    files += [SYSTEM_PIP_CONF, home / ".pip" / "pip.conf", xdg_home / "pip" / "pip.conf"]
    if environ.get("VIRTUAL_ENV"):
        files.append(Path(environ["VIRTUAL_ENV"]) / "pip.conf")
    if config_file:
        files.append(Path(config_file))
    return files


def read_pip_sources(environ: Mapping[str, str] | None = None) -> PipSources:
    """The index-url, extra-index-url and find-links pip would use."""
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    for path in pip_config_files(environ):
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(path)
        except (OSError, configparser.Error):
            continue
        for section in ("global", "install"):  # [install] overrides [global]
            if parser.has_section(section):
                for key in ("index-url", "extra-index-url", "find-links"):
                    if parser.has_option(section, key):
                        values[key] = parser.get(section, key)
    for key in ("index-url", "extra-index-url", "find-links"):
        env_value = envs.get("PIP_" + key.upper().replace("-", "_"), environ)
        if env_value:
            values[key] = env_value
    return PipSources(
        index_url=values.get("index-url", "").strip() or None,
        extra_index_urls=tuple(values.get("extra-index-url", "").split()),
        find_links=tuple(values.get("find-links", "").split()),
    )


def _read(location: str, timeout: float) -> str | None:
    """The text at a URL, file:// URL or path (a directory reads as its listing); None
    when it isn't there or can't be read."""
    path = locations.local_path(location)
    if path is not None and path.is_dir():
        index = path / "index.html"
        return index.read_text() if index.is_file() else "\n".join(os.listdir(path))
    try:
        raw = locations.read(location, "a package listing", timeout)
    except (DevkitError, OSError):
        return None
    return raw.decode("utf-8", "replace") if raw is not None else None


def unreachable_because(url: str, timeout: float = REACH_TIMEOUT_S) -> str | None:
    """Why the index at `url` can't serve torch, or None when it can.

    Both its root and its torch page are asked (each bounded by `timeout`, for
    the connect and every read): an index whose root answers while its package
    pages hang would otherwise hold uv for minutes.
    """
    for page in (url.rstrip("/") + "/", url.rstrip("/") + "/torch/"):
        if locations.local_path(page) is not None:
            if _read(page, timeout) is None:
                return f"{page} not found"
            continue
        try:
            with urllib.request.urlopen(page, timeout=timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            return f"{page} answered HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                return f"{page} did not answer within {timeout:g} s"
            return f"{page}: {getattr(reason, 'strerror', None) or reason}"
    return None


def reachable(url: str, timeout: float = REACH_TIMEOUT_S) -> bool:
    return unreachable_because(url, timeout) is None


def wheel_pattern(target: Target) -> re.Pattern[str]:
    """Matches a wheel file name of the target's torch for this Python."""
    version = re.escape(target.torch_spec.removeprefix("torch=="))
    local = "" if target.torch_local else r"(?:\+[\w.]+)?"  # a bare pin admits any tag
    tag = python_tag()
    return re.compile(rf"torch-{version}{local}-{tag}-[^\s\"'<>/]*\.whl")


def holds_pin(location: str, target: Target, timeout: float = REACH_TIMEOUT_S) -> bool:
    """Whether a find-links location or a simple index offers the target's torch."""
    pattern = wheel_pattern(target)
    base = location.rstrip("/")
    for page in (base, base + "/torch/"):  # a flat listing, or a PEP 503 index
        text = _read(page, timeout)
        if text and pattern.search(urllib.parse.unquote(text)):
            return True
    return False


@dataclass(frozen=True)
class TorchSources:
    """What `uv pip install` is told, and one line saying why."""

    torch_index: str | None
    pip: PipSources
    index_strategy: str
    note: str

    def uv_args(self) -> list[str]:
        args = ["--index-strategy", self.index_strategy]
        if self.torch_index:
            args += ["--index", self.torch_index]
        return args + self.pip.uv_args()


def choose_torch_sources(
    target: Target,
    pip: PipSources,
    environ: Mapping[str, str] | None = None,
    is_reachable: Callable[[str], bool] | None = None,
    holds: Callable[[str, Target], bool] = holds_pin,
    probe: bool = True,
) -> TorchSources:
    """The target's index when it answers; else the mirrors that hold the pin; else an error.

    Without `probe` (the venv already has everything) or with UV_OFFLINE, no
    index is asked: uv is handed the same sources and contacts none of them.
    """
    override = envs.get("VLLM_TORCH_INDEX_URL", environ)
    index = override or target.torch_index
    if not probe:
        # torch is there: later installs (test requirements, a plugin's build tools)
        # need only the mirrors, and an unprobed index that doesn't answer would fail them.
        note = f"{target.torch_spec}: already in the venv; no index contacted"
        return TorchSources(None, pip, target.index_strategy, note)
    if envs.get("UV_OFFLINE", environ):
        note = f"{target.torch_spec}: UV_OFFLINE: uv installs from its cache; no index contacted"
        return TorchSources(index, pip, target.index_strategy, note)
    reason = None
    if is_reachable is None:
        reason = unreachable_because(index)
    elif not is_reachable(index):
        reason = "unreachable"
    if reason is None:
        return TorchSources(index, pip, target.index_strategy, f"{target.torch_spec} from {index}")
    if override:
        detail = "" if reason == "unreachable" else f" ({reason})"
        raise DevkitError(
            f"VLLM_TORCH_INDEX_URL={override} can't be reached{detail}; fix the URL or unset it"
        )
    # Local mirrors first: they answer at once, and a remote one may hang.
    by_place = sorted(pip.mirrors(), key=lambda m: locations.local_path(m) is None)
    for mirror in by_place:
        if holds(mirror, target):
            return TorchSources(
                None,
                pip,
                target.index_strategy,
                f"{index} unreachable; {target.torch_spec} from your pip mirror {mirror}",
            )
    raise DevkitError(
        f"{index} can't be reached and no pip mirror holds {target.torch_spec}; set "
        f"VLLM_TORCH_INDEX_URL to an index that has it (or add its wheel to PIP_FIND_LINKS)"
    )
