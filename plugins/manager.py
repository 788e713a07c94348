"""Plugin discovery: entry points of the group "diffusekit", loaded lazily, once, and in isolation.

Nothing is discovered when `diffusekit.plugins` is imported. The first look-up (`get_domain`,
`domain_names`, `plugin_report`, `get_plugin_manager`, `register_commands`, or a look-up in the
engine's sampler / schedule registries, where `install_loaders` puts a lazy loader) runs
`discover()` once per process:

1. list the entry points of group "diffusekit" (`importlib.metadata`); the built-ins (declared by
   the diffusekit distribution itself, see `is_builtin`) load first, then the others in name
   order, so no third-party plugin can take a built-in domain, sampler, schedule or command
   whatever its entry-point name;
2. honour the allow-list `DIFFUSEKIT_PLUGINS=a,b` (names of entry points; unset = all, set but
   empty = none); the others are recorded as "skipped"; an allowed name that no entry point has
   is recorded as "failed" and named in one warning line;
3. for each plugin: import it, register it with pluggy (a hook name that no specification knows
   fails the plugin: it is almost always a typo), then call *its own* implementations of the
   registration hooks with `register` callbacks that validate and stage what it registers;
4. commit the staged registrations only when the whole plugin succeeded and none of its names is
   owned by another plugin. Otherwise the plugin is recorded as "failed" with a one-line error
   (also printed on stderr as one `warning: plugin ...` line), unregistered, and nothing of it
   takes effect. The other plugins always still load.

Each plugin's hooks are called one implementation at a time (not through one pluggy hook call)
precisely so that one plugin's exception cannot stop the others' registrations.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from importlib import metadata
from typing import Any

import pluggy

from diffusekit.core import samplers, schedules
from diffusekit.core.registry import Registry, UnknownNameError
from diffusekit.plugins import hookspecs
from diffusekit.plugins.domain import Domain

ENTRY_POINT_GROUP = "diffusekit"
ENV_VAR = "DIFFUSEKIT_PLUGINS"
DISTRIBUTION = "diffusekit"  # the distribution whose entry points are the built-ins
REGISTRATION_HOOKS = {  # hook name -> what its `register` callback registers
    "register_domains": "domains",
    "register_samplers": "samplers",
    "register_schedules": "schedules",
}


@dataclass(frozen=True)
class PluginRecord:
    """What happened to one entry point of group "diffusekit".

    name:          the entry-point name (what `DIFFUSEKIT_PLUGINS` lists).
    value:         the entry point's target, e.g. "diffusekit_example" or "pkg.mod:obj".
    distribution, version: the installed distribution that declares it (None if unknown).
    status:        "loaded", "failed" or "skipped" (not in the `DIFFUSEKIT_PLUGINS` allow-list).
    error:         one line, "ExceptionType: message", for a failed plugin; None otherwise.
    provides:      {"domains" | "samplers" | "schedules" | "commands": [names]} it registered.
    """

    name: str
    value: str
    distribution: str | None
    version: str | None
    status: str
    error: str | None = None
    provides: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the record."""
        return {"name": self.name, "value": self.value, "distribution": self.distribution,
                "version": self.version, "status": self.status, "error": self.error,
                "provides": {k: list(v) for k, v in self.provides.items()}}


def one_line(exc: BaseException, context: str = "") -> str:
    """`exc` as one line, "Type: first line of message", prefixed with `context` if given."""
    message = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__
    text = f"{context}: {text}" if context else text
    return text if len(text) <= 300 else text[:297] + "..."


def allow_list(environ: Mapping[str, str] | None = None) -> frozenset[str] | None:
    """The entry-point names `DIFFUSEKIT_PLUGINS` allows: None when unset (all plugins load),
    an empty set when set to "" (none load). Names are comma separated; blanks are ignored."""
    raw = (os.environ if environ is None else environ).get(ENV_VAR)
    if raw is None:
        return None
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def find_entry_points() -> list[metadata.EntryPoint]:
    """The installed entry points of group "diffusekit", sorted by name (tests may replace this)."""
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def is_builtin(ep: metadata.EntryPoint) -> bool:
    """Whether `ep` is one of diffusekit's own plugins: declared by the diffusekit distribution.
    Only an entry point whose distribution is unknown is judged by its target module
    ("diffusekit.…"): a third-party distribution stays third party even if it points into the
    diffusekit package, so it cannot jump the queue by naming a module there."""
    dist = getattr(ep, "dist", None)
    if dist is not None and dist.name:
        return re.sub(r"[-_.]+", "-", dist.name).lower() == DISTRIBUTION
    return ep.value.startswith(DISTRIBUTION + ".")


def load_order(eps: list[metadata.EntryPoint]) -> list[metadata.EntryPoint]:
    """The order plugins load in: built-ins first, then third parties, each by name. The first
    to register a name keeps it, so this order is what makes built-in names win."""
    return sorted(eps, key=lambda ep: (not is_builtin(ep), ep.name))


def warn(message: str) -> None:
    """One `warning: ...` line on the current stderr. Not `logging`: with no logging configured
    that prints only by accident (the last-resort handler), and a user must see why a plugin or
    an allow-listed name did nothing."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


class _Staging:
    """The `register` callbacks handed to one plugin's hooks; they validate and collect."""

    def __init__(self) -> None:
        self.domains: dict[str, Domain] = {}
        self.samplers: dict[str, Callable[..., Any]] = {}
        self.schedules: dict[str, Callable[..., Any]] = {}

    def register_domain(self, domain: Any) -> None:
        if isinstance(domain, type):
            raise TypeError(f"register() needs a Domain instance, got the class "
                            f"{domain.__name__} (call it: register({domain.__name__}()))")
        if not isinstance(domain, Domain):
            raise TypeError(f"register() needs a diffusekit.plugins.Domain instance, "
                            f"got {type(domain).__name__}")
        self._add(self.domains, "domain", domain.name, domain)

    def register_sampler(self, name: str, fn: Callable[..., Any]) -> None:
        if not callable(fn):
            raise TypeError(f"sampler {name!r} must be a function, got {type(fn).__name__}")
        self._add(self.samplers, "sampler", name, fn)

    def register_schedule(self, name: str, factory: Callable[..., Any]) -> None:
        if not callable(factory):
            raise TypeError(f"schedule {name!r} must be a factory, got {type(factory).__name__}")
        self._add(self.schedules, "schedule", name, factory)

    @staticmethod
    def _add(table: dict[str, Any], kind: str, name: Any, entry: Any) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {kind} needs a non-empty string name, got {name!r}")
        if name in table and table[name] is not entry:
            raise ValueError(f"{kind} {name!r} is registered twice by this plugin")
        table[name] = entry

    def callback(self, kind: str) -> Callable[..., None]:
        return {"domains": self.register_domain, "samplers": self.register_sampler,
                "schedules": self.register_schedule}[kind]


class _Plugins:
    """The process-wide plugin state: one pluggy manager, the domains, the records."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.loaded = False
        self.loading = False
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.domains: Registry[Domain] = Registry("domain")
        self.owners: dict[tuple[str, str], str] = {}  # (kind, name) -> plugin that registered it
        self.records: list[PluginRecord] = []
        self.builtins: set[str] = set()  # names of the built-in plugins that loaded
        self.order: dict[str, int] = {}  # plugin name -> its place in the load order

    def ensure_loaded(self) -> None:
        with self.lock:
            if self.loaded or self.loading:  # `loading`: a registry look-up made during discovery
                return
            self.loading = True
            try:
                self.discover()
            finally:
                self.loading = False
                self.loaded = True

    def discover(self) -> None:
        allowed = allow_list()
        found = load_order(find_entry_points())
        for ep in found:
            dist = getattr(ep, "dist", None)
            record = PluginRecord(ep.name, ep.value, dist.name if dist else None,
                                  dist.version if dist else None, "skipped")
            if allowed is None or ep.name in allowed:
                self.order.setdefault(ep.name, len(self.order))
                record = self.load(ep, record)
                if record.status == "loaded" and is_builtin(ep):
                    self.builtins.add(ep.name)
            self.records.append(record)
        unknown = sorted((allowed or set()) - {ep.name for ep in found})
        for name in unknown:
            self.records.append(PluginRecord(name, "", None, None, "failed",
                                             f"not installed: no entry point {name!r} in group "
                                             f"{ENTRY_POINT_GROUP!r} (from {ENV_VAR})"))
        self.records.sort(key=lambda r: r.name)  # the report is in name order, not load order
        if unknown:  # one line for all of them, not one per name
            names = ", ".join(repr(name) for name in unknown)
            verb = "is" if len(unknown) == 1 else "are"
            known = ", ".join(sorted({ep.name for ep in found})) or "none"
            warn(f"{ENV_VAR} names {names}, which {verb} not installed "
                 f"(installed plugins: {known})")

    def load(self, ep: metadata.EntryPoint, record: PluginRecord) -> PluginRecord:
        """Import one plugin, run its registration hooks and commit; never raises."""
        if self.pm.has_plugin(ep.name):
            return self.fail(record, f"the entry-point name {ep.name!r} is already taken by "
                                     f"another distribution")
        try:
            plugin = ep.load()
        except (Exception, SystemExit) as exc:  # a plugin must not take the toolkit down
            return self.fail(record, one_line(exc))
        try:
            self.pm.register(plugin, name=ep.name)
        except Exception as exc:  # pluggy: wrong hook arguments, object already registered
            return self.fail(record, one_line(exc))
        unknown = [c.name for c in self.pm.get_hookcallers(plugin) or [] if not c.has_spec()]
        if unknown:
            known = ", ".join(sorted(REGISTRATION_HOOKS) + ["register_commands"])
            return self.fail(record, f"unknown hook {unknown[0]!r} (known: {known})", plugin)
        staging = _Staging()
        for hook_name, kind in REGISTRATION_HOOKS.items():
            try:
                self.call_own(plugin, hook_name, {"register": staging.callback(kind)})
            except (Exception, SystemExit) as exc:
                return self.fail(record, one_line(exc, hook_name), plugin)
        conflict = self.conflict(staging)
        if conflict:
            return self.fail(record, conflict, plugin)
        return replace(record, status="loaded", provides=self.commit(ep.name, staging))

    def call_own(self, plugin: object, hook_name: str, kwargs: dict[str, Any]) -> None:
        """Call `plugin`'s implementations of `hook_name` (not the other plugins')."""
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            if impl.plugin is not plugin:
                continue
            if impl.hookwrapper or impl.wrapper:
                raise TypeError(f"{hook_name} cannot be a hook wrapper")
            impl.function(**{arg: kwargs[arg] for arg in impl.argnames})

    def conflict(self, staging: _Staging) -> str | None:
        """Why `staging` cannot be committed (a name owned by someone else), or None."""
        for name in staging.domains:
            if name in self.domains:
                return self.taken("domain", name, self.owner("domains", name), "plugin ")
        for kind, table, registry in (("samplers", staging.samplers, samplers.REGISTRY),
                                      ("schedules", staging.schedules, schedules.REGISTRY)):
            for name, entry in table.items():
                if name in registry and registry.get(name) is not entry:
                    return self.taken(registry.kind, name, self.owner(kind, name))
        return None

    def taken(self, kind: str, name: str, owner: str, prefix: str = "") -> str:
        """The one-line reason a `kind` called `name`, owned by `owner`, cannot be registered."""
        if owner in self.builtins:
            return (f"{kind} {name!r} is built in (registered by diffusekit's plugin {owner!r}) "
                    f"and cannot be replaced")
        return f"{kind} {name!r} is already registered by {prefix}{owner!r}"

    def owner(self, kind: str, name: str) -> str:
        return self.owners.get((kind, name), "diffusekit.core")

    def commit(self, plugin_name: str, staging: _Staging) -> dict[str, tuple[str, ...]]:
        for name, domain in staging.domains.items():
            self.domains.register(name, domain)
        for name, fn in staging.samplers.items():
            samplers.REGISTRY.register(name, fn)
        for name, factory in staging.schedules.items():
            schedules.REGISTRY.register(name, factory)
        provides = {"domains": tuple(staging.domains), "samplers": tuple(staging.samplers),
                    "schedules": tuple(staging.schedules)}
        for kind, names in provides.items():
            for name in names:
                self.owners.setdefault((kind, name), plugin_name)
        return {kind: names for kind, names in provides.items() if names}

    def fail(self, record: PluginRecord, error: str, plugin: object | None = None) -> PluginRecord:
        if plugin is not None and self.pm.is_registered(plugin):
            self.pm.unregister(plugin)
        warn(f"plugin {record.name!r} failed: {error}")
        return replace(record, status="failed", error=error, provides={})

    def add_commands(self, cli: Any) -> None:
        """Run every loaded plugin's `register_commands(cli)`, each on its own, in the load
        order (built-ins first, whatever pluggy's tryfirst/trylast say): a plugin that raises or
        replaces an existing command is undone and marked failed."""
        impls = sorted(self.pm.hook.register_commands.get_hookimpls(),
                       key=lambda impl: self.order.get(impl.plugin_name, len(self.order)))
        for impl in impls:
            before = dict(cli.commands)
            error = None
            try:
                if impl.hookwrapper or impl.wrapper:
                    raise TypeError("register_commands cannot be a hook wrapper")
                impl.function(**{arg: cli for arg in impl.argnames})
                taken = [n for n, cmd in before.items() if cli.commands.get(n) is not cmd
                         and not self.added_by(cmd, impl.plugin_name)]  # a re-run may replace its own
                if taken:
                    owner = self.command_owner(before[taken[0]])
                    reason = (self.taken("command", taken[0], owner) if owner in self.builtins
                              else f"command {taken[0]!r} already exists")
                    error = f"register_commands: {reason}"
            except (Exception, SystemExit) as exc:
                error = one_line(exc, "register_commands")
            added = tuple(sorted(n for n in cli.commands if before.get(n) is not cli.commands[n]))
            if error:
                cli.commands.clear()
                cli.commands.update(before)
                self.pm.unregister(impl.plugin)
            else:
                _COMMAND_OWNERS.extend((cli.commands[n], impl.plugin_name) for n in added)
            self.update_record(impl.plugin_name, error, added)

    @staticmethod
    def added_by(command: Any, plugin_name: str) -> bool:
        """Whether `plugin_name` added this very command object in an earlier call (also
        before a `reset()`: the commands stay in the click group, like samplers in theirs)."""
        return any(cmd is command and owner == plugin_name for cmd, owner in _COMMAND_OWNERS)

    @staticmethod
    def command_owner(command: Any) -> str | None:
        """The plugin that added this command object, or None (the toolkit's own commands)."""
        return next((owner for cmd, owner in _COMMAND_OWNERS if cmd is command), None)

    def update_record(self, name: str, error: str | None, commands: tuple[str, ...]) -> None:
        for i, record in enumerate(self.records):
            if record.name != name:
                continue
            if error:
                warn(f"plugin {name!r} failed: {error}")
                self.records[i] = replace(record, status="failed", error=error)
            elif commands:
                self.records[i] = replace(record, provides={**record.provides, "commands": commands})


_COMMAND_OWNERS: list[tuple[Any, str]] = []  # (click command, plugin that added it), all states
_plugins = _Plugins()


def _ensure_loaded() -> _Plugins:
    """The current plugin state, discovered (once) if it was not yet. Also the registry loader:
    it always acts on the current state, so a loader installed before a `reset()` stays valid."""
    state = _plugins
    state.ensure_loaded()
    return state


def install_loaders() -> None:
    """Make the engine's sampler and schedule registries discover plugins on their first
    look-up (`Registry.add_loader`: runs once, lazily). Done when `diffusekit.plugins` is
    imported; core itself never imports plugins."""
    samplers.REGISTRY.add_loader(_ensure_loaded)
    schedules.REGISTRY.add_loader(_ensure_loaded)


def get_domain(name: str) -> Domain:
    """The domain registered as `name`; `UnknownNameError` listing the known domains (with the
    closest match) and any plugin that failed to load otherwise."""
    state = _ensure_loaded()
    try:
        return state.domains.get(name)
    except UnknownNameError as exc:
        message = str(exc) if state.domains.names() else f"unknown domain {name!r}; no domains are installed"
        failed = [f"{r.name} ({r.error})" for r in state.records if r.status == "failed"]
        if failed:
            message += "; plugins that failed to load: " + ", ".join(failed)
        raise UnknownNameError(message) from None


def domain_names() -> list[str]:
    """Names of all registered domains, sorted."""
    return _ensure_loaded().domains.names()


def plugin_report() -> list[PluginRecord]:
    """One `PluginRecord` per entry point of group "diffusekit" (and per allow-listed name
    that is not installed), in name order: loaded, failed (with its error) or skipped."""
    return list(_ensure_loaded().records)


def get_plugin_manager() -> pluggy.PluginManager:
    """The pluggy manager with every successfully loaded plugin registered."""
    return _ensure_loaded().pm


def register_commands(cli: Any) -> None:
    """Let every loaded plugin add sub-commands to the click group `cli` (the command line
    calls this once while building `toolkit`)."""
    _ensure_loaded().add_commands(cli)


def reset() -> None:
    """Forget everything discovered, so the next look-up discovers again (for tests; the
    environment, e.g. `DIFFUSEKIT_PLUGINS`, is read again then). Samplers and schedules that
    plugins added to the engine's registries stay there (a `Registry` has no removal); a new
    discovery re-registers the same objects, which is a no-op."""
    global _plugins
    with _plugins.lock:
        _plugins = _Plugins()
        install_loaders()


__all__ = ["ENTRY_POINT_GROUP", "ENV_VAR", "PluginRecord", "allow_list", "find_entry_points",
           "is_builtin", "load_order", "warn",
           "get_domain", "domain_names", "plugin_report", "get_plugin_manager",
           "register_commands", "install_loaders", "reset", "one_line"]
