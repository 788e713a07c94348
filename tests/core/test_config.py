"""Config composition: toolkit defaults + domain defaults + files + overrides, in struct mode."""

import re

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError

from diffusekit.core.app import config
from diffusekit.core.errors import ConfigError, UnknownConfigKeyError

DOMAIN = {
    "trainer": {"max_steps": 50},
    "model": {"channels": 32, "depth": 2},
    "data": {"batch_size": 8, "root": None},
    "process": {"schedule": "vp_cosine", "sampler_options": {}},
}


def test_training_defaults_load_and_every_key_is_commented():
    cfg = config.training_defaults()
    for key in ["trainer.max_steps", "trainer.devices", "trainer.strategy", "trainer.precision",
                "trainer.accelerator", "trainer.num_nodes", "optim.lr", "optim.weight_decay",
                "optim.betas", "optim.warmup_steps", "optim.grad_clip", "ema.decay",
                "checkpoint_every", "val_every", "sample.n", "sample.steps", "sample.sampler",
                "seed", "run_dir"]:
        assert OmegaConf.select(cfg, key, default="MISSING") != "MISSING", key
    assert cfg.trainer.accelerator == "cpu"
    for line in config.DEFAULTS_FILE.read_text().splitlines():
        if re.match(r"^\s*[a-z_]+:", line):
            assert "#" in line, f"uncommented key in defaults.yaml: {line!r}"


def test_compose_layers_later_wins(tmp_path):
    user = tmp_path / "user.yaml"
    user.write_text("model:\n  channels: 48\noptim:\n  lr: 0.01\n")
    cfg = config.compose(DOMAIN, files=[user], overrides=["model.channels=64", "seed=3"],
                         domain="toy")
    assert cfg.domain == "toy" and cfg.seed == 3
    assert cfg.trainer.max_steps == 50            # domain over toolkit
    assert cfg.model.channels == 64               # override over file over domain
    assert cfg.optim.lr == 0.01 and cfg.model.depth == 2
    assert cfg.trainer.devices == 1                # untouched toolkit default


@pytest.mark.parametrize("override, key, closest", [
    ("model.chanels=64", "model.chanels", "model.channels"),
    ("trainer.max_step=5", "trainer.max_step", "trainer.max_steps"),
    ("maxsteps=5", "maxsteps", "trainer.max_steps"),
    ("ema.decai=0.9", "ema.decai", "ema.decay"),
    ("optim.lr.value=3", "optim.lr.value", "optim.lr"),
])
def test_unknown_override_names_the_key_and_the_closest(override, key, closest):
    with pytest.raises(UnknownConfigKeyError) as info:
        config.compose(DOMAIN, overrides=[override])
    err = info.value
    assert err.key == key and err.closest == closest
    message = str(err)
    assert "\n" not in message and repr(key) in message and repr(closest) in message


def test_unknown_key_without_a_near_match_still_names_the_key():
    with pytest.raises(UnknownConfigKeyError, match="unknown config key 'zzzqqq'"):
        config.compose(DOMAIN, overrides=["zzzqqq=1"])


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    user = tmp_path / "user.yaml"
    user.write_text("model:\n  dept: 3\n")
    with pytest.raises(UnknownConfigKeyError) as info:
        config.compose(DOMAIN, files=[user])
    assert str(user) in str(info.value) and "'model.depth'" in str(info.value)


def test_domain_may_add_sections_but_not_misspell_toolkit_keys():
    config.compose({"brand_new": {"x": 1}})
    with pytest.raises(UnknownConfigKeyError, match="trainer.max_step.*trainer.max_steps"):
        config.compose({"trainer": {"max_step": 5}})


def test_struct_mode_and_open_mappings():
    cfg = config.compose(DOMAIN, overrides=["process.sampler_options.eta=0.5"])
    assert cfg.process.sampler_options.eta == 0.5   # an empty mapping in the defaults is open
    with pytest.raises(ConfigAttributeError):
        cfg.model.chanels  # noqa: B018  (a misspelt read fails too)
    with pytest.raises(ConfigAttributeError):
        cfg.model.new_key = 1


def test_override_values_are_parsed_as_yaml():
    cfg = config.compose(DOMAIN, overrides=["optim.betas=[0.8, 0.9]", "data.root=/tmp/x",
                                            "trainer.progress_bar=false", "sample.sampler=heun",
                                            "data.batch_size=null"])
    assert list(cfg.optim.betas) == [0.8, 0.9] and cfg.data.root == "/tmp/x"
    assert cfg.trainer.progress_bar is False and cfg.sample.sampler == "heun"
    assert cfg.data.batch_size is None


@pytest.mark.parametrize("bad", ["model.channels", "=3", " model.channels=3"])
def test_malformed_override_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="key=value"):
        config.compose(DOMAIN, overrides=[bad])


def test_unreadable_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config.compose(DOMAIN, files=[tmp_path / "missing.yaml"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        config.compose(DOMAIN, files=[broken])
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        config.compose(DOMAIN, files=[listing])


def test_interpolations_resolve_and_no_eval_resolver():
    cfg = config.compose({**DOMAIN, "model": {"channels": 32, "depth": "${trainer.devices}"}})
    assert cfg.model.depth == 1
    assert not OmegaConf.has_resolver("eval")
    with pytest.raises(ConfigError, match="cannot be resolved"):
        config.compose({**DOMAIN, "model": {"channels": "${eval:1+1}", "depth": 1}})


def test_saved_config_round_trips(tmp_path):
    cfg = config.compose(DOMAIN, overrides=["model.channels=64"], domain="toy")
    path = config.save(cfg, tmp_path / "run" / "config.yaml")
    again = config.load_saved(path)
    assert again == cfg and OmegaConf.is_struct(again)
    resumed = config.override(again, overrides=["trainer.max_steps=99"])
    assert resumed.trainer.max_steps == 99
    with pytest.raises(UnknownConfigKeyError):
        config.override(again, overrides=["trainer.max_stepz=99"])


INSTANTIATE = """
import json, sys
from diffusekit import plugins
from diffusekit.core.app import config
data_overrides = json.loads(sys.argv[1])
built = {}
for name in plugins.domain_names():
    domain = plugins.get_domain(name)
    cfg = config.compose(domain.default_config(), overrides=data_overrides.get(name, []),
                         domain=name)
    network = domain.build_network(cfg)
    process = domain.process(cfg)
    built[name] = {
        "max_steps": int(cfg.trainer.max_steps),
        "parameters": sum(p.numel() for p in network.parameters()),
        "process": all(hasattr(process, m) for m in ("training_loss", "generate")),
        "datamodule": type(domain.build_datamodule(cfg)).__name__,
    }
print(json.dumps(built))
"""

WATER = "3\nwater\nO 0.0 0.0 0.1173\nH 0.0 0.7572 -0.4692\nH 0.0 -0.7572 -0.4692\n"
METHANE = ("5\nmethane\nC 0.0 0.0 0.0\nH 0.629 0.629 0.629\nH -0.629 -0.629 0.629\n"
           "H -0.629 0.629 -0.629\nH 0.629 -0.629 -0.629\n")
AMMONIA = ("4\nammonia\nN 0.0 0.0 0.1162\nH 0.0 0.9377 -0.2711\nH 0.8121 -0.4689 -0.2711\n"
           "H -0.8121 -0.4689 -0.2711\n")


def tiny_data_sources(folder):
    """Each built-in domain's smallest local data, as the config overrides that select it: a
    few WAV pairs, three molecules, a few KB of text. Building a domain's data module from its
    default source would synthesise or download the full data set (the speech corpus, QM9,
    Shakespeare), which a test that only checks that the module builds must not do."""
    import numpy as np
    import soundfile

    rng = np.random.default_rng(0)
    audio = folder / "audio"
    for kind in ("clean", "noisy"):
        (audio / kind).mkdir(parents=True)
        for i in range(3):
            soundfile.write(audio / kind / f"pair{i}.wav",
                            0.1 * rng.standard_normal(8000).astype(np.float32), 16000)
    molecules = folder / "molecules"
    molecules.mkdir()
    for name, xyz in {"water": WATER, "methane": METHANE, "ammonia": AMMONIA}.items():
        (molecules / f"{name}.xyz").write_text(xyz)
    text = folder / "sonnets.txt"
    text.write_text("Shall I compare thee to a summer's day? Thou art more lovely and more "
                    "temperate.\n" * 60)
    return {"audio": [f"data.folder={audio}"], "molecules": [f"data.source={molecules}"],
            "text": [f"data.source={text}"]}


def test_every_installed_domain_default_config_instantiates(example_site, tmp_path):
    """Each installed domain (built-ins and the example plugin) composes its defaults with the
    toolkit's, and its network, process and data module build: the data module on a tiny local
    source (`tiny_data_sources`; every other setting stays the default) and with an empty data
    cache, which must stay (nearly) empty: nothing is downloaded or synthesised. In a fresh
    interpreter, so the plugin installed into `example_site` is discovered through its entry
    point."""
    import json
    import os
    import subprocess
    import sys

    overrides = tiny_data_sources(tmp_path / "sources")
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k != "DIFFUSEKIT_PLUGINS"}
    env.update(PYTHONPATH=str(example_site), DIFFUSEKIT_DATA=str(cache))
    out = subprocess.run([sys.executable, "-c", INSTANTIATE, json.dumps(overrides)],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    built = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"example", *overrides} <= set(built)
    for name, parts in built.items():
        assert parts["max_steps"] > 0 and parts["parameters"] > 0, (name, parts)
        assert parts["process"], (name, parts)
        assert parts["datamodule"].endswith("DataModule"), (name, parts)
    # only the text domain's encoded tokens of the few KB above (the cache of a user's source)
    cached = [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []
    assert sum(p.stat().st_size for p in cached) < 1_000_000, [str(p) for p in cached][:10]


def test_the_data_cache_follows_diffusekit_data_and_defaults_to_home(monkeypatch, tmp_path):
    from pathlib import Path

    from diffusekit.core.app.config import data_cache

    monkeypatch.setenv("DIFFUSEKIT_DATA", str(tmp_path))
    assert data_cache() == tmp_path and data_cache("audio") == tmp_path / "audio"
    for unset in ("", None):
        if unset is None:
            monkeypatch.delenv("DIFFUSEKIT_DATA")
        else:
            monkeypatch.setenv("DIFFUSEKIT_DATA", unset)
        assert data_cache("image") == Path.home() / ".cache" / "diffusekit" / "image"


def test_name_list_takes_a_name_or_a_list_and_refuses_an_empty_one():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"a": {"one": "x", "many": ["x", "y"], "none": None, "empty": []}})
    assert config.name_list(cfg, "a.one", "defaults") == ("x",)
    assert config.name_list(cfg, "a.many", "defaults") == ("x", "y")
    assert config.name_list(cfg, "a.none", "defaults") is None
    with pytest.raises(ConfigError, match="a.empty is empty; leave it null for defaults"):
        config.name_list(cfg, "a.empty", "defaults")


@pytest.mark.parametrize("value, seconds", [
    (90, 90.0), (1.5, 1.5), ("90", 90.0), ("90s", 90.0), ("10m", 600.0), ("1.5h", 5400.0),
    ("1h30m", 5400.0), ("2d", 172800.0), (" 10M ", 600.0), ("00:00:10:00", 600.0),
    ("01:02:03:04", 93784.0), (None, None)])
def test_durations_in_units_or_lightnings_clock(value, seconds):
    assert config.duration_seconds(value) == seconds


@pytest.mark.parametrize("value", ["abc", "10x", "m", "1h 30m", "00:10:00", "-5m", "0", "0s",
                                   "nan", "inf", True, ""])
def test_a_bad_duration_is_one_config_error_naming_the_key(value):
    with pytest.raises(ConfigError, match="trainer.max_time") as info:
        config.duration_seconds(value, "trainer.max_time")
    assert "\n" not in str(info.value)


def test_a_domain_preset_is_a_config_file_beside_its_module(tmp_path):
    from diffusekit.core.app.training.models import installed_domain

    domain = installed_domain("molecules")
    assert set(config.preset_files(domain)) == {"gpu"}
    user = tmp_path / "user.yaml"
    user.write_text("network:\n  hidden: 128\n")
    cfg = config.compose(domain.default_config(), domain="molecules", overrides=["data.batch_size=32"],
                         files=[config.preset_file(domain, "gpu"), user])
    assert cfg.network.n_layers == 9 and cfg.network.hidden == 128  # the user's file wins
    assert cfg.data.batch_size == 32 and cfg.trainer.max_time == "10m"
    with pytest.raises(ConfigError, match=r"no preset 'gpus' \(did you mean 'gpu'\?\); its presets: gpu"):
        config.preset_file(domain, "gpus")


def test_a_run_saved_with_a_retired_key_loads_unless_it_used_it():
    saved = OmegaConf.to_container(config.compose(DOMAIN, domain="d"))
    saved["distill"]["sigma_data"] = 0.5  # in every run's config.yaml before distill.boundary_width
    old = OmegaConf.create(saved)
    cfg = config.fit_to_defaults(old, DOMAIN, "run 'r'", "d")
    assert "sigma_data" not in cfg.distill and cfg.distill.boundary_width is None
    student = OmegaConf.merge(old, {"distill": {"teacher": "runs/d/teacher"}})
    with pytest.raises(ConfigError, match="retired key 'distill.sigma_data': .*distil the teacher again"):
        config.fit_to_defaults(student, DOMAIN, "run 'r'", "d")
