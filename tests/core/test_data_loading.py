"""Every domain's DataLoader settings from its `data:` section (core/app/data_loading.py)."""

import pytest
import torch
from omegaconf import OmegaConf

from diffusekit.core.app.data_loading import loader_options
from diffusekit.core.errors import ConfigError


def test_defaults_load_in_the_training_process_and_pin_only_for_a_gpu():
    assert loader_options(OmegaConf.create({})) == {
        "num_workers": 0, "pin_memory": torch.cuda.is_available(), "persistent_workers": False}


def test_workers_persist_only_when_there_are_workers():
    options = loader_options(OmegaConf.create({"num_workers": 4, "pin_memory": False,
                                               "persistent_workers": True}))
    assert options == {"num_workers": 4, "pin_memory": False, "persistent_workers": True}
    assert not loader_options({"num_workers": 4, "persistent_workers": False})["persistent_workers"]
    assert loader_options({"pin_memory": True})["pin_memory"] is True


@pytest.mark.parametrize("data, key", [({"num_workers": -1}, "data.num_workers"),
                                       ({"num_workers": "two"}, "data.num_workers"),
                                       ({"num_workers": True}, "data.num_workers"),
                                       ({"pin_memory": "maybe"}, "data.pin_memory"),
                                       ({"persistent_workers": "yes"}, "data.persistent_workers")])
def test_a_value_of_the_wrong_kind_is_a_config_error_naming_the_key(data, key):
    with pytest.raises(ConfigError, match=key):
        loader_options(OmegaConf.create(data))


@pytest.mark.parametrize("name", ["audio", "image", "text", "molecules", "digits"])
def test_every_builtin_domain_has_the_three_settings(name):
    from diffusekit.core.app import config
    from diffusekit.core.app.training.models import installed_domain

    domain = installed_domain(name)
    data = config.compose(domain.default_config(), domain=name).data
    assert (data.num_workers, data.pin_memory, data.persistent_workers) == (0, "auto", True)
