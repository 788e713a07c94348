"""benchmarks/gpu.py on a CPU with a small budget and tiny data: smoke runs of the domains, the
molecule domain at its gpu preset (shrunk by --set), its evaluation, and both records, written
into a temporary results folder (never the checkout's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: `benchmarks`

from benchmarks import gpu  # noqa: E402
from diffusekit.core.app import results as results_io  # noqa: E402
from tiny_domains import DOMAINS, tiny_domain  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def tiny_sets(domains, folder: Path) -> list[str]:
    """`--set DOMAIN:KEY=VALUE` arguments that put each domain on its tiny data and size."""
    args = []
    for name in domains:
        for override in tiny_domain(name, folder):
            args += ["--set", f"{name}:{override}"]
    return args


def check_records(results: Path, domains) -> tuple[dict, dict]:
    smoke = json.loads((results / "smoke_cpu.json").read_text())
    main = json.loads((results / "molecules_edm_cpu.json").read_text())
    for record in (smoke, main):
        results_io.check_record(record)
        assert "python" in record["command"] and "gpu" in record["command"]
    assert list(smoke["metrics"]["domains"]) == list(domains)
    for name, result in smoke["metrics"]["domains"].items():
        assert result["status"] == "ok", (name, result)
        assert result["step"] > 0 and result["stopped_by"] == "max_time"
        assert result["precision"] == "bf16-mixed"  # the preset's, unchanged on a CPU
    train = main["metrics"]["train"]
    assert train["status"] == "ok" and train["step"] > 0 and train["stopped_by"] == "max_time"
    evaluation = main["metrics"]["evaluation"]["dpmpp_2m_100"]
    assert evaluation["n"] == 4 and 0 <= evaluation["atom_stability"] <= 100
    assert "ddpm_1000" in main["metrics"]["evaluation"]  # run, or skipped with its reason
    assert main["baselines"]["edm_1000"]["mol_stability"] == 82.0
    for name in ("smoke_cpu.md", "molecules_edm_cpu.md"):
        assert "| " in (results / name).read_text()
    return smoke, main


def test_a_small_budget_writes_both_records(tmp_path, capsys):
    before = sorted(results_io.RESULTS_DIR.iterdir())
    domains = ["molecules", "digits"]
    code = gpu.main(["20s", "--domains", ",".join(domains), "--results", str(tmp_path / "results"),
                     "--runs", str(tmp_path / "runs"), "--eval-n", "4",
                     *tiny_sets(domains, tmp_path / "data")])
    assert code == 0, capsys.readouterr().err[-2000:]
    check_records(tmp_path / "results", domains)
    assert sorted(results_io.RESULTS_DIR.iterdir()) == before  # nothing into the checkout


@pytest.mark.parametrize("args, needle", [
    (["abc"], "budget"), (["10x"], "budget"), (["0s"], "positive"),
    (["1m", "--set", "data.source=x"], "DOMAIN:KEY=VALUE"),
    (["1m", "--smoke-share", "2"], "--smoke-share"), ([], "budget")])
def test_bad_input_is_one_error_line(args, needle, capsys):
    assert gpu.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


@pytest.mark.slow
def test_every_domain_within_two_minutes_as_a_script(tmp_path):
    """The script as a user runs it: a subprocess, every domain, a 2-minute budget."""
    args = [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "2m", "--results",
            str(tmp_path / "results"), "--runs", str(tmp_path / "runs"), "--eval-n", "4",
            *tiny_sets(DOMAINS, tmp_path / "data")]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    check_records(tmp_path / "results", DOMAINS)
