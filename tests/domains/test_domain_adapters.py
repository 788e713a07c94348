"""Every built-in domain declares LoRA targets that exist in its default network, and its default
adapter trains at most 5% of the network's parameters (issue 16's budget)."""

import pytest
import torch

from diffusekit.core.app import adapters, config
from diffusekit.core.app.training.models import installed_domain

DOMAINS = ["audio", "image", "text", "molecules", "digits"]


@pytest.mark.parametrize("name", DOMAINS)
def test_default_lora_targets_exist_and_train_at_most_5_percent(name):
    torch.manual_seed(0)
    domain = installed_domain(name)
    cfg = config.compose(domain.default_config(), domain=name, overrides=["adapter.kind=lora"])
    network = domain.build_network(cfg)
    base_params = sum(p.numel() for p in network.parameters())
    targets = adapters.resolve_targets(network, tuple(domain.adapter_targets))
    assert targets, domain.adapter_targets
    adapters.add_lora(network, adapters.AdapterSettings.from_config(cfg), targets)
    trainable, total = adapters.parameter_counts(network)
    assert total - trainable == base_params  # the base is all there, and frozen
    assert 0 < trainable <= 0.05 * base_params, (trainable, base_params)
    assert all("lora_" in n for n, p in network.named_parameters() if p.requires_grad)


def test_lora_on_an_embedding_trains_its_update_too():
    from torch import nn

    network = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 3))
    settings = adapters.AdapterSettings("lora", 2, 2.0, 0.0, None)
    adapters.add_lora(network, settings, adapters.resolve_targets(network, ("0", "1")))
    trainable = {n for n, p in network.named_parameters() if p.requires_grad}
    assert trainable == {"0.lora_embedding_A.default", "0.lora_embedding_B.default",
                         "1.lora_A.default.weight", "1.lora_B.default.weight"}
