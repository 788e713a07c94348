"""The installed `toolkit` / `diffusekit` scripts with the example plugin: list, configure, then
train, sample and evaluate end to end on the CPU, each command a fresh process."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def toolkit(example_site):
    """toolkit(*args, script="toolkit", cwd=...) -> CompletedProcess of the installed script,
    with the example plugin importable."""
    paths = [str(example_site), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    env.pop("DIFFUSEKIT_PLUGINS", None)

    def run(*args: str, script: str = "toolkit", cwd: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / script), *args], capture_output=True, text=True,
                              timeout=timeout, cwd=cwd, env=env)

    return run


def test_scripts_list_domains_plugins_and_plugin_commands(toolkit, tmp_path):
    out = toolkit("domains", cwd=tmp_path)
    assert out.returncode == 0 and "example" in [x.split()[0] for x in out.stdout.splitlines()]
    out = toolkit("plugins", script="diffusekit", cwd=tmp_path)
    assert out.returncode == 0
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("example")]
    assert "loaded" in line and "midpoint" in line
    out = toolkit("--help", cwd=tmp_path)
    assert out.returncode == 0 and "example-shapes" in out.stdout and "train" in out.stdout


def test_scripts_config_and_bad_input(toolkit, tmp_path):
    out = toolkit("config", "--domain", "example", "trainer.max_steps=7", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "max_steps: 7" in out.stdout and "domain: example" in out.stdout
    out = toolkit("train", "--domain", "exampel", cwd=tmp_path)  # the rest: test_cli_bad_input
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: "), out.stderr
    assert "did you mean 'example'" in out.stderr and "known: " in out.stderr


def test_train_sample_evaluate_example_end_to_end(toolkit, tmp_path):
    started = time.time()
    out = toolkit("train", "--domain", "example", f"run_dir={tmp_path / 'runs'}",
                  "trainer.max_steps=40", "checkpoint_every=20", "val_every=20",
                  "sample.val_n=200", "trainer.progress_bar=false", cwd=tmp_path)
    trained = time.time() - started
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = (tmp_path / "runs" / "example").iterdir()
    assert out.stdout.strip().endswith(str(run)) and "to step 40" in out.stdout
    for name in ["config.yaml", "model.safetensors", "metrics.json", "loss.png",
                 "checkpoints/last.ckpt", "checkpoints/best.ckpt", "logs/version_0/metrics.csv"]:
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step-000020", "step-000040"]
    assert any((run / "samples" / "step-000040").iterdir())

    out = toolkit("sample", "--run", str(run), "--sampler", "midpoint", "--steps", "5",
                  "-n", "300", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "samples:" in out.stdout and any((run / "samples" / "midpoint-5").iterdir())

    out = toolkit("evaluate", "--run", str(run), "--steps", "5", "-n", "400", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    evaluation = json.loads((run / "metrics.json").read_text())["evaluation"]
    assert evaluation["n"] == 400 and evaluation["steps"] == 5 and evaluation["metrics"]
    assert all(isinstance(v, float) for v in evaluation["metrics"].values())
    print(f"toolkit train --domain example (40 steps): {trained:.1f} s; "
          f"all three commands: {time.time() - started:.1f} s")
