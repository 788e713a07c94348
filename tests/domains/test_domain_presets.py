"""Every built-in domain ships a `gpu` preset (presets/gpu.yaml): the published scale on one GPU
within a 10-minute wall-clock budget, in bfloat16 mixed precision, with DataLoader workers; it
composes over the domain's defaults and builds the domain's network and process. The molecule
preset is EDM's QM9 model."""

import pytest

from diffusekit.core.app import config
from diffusekit.core.app.training.fit import max_time
from diffusekit.core.app.training.models import installed_domain

DOMAINS = ["audio", "image", "text", "molecules", "digits"]


def gpu_config(name):
    domain = installed_domain(name)
    return domain, config.compose(domain.default_config(), domain=name,
                                  files=[config.preset_file(domain, "gpu")])


@pytest.mark.parametrize("name", DOMAINS)
def test_the_gpu_preset_composes_and_builds(name):
    domain, cfg = gpu_config(name)
    assert max_time(cfg) == 600 and cfg.trainer.max_steps >= 10**6
    assert cfg.trainer.accelerator == "auto" and cfg.trainer.precision == "bf16-mixed"
    assert cfg.data.num_workers > 0 and cfg.optim.decay == "constant"  # a budget in time
    network = domain.build_network(cfg)
    default = domain.build_network(config.compose(domain.default_config(), domain=name))
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(network) > 4 * count(default)  # far larger than the CPU default
    domain.process(cfg)


def test_the_molecule_preset_is_edms_qm9_model():
    _, cfg = gpu_config("molecules")
    assert (cfg.network.n_layers, cfg.network.hidden, cfg.data.batch_size) == (9, 256, 64)
    assert (cfg.optim.lr, cfg.ema.decay) == (1e-4, 0.9999)
    assert cfg.process.schedule == "vp_polynomial"
    assert dict(cfg.process.schedule_options) == {"power": 2.0, "precision": 1e-5,
                                                  "n_train_steps": 1000}
