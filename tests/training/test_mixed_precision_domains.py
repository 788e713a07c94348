"""Every built-in domain trains under bfloat16 mixed precision (`trainer.precision=bf16-mixed`,
which a CPU runs through autocast too): on its tiny config and data, the first training losses
stay close to float32's from the same seed, and the network really ran in bfloat16."""

import pytest
import torch
from torch import nn

from diffusekit.core.app import config
from diffusekit.core.app.training import train
from diffusekit.core.app.training.callbacks import read_csv_logs
from diffusekit.core.app.training.models import installed_domain
from tiny_domains import DOMAINS, tiny_domain

STEPS = 4


def losses_and_dtypes(domain, overrides, root, precision, monkeypatch):
    """The logged training losses of a STEPS-step run, and the dtypes of what the network's
    layers returned while training."""
    seen: set[torch.dtype] = set()
    build = type(domain).build_network

    def build_with_hooks(self, cfg):
        network = build(self, cfg)
        for module in network.modules():
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                module.register_forward_hook(
                    lambda m, args, out: seen.add(out.dtype) if m.training else None)
        return network

    monkeypatch.setattr(type(domain), "build_network", build_with_hooks)
    cfg = config.compose(domain.default_config(), domain=domain.name, overrides=[
        *overrides, f"run_dir={root / precision}", f"trainer.precision={precision}",
        f"trainer.max_steps={STEPS}", f"val_every={STEPS}", f"checkpoint_every={STEPS}",
        "sample.val_n=0"])
    run = train(domain, cfg)
    monkeypatch.undo()
    return [v for _, v in sorted(read_csv_logs(run.logs)["train/loss"].items())], seen


@pytest.mark.parametrize("name", DOMAINS)
def test_bf16_mixed_losses_follow_float32(name, tmp_path, monkeypatch):
    domain = installed_domain(name)
    overrides = tiny_domain(name, tmp_path / "data")
    full, full_dtypes = losses_and_dtypes(domain, overrides, tmp_path, "32-true", monkeypatch)
    mixed, mixed_dtypes = losses_and_dtypes(domain, overrides, tmp_path, "bf16-mixed", monkeypatch)
    assert full_dtypes == {torch.float32}
    assert torch.bfloat16 in mixed_dtypes
    assert len(full) == len(mixed) == STEPS
    # measured on this CPU: at most 0.2% apart (audio), 1e-4 (molecules), 1e-5 (text)
    assert mixed == pytest.approx(full, rel=0.02), (full, mixed)
