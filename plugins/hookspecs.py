"""Every hook of diffusekit, in one file. A plugin implements any subset of them.

A plugin is a module (or any object) with functions marked `@hookimpl` and named like the
specifications below; it is found through the entry-point group "diffusekit" (see
`diffusekit.plugins.manager`). Each registration hook receives a `register` callback instead of
returning values, so a hook can gain arguments later without breaking existing plugins (pluggy
passes only the arguments an implementation names).

    from diffusekit.plugins import hookimpl

    @hookimpl
    def register_domains(register):
        register(MyDomain())

What a registration hook registers is checked before it is committed: a plugin whose hook raises,
or which registers a bad value or a name another plugin owns, is reported as failed and none of
its registrations take effect; the other plugins still load.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "diffusekit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_domains(register: Callable[[Any], None]) -> None:
    """Register the domains this plugin provides.

    Called once per process, the first time anything asks for domains
    (`diffusekit.plugins.get_domain`, `domain_names`, `toolkit domains`, `toolkit train`, ...).

    `register(domain)` accepts one *instance* of a `diffusekit.plugins.Domain` subclass with a
    non-empty, unique `name`; call it once per domain. A name that another plugin already
    registered fails this plugin (domains never shadow each other silently).

    Example::

        @hookimpl
        def register_domains(register):
            from my_package.domain import WeatherDomain

            register(WeatherDomain())
    """


@hookspec
def register_samplers(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register extra samplers of continuous Gaussian diffusion.

    Called once per process, on the first look-up in `diffusekit.core.samplers` (`get`, `names`)
    after `diffusekit.plugins` has been imported, or on the first domain look-up.

    `register(name, fn)` accepts a sampler name (a non-empty string) and a function with the
    engine's one sampler signature (see `diffusekit.core.samplers`)::

        fn(denoiser, noise, ts, schedule, *, space=Euclidean(), generator=None,
           callback=None, cond=None, **its_own_options) -> x0

    The function then appears in `samplers.names()`, in `samplers.get(name)`, and in
    `toolkit sample --sampler NAME`. Registering a name that is taken by a different function
    fails this plugin; re-registering the very same function is a no-op.

    Example::

        @hookimpl
        def register_samplers(register):
            from my_package.sampler import sample_midpoint

            register("midpoint", sample_midpoint)
    """


@hookspec
def register_schedules(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register extra noise schedules.

    Called once per process, on the first look-up in `diffusekit.core.schedules` (`get`, `names`)
    after `diffusekit.plugins` has been imported, or on the first domain look-up.

    `register(name, factory)` accepts a schedule name and a factory (usually a frozen dataclass
    subclassing `diffusekit.core.schedules.Schedule`) that `schedules.get(name, **params)` calls
    with the user's parameters and that returns a `Schedule` (alpha(t), sigma(t), log_snr(t),
    t_of_log_snr). The same name rules as for samplers apply.

    Example::

        @hookimpl
        def register_schedules(register):
            from my_package.schedule import VPSigmoid  # @dataclass(frozen=True) Schedule

            register("vp_sigmoid", VPSigmoid)
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add sub-commands to the `toolkit` command line.

    Called by the command line (`diffusekit.plugins.register_commands(cli)`) once, while it
    builds its click group, before the arguments are parsed. `cli` is that `click.Group`; add
    commands with `@cli.command()` or `cli.add_command(...)`. A command whose name already exists
    is refused (the built-in one is kept) and the plugin is reported as failed.

    Example::

        @hookimpl
        def register_commands(cli):
            import click

            @cli.command("weather-stations")
            @click.option("--country", default="NO", help="ISO country code.")
            def weather_stations(country):
                \"\"\"List the weather stations of a country.\"\"\"
                click.echo(...)
    """


__all__ = ["PROJECT", "hookspec", "hookimpl", "register_domains", "register_samplers",
           "register_schedules", "register_commands"]
