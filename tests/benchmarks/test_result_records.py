"""Benchmark records name the checkout's results folder and a command without machine paths."""

from __future__ import annotations

import sys
from pathlib import Path

from diffusekit.core.app import results

CHECKOUT = Path(__file__).resolve().parents[2]


def test_records_go_to_the_checkout_wherever_the_command_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert results.REPO_ROOT == CHECKOUT == results._checkout_root()
    assert results.RESULTS_DIR == CHECKOUT / "benchmarks" / "results"


def test_the_command_names_no_folder_of_this_machine():
    script = str(Path(sys.prefix) / "bin" / "toolkit")
    assert results.command_line([script, "benchmark", "--domain", "audio", "--quick"]) == \
        "toolkit benchmark --domain audio --quick"
    inside = str(CHECKOUT / "benchmarks" / "samplers.py")
    assert results.command_line([inside, "--quick"]) == "python benchmarks/samplers.py --quick"
    assert results.command_line(["benchmarks/samplers.py"]) == "python benchmarks/samplers.py"
    assert results.command_line(["/somewhere/else/run.py", "a b"]) == "python run.py 'a b'"


def test_the_committed_records_name_no_machine_path():
    records = sorted((CHECKOUT / "benchmarks" / "results").glob("*.*[dn]"))  # .md, .json
    assert records
    for path in records:
        text = path.read_text()
        for marker in ("/tmp/", "/work/", "/home/", "/root/"):
            assert marker not in text, f"{path.name} names a machine path ({marker})"
