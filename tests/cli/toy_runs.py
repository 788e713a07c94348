"""Helpers the model, adapter and control CLI tests share (toy domain, 10-step runs)."""

import torch

STEPS = ["trainer.max_steps=10", "checkpoint_every=5", "val_every=5", "sample.val_n=2"]


def new_run(tmp_path, before):
    """The one toy run folder under tmp_path/runs that is not in `before`."""
    (run,) = set((tmp_path / "runs" / "toy").iterdir()) - set(before)
    return run


def points(folder):
    """[N, 2] points of every points.csv under `folder`, in path order."""
    rows = [r for f in sorted(folder.rglob("points.csv")) for r in f.read_text().split()]
    return torch.tensor([[float(v) for v in r.split(",")] for r in rows])


def sampler(toolkit, tmp_path):
    """sample(*args) -> the points of 8 samples (seed 5) of `toolkit sample *args`, each call
    into a new folder of tmp_path."""
    def sample(*args):
        out = tmp_path / f"s{len(list(tmp_path.glob('s*')))}"
        code, _, err = toolkit("sample", *args, "-n", "8", "--seed", "5", "--out", str(out))
        assert code == 0, err
        return points(out)

    return sample
