"""The command line run in this process, as the tests call it (`from command_line import
run_toolkit`; tests/ is on sys.path through its conftest.py)."""

from __future__ import annotations


def run_toolkit(capsys, *args) -> tuple[int, str, list[str]]:
    """(exit status, stdout, the non-blank stderr lines) of `toolkit ARGS`: the command line's
    `main` in this process, its output taken from pytest's `capsys`."""
    from diffusekit.core.app import cli

    capsys.readouterr()
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]
