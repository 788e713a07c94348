"""Real processes: a run killed with SIGKILL resumes to the same final step; DDP on CPU (gloo).

Both start `tests/training/toy_toolkit.py` (the `toolkit` command line plus the toy domain) as a
subprocess, exactly as a user's shell would.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from diffusekit.core.app.training.runs import check_checkpoint

TOOLKIT = [sys.executable, str(Path(__file__).resolve().parent / "toy_toolkit.py")]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _toolkit(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*TOOLKIT, *args], capture_output=True, text=True, timeout=timeout,
                          env=ENV)


def _only_run(root: Path) -> Path:
    (run,) = (root / "toy").iterdir()
    return run


def test_killed_run_resumes_to_the_same_final_step(tmp_path):
    root, every, max_steps = tmp_path / "runs", 10, 60
    args = ["train", "--domain", "toy", f"run_dir={root}", f"trainer.max_steps={max_steps}",
            f"checkpoint_every={every}", "val_every=20", "model.delay=0.03", "sample.val_n=2"]
    proc = subprocess.Popen([*TOOLKIT, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=ENV)
    try:
        deadline = time.time() + 180
        last = None
        while time.time() < deadline and proc.poll() is None:
            found = list(root.glob("toy/*/checkpoints/last.ckpt"))
            if found:
                last = found[0]
                break
            time.sleep(0.02)
        assert last is not None, f"no checkpoint appeared: {proc.stderr.read()[-2000:]}"
        proc.send_signal(signal.SIGKILL)  # no clean-up of any kind
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-3000:]
    run = _only_run(root)
    killed_at = check_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"]
    assert 0 < killed_at < max_steps and killed_at % every == 0, killed_at
    assert not (run / "metrics.json").exists()  # it really died mid-run

    done = _toolkit("train", "--resume", str(run))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"to step {max_steps}" in done.stdout and str(run) in done.stdout
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    assert ckpts == ["best.ckpt", "last.ckpt"], ckpts
    final = check_checkpoint(run / "checkpoints" / "last.ckpt")
    assert final["global_step"] == max_steps
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["step"] == max_steps and metrics["resumed_at_steps"] == [killed_at]
    assert (run / "model.safetensors").is_file() and (run / "loss.png").is_file()
    assert (run / "logs" / "version_1" / "metrics.csv").is_file()  # the second start's log
    assert list((tmp_path / "runs" / "toy").iterdir()) == [run]  # no second run folder


def test_ddp_two_cpu_processes_with_gloo(tmp_path):
    root = tmp_path / "runs"
    started = time.time()
    done = _toolkit("train", "--domain", "toy", f"run_dir={root}", "trainer.max_steps=8",
                    "trainer.strategy=ddp", "trainer.devices=2", "checkpoint_every=4",
                    "val_every=4", "sample.val_n=2")
    seconds = time.time() - started
    assert done.returncode == 0, done.stderr[-3000:]
    assert "distributed_backend=gloo" in done.stderr
    run = _only_run(root)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["step"] == 8
    assert check_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 8
    assert (run / "model.safetensors").is_file()
    assert done.stdout.count("trained toy") == 1  # rank 1 prints nothing of its own
    print(f"DDP run: {seconds:.1f} s")
