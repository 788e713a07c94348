"""Hostile and mistaken plugin set-ups fed to the command line: third-party plugins whose names
sort before the built-ins try to take a built-in domain, sampler, schedule and command (the
built-ins win, each clash is one warning line naming the plugin), and `DIFFUSEKIT_PLUGINS`
naming a plugin that is not installed (one warning line naming it)."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import diffusekit.plugins as plugins
from diffusekit.plugins import manager

CLASHES = {  # entry-point name -> the built-in it tries to take ("a..." sorts before "audio")
    "aclash": "domain 'audio'",
    "asampler": "sampler 'ddim'",
    "aschedule": "schedule 'vp_cosine'",
    "acommand": "command 'audio-enhance'",
}


@pytest.fixture(scope="module")
def clash_site(request, tmp_path_factory) -> Path:
    """One third-party distribution whose plugins each try to take a built-in name, plus
    `aimposter`, a third-party entry point aimed at the built-in audio module itself."""
    # `write_fake_dist` of this folder's conftest, taken from pytest's registered plugins:
    # `import conftest` would find whichever conftest.py pytest imported last
    here = str(Path(__file__).with_name("conftest.py"))
    (conftest,) = [p for p in request.config.pluginmanager.get_plugins()
                   if getattr(p, "__file__", None) == here]
    write_fake_dist = conftest.write_fake_dist
    site = tmp_path_factory.mktemp("clash-site")
    write_fake_dist(site, "aclash-plugin", {
        "aclash": "aclash_domain", "asampler": "aclash_sampler", "aschedule": "aclash_schedule",
        "acommand": "aclash_command", "aimposter": "diffusekit.domains.audio"}, {
        "aclash_domain": """
            from diffusekit.plugins import Domain, hookimpl

            class Hijack(Domain):
                name = "audio"
                description = "hijacked"

            @hookimpl
            def register_domains(register):
                register(Hijack())
        """,
        "aclash_sampler": """
            from diffusekit.plugins import hookimpl

            @hookimpl
            def register_samplers(register):
                register("ddim", lambda *args, **kwargs: None)
        """,
        "aclash_schedule": """
            from diffusekit.plugins import hookimpl

            @hookimpl
            def register_schedules(register):
                register("vp_cosine", lambda **params: None)
        """,
        "aclash_command": """
            import click
            from diffusekit.plugins import hookimpl

            @hookimpl(trylast=True)  # pluggy lists trylast first: the order must not matter
            def register_commands(cli):
                @cli.command("audio-enhance")
                def hijacked():
                    click.echo("hijacked")
        """})
    return site


def _toolkit(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The command line in a fresh interpreter (so the fake distribution's metadata is read)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DIFFUSEKIT_PLUGINS", "PYTHONPATH")}
    env.update(PYTHONPATH=str(site), DIFFUSEKIT_DATA=str(cwd / "cache"))
    return subprocess.run([sys.executable, "-m", "diffusekit.core.app.cli", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


def test_plugins_sorting_first_cannot_take_built_in_names(clash_site, tmp_path):
    out = _toolkit(clash_site, "plugins", cwd=tmp_path)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = {line.split()[0]: line for line in out.stdout.splitlines()}
    for name, what in CLASHES.items():
        assert lines[name].split()[1] == "failed", lines[name]
        hook = "register_commands: " if name == "acommand" else ""
        assert f"error: {hook}{what} is built in (registered by diffusekit's plugin " in lines[name]
    assert "plugin 'audio') and cannot be replaced" in lines["aclash"]
    assert "plugin 'builtin') and cannot be replaced" in lines["asampler"]
    assert "plugin 'audio') and cannot be replaced" in lines["acommand"]
    # third party, though it points into diffusekit: it loads after the real audio, and fails
    assert lines["aimposter"].split()[1] == "failed"
    assert lines["audio"].split()[1] == "loaded"
    assert "[domains: audio; commands: audio-enhance]" in lines["audio"]
    assert lines["builtin"].split()[1] == "loaded"
    # each rejected plugin: exactly one warning line on stderr, naming it
    warnings = out.stderr.splitlines()
    assert len(warnings) == len(CLASHES) + 1, out.stderr
    for name in [*CLASHES, "aimposter"]:
        (line,) = [w for w in warnings if f"plugin {name!r} failed: " in w]
        assert line.startswith("warning: ")


def test_built_in_domain_and_command_survive_a_clash(clash_site, tmp_path):
    out = _toolkit(clash_site, "domains", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (audio,) = [line for line in out.stdout.splitlines() if line.split()[0] == "audio"]
    assert "hijacked" not in audio and "speech" in audio
    out = _toolkit(clash_site, "audio-enhance", "--help", cwd=tmp_path)
    assert out.returncode == 0 and "Denoise speech recordings" in out.stdout, out.stderr[-3000:]


def test_built_ins_load_first_whatever_their_names():
    def ep(name: str, value: str) -> metadata.EntryPoint:
        return metadata.EntryPoint(name, value, manager.ENTRY_POINT_GROUP)

    found = [ep("aclash", "aclash_domain"), ep("audio", "diffusekit.domains.audio"),
             ep("0first", "first:plugin"), ep("builtin", "diffusekit.plugins.builtin"),
             ep("diffusekit_x", "diffusekit_x")]  # "diffusekit_x" is not in the package
    assert [e.name for e in manager.load_order(found)] == [
        "audio", "builtin", "0first", "aclash", "diffusekit_x"]
    installed = {e.name: e for e in metadata.entry_points(group=manager.ENTRY_POINT_GROUP)}
    assert manager.is_builtin(installed["audio"])  # judged by its distribution, "diffusekit"


@pytest.fixture
def rediscover():
    """Discovery starts afresh in the test (which sets DIFFUSEKIT_PLUGINS first) and again
    after it, so the next test sees the real plugins."""
    plugins.reset()
    yield
    plugins.reset()


def test_unknown_name_in_the_allow_list_is_one_warning_line(toolkit, monkeypatch, rediscover):
    monkeypatch.setenv("DIFFUSEKIT_PLUGINS", "nosuch")
    code, out, err = toolkit("domains")
    assert code == 0 and out.strip() == "no domains installed"
    (line,) = err
    assert line.startswith("warning: DIFFUSEKIT_PLUGINS names 'nosuch', which is not installed")
    assert "installed plugins: " in line and "audio" in line and "builtin" in line
    code, out, err = toolkit("plugins")  # the same process: said once, not on every look-up
    assert code == 0 and err == []
    (record,) = [line for line in out.splitlines() if line.startswith("nosuch")]
    assert "failed" in record and "not installed" in record
