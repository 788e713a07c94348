"""Benchmark records name the checkout's results folder and a command without machine paths."""

from __future__ import annotations

import os
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


def test_a_record_is_dirty_for_changed_code_not_for_other_records(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                       check=True, capture_output=True)

    for path in ("domains/text/domain.py", "benchmarks/results/a.md", "docs/a.md"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("one\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "first")
    clean = results.git_commit(tmp_path)
    assert len(clean) == 40 and not clean.endswith("-dirty")
    (tmp_path / "benchmarks/results/a.md").write_text("another run's record\n")
    (tmp_path / "docs/a.md").write_text("prose\n")
    assert results.git_commit(tmp_path) == clean
    (tmp_path / "domains/text/domain.py").write_text("changed code\n")
    assert results.git_commit(tmp_path) == clean + "-dirty"


def test_code_run_away_from_its_checkout_names_the_commit_it_was_built_from(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv(results.COMMIT_ENV, "0123456789abcdef0123456789abcdef01234567")
    assert results.git_commit(tmp_path) == "0123456789abcdef0123456789abcdef01234567"
    assert results.make_record("x", {}, {}, command="c")["commit"].startswith("0123456789")


def test_a_pinned_commit_outlives_commits_made_while_a_benchmark_runs(tmp_path, monkeypatch):
    """`commit_pinned` (what `toolkit benchmark` runs inside): a record made at the end names
    the commit the run started with; the environment is restored afterwards."""
    monkeypatch.delenv(results.COMMIT_ENV, raising=False)
    started = results.git_commit()
    with results.commit_pinned() as pinned:
        assert pinned == started
        def moved(*args, **kwargs):  # git would now answer something else
            raise OSError("HEAD moved")

        monkeypatch.setattr(results.subprocess, "run", moved)
        assert results.make_record("x", {}, {}, command="c")["commit"] == started
    assert results.git_commit() == "unknown"
    assert results.COMMIT_ENV not in os.environ
