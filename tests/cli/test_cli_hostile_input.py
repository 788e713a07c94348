"""Hostile and broken input to the run commands (issue 14's probes): each case gets one `error:`
line, a non-zero exit and no traceback, and nothing the user had is lost or overwritten."""

import json
import os
import shutil

import pytest
import torch
import yaml

from diffusekit.core.errors import CheckpointError
from diffusekit.core.app.training.callbacks import AtomicCheckpointIO
from diffusekit.core.app.training.runs import RunDir, check_checkpoint, load_weights

from error_lines import one_error


class _Payload:
    """Unpickling this runs `open(marker, 'w')`: a stand-in for any code planted in a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _set_config(run, **values):
    """Rewrite keys of the run's config.yaml (dotted names, as a user with an editor would)."""
    path = run / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = value
    path.write_text(yaml.safe_dump(cfg))


# ------------------------------------------------------------------ 1. checkpoints run no code
def test_a_checkpoint_carrying_a_pickled_callable_is_refused(toolkit, trained_run, tmp_path):
    marker = tmp_path / "PWNED"
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    planted = torch.load(ckpt, weights_only=True)
    planted["callbacks"] = {"evil": _Payload(marker)}
    torch.save(planted, ckpt)
    code, _, err = toolkit("train", "--resume", str(trained_run), "trainer.max_steps=20")
    one_error(code, err, "refused", "last.ckpt")
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="could run code"):
        check_checkpoint(ckpt)
    assert not marker.exists()


# ------------------------------------------------------ 3. failed starts leave no run folder
@pytest.mark.parametrize("override, needle", [
    ("trainer.max_steps=abc", "'trainer.max_steps' must be a whole number, got 'abc'"),
    ("optim.lr=fast", "'optim.lr' must be a number"),
    ("checkpoint_every=[1, 2]", "'checkpoint_every' must be a whole number"),
])
def test_a_config_error_names_the_key_and_leaves_no_run_folder(toolkit, tmp_path, override,
                                                               needle):
    code, _, err = toolkit("train", "--domain", "toy", override)
    one_error(code, err, needle)
    assert not (tmp_path / "runs" / "toy").exists() or not any((tmp_path / "runs" / "toy").iterdir())


def test_a_data_error_leaves_no_run_folder_for_a_bare_resume_to_pick(toolkit, tmp_path):
    empty = tmp_path / "points.csv"
    empty.write_text("1.0,oops\n")
    code, _, err = toolkit("train", "--domain", "toy", f"data.file={empty}")
    one_error(code, err, "points.csv")
    assert not any((tmp_path / "runs" / "toy").iterdir())
    code, _, err = toolkit("train", "--domain", "toy", "--resume")
    one_error(code, err, "no run of domain 'toy'")


def test_a_failure_after_the_first_checkpoint_keeps_the_run(toolkit, trained_run):
    """What can be resumed is never removed: a resumed run that fails keeps its folder."""
    code, _, err = toolkit("train", "--resume", str(trained_run), "trainer.max_steps=20",
                           "model.nan=true")
    one_error(code, err, "nan")
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()


# --------------------------------------------------------------- 5. resuming a finished run
def test_resuming_a_finished_run_keeps_its_losses_and_mends_its_weights(toolkit, trained_run):
    before = json.loads((trained_run / "metrics.json").read_text())
    assert isinstance(before["train_loss"], float) and isinstance(before["val_loss"], float)
    weights = trained_run / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])  # a corrupt export
    code, out, err = toolkit("train", "--resume", str(trained_run))
    assert code == 0, err
    assert "already at step 10" in out
    after = json.loads((trained_run / "metrics.json").read_text())
    assert after["train_loss"] == before["train_loss"]
    assert after["val_loss"] == before["val_loss"]
    assert after["step"] == 10 and after["resumed_at_steps"] == [10]
    # the weights are the checkpoint's EMA network again, byte for byte in value
    from toy_domain import ToyDomain

    run = RunDir.open(trained_run)
    net = ToyDomain().build_network(run.load_config())
    load_weights(net, weights)
    ema = {k.removeprefix("ema.network."): v
           for k, v in check_checkpoint(run.last_checkpoint)["state_dict"].items()
           if k.startswith("ema.network.")}
    for name, value in net.state_dict().items():
        assert torch.equal(value, ema[name]), name
    code, _, err = toolkit("sample", "--run", str(trained_run), "-n", "4")
    assert code == 0, err


# --------------------------------------------------- 6. names from a config never become paths
@pytest.mark.parametrize("name", ["../../ESCAPED", "/abs/ESCAPED", ".."])
def test_a_sampler_name_from_a_run_config_cannot_leave_the_run(toolkit, trained_run, tmp_path,
                                                                name):
    _set_config(trained_run, **{"sample.sampler": name})
    before = sorted(p for p in tmp_path.rglob("*"))
    for command in ("sample", "evaluate"):
        code, _, err = toolkit(command, "--run", str(trained_run))
        assert len(err) == 1, err
        one_error(code, err, "sample.sampler", "not a plain name")
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert not list(tmp_path.parent.rglob("ESCAPED"))


# ----------------------------------------------------------- 7. checkpoint writes are atomic
def test_checkpoints_are_written_inside_the_run_and_renamed_into_place(tmp_path, monkeypatch):
    elsewhere = tmp_path / "tmpdir"
    elsewhere.mkdir()
    monkeypatch.setenv("TMPDIR", str(elsewhere))
    target = tmp_path / "run" / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, target)
    assert torch.equal(io.load_checkpoint(target)["state_dict"]["w"], torch.ones(3))

    def killed(*args, **kwargs):  # the write dies half-way (disk full, a signal)
        args[1].write(b"half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(OSError):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "global_step": 2}, target)
    assert io.load_checkpoint(target)["global_step"] == 1  # the old checkpoint is intact
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]
    assert not any(elsewhere.iterdir())


def test_resume_removes_the_temporaries_a_killed_write_left(toolkit, trained_run):
    stale = [trained_run / "checkpoints" / ".last.ckpt.4242.tmp",
             trained_run / "model.safetensors.tmp", trained_run / "metrics.json.tmp"]
    for path in stale:
        path.write_bytes(os.urandom(64))
    code, _, err = toolkit("train", "--resume", str(trained_run), "trainer.max_steps=20")
    assert code == 0, err
    assert not any(p.exists() for p in stale)
    assert check_checkpoint(trained_run / "checkpoints" / "last.ckpt")["global_step"] == 20


# ------------------------------------------------- 8. a config that does not fit its domain
def test_a_run_config_of_another_domain_is_one_line(toolkit, trained_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(trained_run, other)
    _set_config(other, domain="image")
    for args in (("sample", "--run", str(other)), ("evaluate", "--run", str(other)),
                 ("train", "--resume", str(other))):
        code, _, err = toolkit(*args)
        one_error(code, err, "does not fit domain 'image'")


# -------------------------------------- 3 (real domains). data errors leave no run folder either
def test_an_empty_text_file_leaves_no_text_run(toolkit, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    code, _, err = toolkit("train", "--domain", "text", "data.source=empty.txt",
                           "trainer.max_steps=2")
    one_error(code, err, "empty.txt is empty")
    assert not list((tmp_path / "runs").rglob("config.yaml"))


def test_a_folder_of_unreadable_molecules_leaves_no_molecule_run(toolkit, tmp_path):
    folder = tmp_path / "mols"
    folder.mkdir()
    (folder / "a.sdf").write_text("garbage\n")
    (folder / "b.xyz").write_text("3\nnot a molecule\nXx 0 0\n")
    code, _, err = toolkit("train", "--domain", "molecules", f"data.source={folder}",
                           "trainer.max_steps=2")
    one_error(code, err, "no readable", "2 skipped")
    assert not list((tmp_path / "runs").rglob("config.yaml"))
