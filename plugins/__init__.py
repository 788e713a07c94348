"""The plugin API of diffusekit: hooks, discovery and the `Domain` base class.

Everything that varies between uses of the engine (domains, extra samplers, extra schedules,
extra `toolkit` commands) arrives through four pluggy hooks, all documented in
`diffusekit.plugins.hookspecs`:

    register_domains(register)     register(domain_instance)
    register_samplers(register)    register(name, fn)        fn: the engine's sampler signature
    register_schedules(register)   register(name, factory)   factory(**params) -> Schedule
    register_commands(cli)         add click commands to the `toolkit` group

A plugin is a module with `@hookimpl` functions, declared as an entry point of the group
"diffusekit" in its distribution's pyproject.toml:

    [project.entry-points.diffusekit]
    example = "diffusekit_example"

Look-ups (each discovers the plugins on first use, once per process):

    get_domain(name) -> Domain       unknown -> UnknownNameError listing the known ones
    domain_names() -> list[str]
    plugin_report() -> list[PluginRecord]   name, distribution, version, status, error, provides
    get_plugin_manager()             the pluggy.PluginManager
    register_commands(cli)           the command line calls this while building `toolkit`
    reset()                          forget and rediscover on the next look-up (tests)

Importing this package also makes `diffusekit.core.samplers.names()` / `schedules.names()`
include the plugins' samplers and schedules (a lazy loader in each registry).
`DIFFUSEKIT_PLUGINS=a,b` loads only the entry points named a and b; `DIFFUSEKIT_PLUGINS=` loads
none; a listed name that is not installed is named in one `warning:` line on stderr. A plugin
that fails to import, whose hook raises, or that registers a name another plugin owns is
reported by `plugin_report()` (and `toolkit plugins`) with its error, and in one `warning:` line
on stderr; the others load regardless. The built-ins (the entry points of the diffusekit
distribution itself) load before every third-party plugin, so their domains, samplers,
schedules and commands cannot be taken over, whatever a plugin's entry-point name.

Adding a built-in domain works exactly like a third-party one, and is the only way:

1. write the package `domains/<name>/` in the domain skeleton (documented in
   `diffusekit.domains` and docs/architecture.md): `__init__.py` with the hookimpls only,
   `domain.py` with the `Domain` subclass only, `config.yaml`, `data.py`, `network.py`,
   `process.py`, `metrics.py`, `benchmark.py`, and `commands.py` when it adds commands;
2. add `"diffusekit.domains.<name>"` to `[tool.setuptools].packages` in the main pyproject.toml;
3. declare it under `[project.entry-points.diffusekit]` there: `<name> = "diffusekit.domains.<name>"`;
4. reinstall the distribution (`make venv` does, as pyproject.toml changed) so the entry point is
   written into its metadata.

Nothing imports a domain by name: neither core nor this package. The engine's own samplers and
schedules are claimed by the `builtin` plugin (`diffusekit.plugins.builtin`) through the same hooks.
`plugins/example/` is a complete third-party plugin, with its own pyproject.toml and README.
"""

from __future__ import annotations

from diffusekit.plugins.domain import Damaged, Domain, Region
from diffusekit.plugins.hookspecs import hookimpl, hookspec
from diffusekit.plugins.manager import (
    ENTRY_POINT_GROUP,
    ENV_VAR,
    PluginRecord,
    domain_names,
    get_domain,
    get_plugin_manager,
    install_loaders,
    plugin_report,
    register_commands,
    reset,
)

install_loaders()

__all__ = [
    "Damaged",
    "Domain",
    "Region",
    "hookimpl",
    "hookspec",
    "ENTRY_POINT_GROUP",
    "ENV_VAR",
    "PluginRecord",
    "get_domain",
    "domain_names",
    "plugin_report",
    "get_plugin_manager",
    "register_commands",
    "reset",
]
