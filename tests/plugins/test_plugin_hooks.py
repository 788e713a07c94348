"""The hook specifications and the manager's rules, in this process with fake entry points:
every hook documented, registrations validated and committed per plugin, commands isolated."""

from __future__ import annotations

import inspect
import sys
import types
from importlib import metadata

import click
from click.testing import CliRunner
import pytest

import diffusekit.plugins as plugins
from diffusekit.core.registry import UnknownNameError
from diffusekit.plugins import Domain, hookimpl, hookspecs, manager

HOOKS = {"register_domains", "register_samplers", "register_schedules", "register_commands"}


def _specs() -> dict[str, types.FunctionType]:
    marker = f"{hookspecs.PROJECT}_spec"
    return {name: fn for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
            if hasattr(fn, marker)}


def test_the_hooks_are_exactly_the_documented_four():
    assert set(_specs()) == HOOKS


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_every_hook_has_a_real_docstring(name):
    fn = _specs()[name]
    doc = inspect.getdoc(fn) or ""
    assert len(doc) > 200, f"hook {name} is undocumented"
    assert "Called" in doc, f"hook {name}: say when it is called"
    assert "Example::" in doc, f"hook {name}: give an example"
    (arg,) = inspect.signature(fn).parameters
    assert f"`{arg}" in doc, f"hook {name}: say what `{arg}` is / accepts"
    assert name in plugins.__doc__, f"hook {name} is missing from the diffusekit.plugins overview"


class Weather(Domain):
    name = "weather"
    description = "a test domain"


def _plugin_module(name: str, **hooks) -> str:
    """Install a module `name` with the given hook functions; return the entry-point value."""
    module = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(module, hook, hookimpl(fn))
    sys.modules[name] = module
    return name


@pytest.fixture
def fake_plugins(monkeypatch):
    """fake_plugins({"ep name": module_name, ...}): the entry points discovery will see."""
    monkeypatch.delenv("DIFFUSEKIT_PLUGINS", raising=False)
    added = []

    def install(entry_points: dict[str, str]) -> None:
        eps = [metadata.EntryPoint(name, value, "diffusekit") for name, value in entry_points.items()]
        added.extend(entry_points.values())
        monkeypatch.setattr(manager, "find_entry_points", lambda: sorted(eps, key=lambda e: e.name))
        plugins.reset()

    yield install
    for name in added:
        sys.modules.pop(name, None)
    monkeypatch.undo()
    plugins.reset()  # the next user discovers the real plugins


def test_discovery_is_lazy_and_happens_once(fake_plugins, monkeypatch):
    calls = []
    fake_plugins({"w": _plugin_module("dk_test_lazy", register_domains=lambda register: (
        calls.append(1), register(Weather())))})
    assert calls == []  # nothing until the first look-up
    assert plugins.domain_names() == ["weather"] and isinstance(plugins.get_domain("weather"), Weather)
    plugins.plugin_report()
    assert calls == [1]
    assert plugins.get_plugin_manager().has_plugin("w")


def test_a_plugin_with_a_bad_registration_fails_as_a_whole(fake_plugins):
    def half_then_bad(register):
        register(Weather())
        register(Weather)  # the class, not an instance

    fake_plugins({"a": _plugin_module("dk_test_bad", register_domains=half_then_bad)})
    (record,) = plugins.plugin_report()
    assert record.status == "failed" and "needs a Domain instance" in record.error
    assert record.error.startswith("register_domains: TypeError:")
    assert plugins.domain_names() == []  # nothing of a failed plugin takes effect
    assert not plugins.get_plugin_manager().has_plugin("a")


def test_a_domain_name_owned_by_another_plugin_fails_the_second(fake_plugins):
    fake_plugins({
        "first": _plugin_module("dk_test_first", register_domains=lambda register: register(Weather())),
        "second": _plugin_module("dk_test_second", register_domains=lambda register: register(Weather())),
    })
    first, second = plugins.plugin_report()
    assert first.status == "loaded" and first.provides == {"domains": ("weather",)}
    assert second.status == "failed"
    assert second.error == "domain 'weather' is already registered by plugin 'first'"


def test_a_sampler_name_owned_by_the_engine_cannot_be_taken(fake_plugins):
    fake_plugins({"thief": _plugin_module(
        "dk_test_thief", register_samplers=lambda register: register("ddim", lambda *a, **k: None))})
    (record,) = plugins.plugin_report()
    assert record.status == "failed"
    assert record.error == "sampler 'ddim' is already registered by 'diffusekit.core'"


def test_unknown_domain_error(fake_plugins):
    fake_plugins({"w": _plugin_module("dk_test_unknown",
                                      register_domains=lambda register: register(Weather()))})
    with pytest.raises(UnknownNameError, match=r"unknown domain 'wether' \(did you mean 'weather'\?\); known: weather"):
        plugins.get_domain("wether")


def test_plugin_commands_are_added_and_isolated(fake_plugins):
    def good(cli):
        @cli.command("hello")
        def hello():
            click.echo("hi")

    def hijack(cli):
        @cli.command("train")
        def train():
            click.echo("not the real train")

    def crash(cli):
        @cli.command("half")
        def half():
            pass

        raise ValueError("boom")

    fake_plugins({"good": _plugin_module("dk_test_good", register_commands=good),
                  "hijack": _plugin_module("dk_test_hijack", register_commands=hijack),
                  "crash": _plugin_module("dk_test_crash", register_commands=crash)})

    @click.group()
    def cli():
        pass

    @cli.command("train")
    def train():
        click.echo("the real train")

    plugins.register_commands(cli)
    plugins.register_commands(cli)  # building the command line twice in one process is fine
    assert sorted(cli.commands) == ["hello", "train"]
    assert cli.commands["train"] is train
    records = {r.name: r for r in plugins.plugin_report()}
    assert records["good"].status == "loaded" and records["good"].provides == {"commands": ("hello",)}
    assert records["hijack"].error == "register_commands: command 'train' already exists"
    assert records["crash"].error == "register_commands: ValueError: boom"
    result = CliRunner().invoke(cli, ["hello"])
    assert result.exit_code == 0 and result.output == "hi\n"


def test_allow_list_parsing():
    assert manager.allow_list({}) is None
    assert manager.allow_list({"DIFFUSEKIT_PLUGINS": ""}) == frozenset()
    assert manager.allow_list({"DIFFUSEKIT_PLUGINS": " a, b ,,"}) == {"a", "b"}


def test_one_line_errors():
    assert manager.one_line(ImportError("first\nsecond")) == "ImportError: first"
    assert manager.one_line(RuntimeError(), "register_domains") == "register_domains: RuntimeError"
    assert len(manager.one_line(ValueError("x" * 1000))) == 300
