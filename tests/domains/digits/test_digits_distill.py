"""Distilling the digits generator (fake MNIST, tiny UNet, CPU): a student of the guided teacher
that takes w as an input (LCM), full and LoRA, and one with w baked in; `toolkit sample` /
`evaluate` use the student at any w."""

from __future__ import annotations

import pytest
import torch

from diffusekit.core.app import cli
from diffusekit.core.app.distill import StudentProcess
from diffusekit.core.app.training.models import load_model
from diffusekit.core.distillation import GuidanceInput

TINY = ["network.channels=8", "network.mults=[1,2]", "data.batch_size=8", "trainer.limit_val_batches=1",
        "sample.val_n=0", "sample.batch_size=10", "evaluate.classifier.epochs=1", "trainer.progress_bar=false"]
STUDENT = ["distill.max_steps=2", "checkpoint_every=2", "val_every=2", "distill.grid_steps=4"]


@pytest.fixture(scope="module")
def teacher(fake_cache, tmp_path_factory):
    """A 2-step conditional digits run on the fake digits (its sample.guidance: 2)."""
    root = tmp_path_factory.mktemp("runs")
    assert cli.main(["train", "--domain", "digits", f"data.cache_file={fake_cache}", f"run_dir={root}", *TINY,
                     "trainer.max_steps=2", "checkpoint_every=2", "val_every=2"]) == 0
    (run,) = (root / "digits").iterdir()
    return run


def distil(teacher, *args):
    before = set(teacher.parent.iterdir())
    assert cli.main(["distill", "--run", str(teacher), *STUDENT, *args]) == 0
    (run,) = set(teacher.parent.iterdir()) - before
    return run


def samples(model, w):
    batch = {"x0": torch.zeros(4, 1, 28, 28), "cond": {"label": torch.arange(4)}}
    from diffusekit.core.app.training.inference import with_overrides

    guided = with_overrides(model, [f"sample.guidance={w}"])
    return guided.process.generate(guided.network, batch, generator=torch.Generator().manual_seed(0))


def test_a_full_student_takes_w_as_an_input(teacher, capsys):
    run = distil(teacher, "distill.guidance=[0,4]", "distill.steps=2")
    model = load_model(run)
    assert isinstance(model.network, GuidanceInput) and isinstance(model.process, StudentProcess)
    assert model.process.settings.guidance == (0.0, 4.0) and model.process.settings.conditioned
    assert float(model.network.guidance[-1].weight.abs().sum()) > 0  # the w embedding trained
    assert not torch.equal(samples(model, 0), samples(model, 4))  # w changes the samples
    capsys.readouterr()
    assert cli.main(["evaluate", "--run", str(run), "-n", "10", "sample.guidance=3"]) == 0
    out = capsys.readouterr().out
    assert "with consistency, 2 steps" in out and "label_accuracy" in out and "classifier_fd" in out


def test_a_lora_student_keeps_its_w_embedding_beside_its_adapter(teacher, tmp_path):
    run = distil(teacher, "distill.guidance=[1,3]", "distill.kind=lora")
    assert {p.name for p in (run / "adapter").iterdir()} >= {"adapter_model.safetensors", "guidance.safetensors",
                                                             "base.json"}
    model = load_model(run)
    assert isinstance(model.network, GuidanceInput)
    assert any("lora_" in n for n, _ in model.network.named_parameters())
    assert samples(model, 2).shape == (4, 1, 28, 28)
    assert cli.main(["export", "--run", str(run), "--to", str(tmp_path / "shared")]) == 0
    assert (tmp_path / "shared" / "adapter" / "guidance.safetensors").is_file()
    assert isinstance(load_model(tmp_path / "shared").network, GuidanceInput)


def test_a_student_with_w_baked_in_has_no_w_input(teacher):
    run = distil(teacher, "distill.steps=1", "distill.guidance=null")  # the teacher's sample.guidance, 2
    model = load_model(run)
    assert not isinstance(model.network, GuidanceInput)
    assert model.process.settings.guidance == (2.0, 2.0) and not model.process.settings.conditioned
    assert samples(model, 2).shape == (4, 1, 28, 28)
