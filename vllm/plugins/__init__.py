"""Out-of-tree plugins, found through package entry points.

Two groups, as in vLLM:

- ``vllm.general_plugins``: functions called once per process by
  `load_general_plugins()` (to register models, ops, ...);
- ``vllm.platform_plugins``: functions that return the qualified name of a
  `Platform` subclass ("package.module:Class") when their hardware is
  present, else None; `vllm.platforms` consults them before its built-in
  detection.

`VLLM_PLUGINS` (comma-separated entry-point names) is an allow-list for both
groups; unset, every installed plugin loads. A plugin that fails to load is
reported with its name and error, and skipped: one broken package must not
take the process down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from vllm import envs

logger = logging.getLogger(__name__)

GENERAL_PLUGINS_GROUP = "vllm.general_plugins"
PLATFORM_PLUGINS_GROUP = "vllm.platform_plugins"

_general_plugins_loaded = False


def allowed(name: str) -> bool:
    allow_list = envs.VLLM_PLUGINS
    if allow_list is None:
        return True
    return name in {item.strip() for item in allow_list.split(",") if item.strip()}


def load_plugins_by_group(group: str) -> dict[str, Callable[[], Any]]:
    """The allowed entry points of `group`, loaded; failures reported and skipped."""
    plugins: dict[str, Callable[[], Any]] = {}
    for entry_point in entry_points(group=group):
        if not allowed(entry_point.name):
            logger.info("plugin %s (%s) skipped: not in VLLM_PLUGINS", entry_point.name, group)
            continue
        try:
            plugins[entry_point.name] = entry_point.load()
        except Exception as exc:
            logger.warning("plugin %s (%s) failed to load: %r", entry_point.name, group, exc)
    return plugins


def load_general_plugins() -> list[str]:
    """Runs every allowed general plugin, once per process; returns the names that ran."""
    global _general_plugins_loaded
    if _general_plugins_loaded:
        return []
    _general_plugins_loaded = True
    ran = []
    for name, register in load_plugins_by_group(GENERAL_PLUGINS_GROUP).items():
        try:
            register()
        except Exception as exc:
            logger.warning("plugin %s (%s) failed: %r", name, GENERAL_PLUGINS_GROUP, exc)
            continue
        ran.append(name)
    return ran
