"""The engine's own plugin: registers the built-in samplers and schedules through the hooks.

Built-ins go through the same door as third parties (declared in the main pyproject.toml as the
entry point `builtin = "diffusekit.plugins.builtin"`), so `toolkit plugins` shows where every
name comes from; like every entry point of the diffusekit distribution it loads before any
third-party plugin, so a plugin's sampler or schedule cannot replace these. The engine
registers these at import already (core never imports plugins); registering the very same
objects again is a no-op, so this module only claims them. It claims exactly what
`diffusekit.core` defines, never what a plugin added to the same registries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diffusekit.core import samplers, schedules
from diffusekit.plugins.hookspecs import hookimpl


def _defined_in_core(entries: dict[str, Any]) -> dict[str, Any]:
    """The entries of a registry whose object is defined in `diffusekit.core`."""
    return {name: obj for name, obj in entries.items()
            if getattr(obj, "__module__", "").startswith("diffusekit.core.")}


def _entries(registry: Any) -> dict[str, Any]:
    return {name: registry.get(name) for name in registry.names()}


@hookimpl
def register_samplers(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """The built-in samplers (ddpm, ddim, euler, heun, dpmpp_2m, ...)."""
    for name, fn in _defined_in_core(_entries(samplers.REGISTRY)).items():
        register(name, fn)


@hookimpl
def register_schedules(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """The built-in schedules (vp_linear, vp_cosine, vp_discrete, ve, edm, flow)."""
    for name, factory in _defined_in_core(_entries(schedules.REGISTRY)).items():
        register(name, factory)
