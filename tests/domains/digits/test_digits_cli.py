"""The digits domain end to end on a fake MNIST, on CPU: train, sample and evaluate with
guidance through the command line and the Python API; guidance on an unconditional model is one
error line; the benchmark writes its record."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import diffusekit
from diffusekit.core.app import cli
from diffusekit.core.app import config as configuration
from diffusekit.core.app.training.inference import with_overrides
from diffusekit.core.app.training.models import Model
from diffusekit.core.errors import ConfigError
from diffusekit.domains.digits.domain import DigitsDomain

TINY = ["network.channels=8", "network.mults=[1,2]", "data.batch_size=8", "trainer.max_steps=2",
        "checkpoint_every=2", "val_every=2", "trainer.limit_val_batches=1", "sample.val_n=4",
        "sample.steps=2", "sample.batch_size=10", "evaluate.classifier.epochs=1",
        "trainer.progress_bar=false"]


def toolkit(capsys, *args):
    capsys.readouterr()
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def runs(fake_cache, tmp_path_factory):
    """A conditional and an unconditional run trained for 2 steps on the fake digits."""
    root = tmp_path_factory.mktemp("runs")
    common = [f"data.cache_file={fake_cache}", f"run_dir={root}", *TINY]
    assert cli.main(["train", "--domain", "digits", *common, "seed=0"]) == 0
    (conditional,) = (root / "digits").iterdir()
    assert cli.main(["train", "--domain", "digits", *common, "network.n_classes=0",
                     "sample.guidance=0", "seed=1"]) == 0
    (unconditional,) = set((root / "digits").iterdir()) - {conditional}
    return conditional, unconditional


def test_train_then_sample_and_evaluate_with_guidance(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run, _ = runs
    assert (run / "samples" / "step-000002" / "grid.png").is_file()
    code, out, err = toolkit(capsys, "sample", "--run", str(run), "--sampler", "heun",
                             "--steps", "2", "-n", "10", "sample.guidance=3")
    assert code == 0, err
    folder = run / "samples" / "heun-2"
    with Image.open(folder / "grid.png") as grid, Image.open(folder / "digit-009.png") as one:
        assert grid.size == (280, 28) and one.size == (28, 28)
    code, out, err = toolkit(capsys, "evaluate", "--run", str(run), "--steps", "1", "-n", "10",
                             "sample.guidance=1")
    assert code == 0, err
    evaluation = json.loads((run / "metrics.json").read_text())["evaluation"]
    assert 0.0 <= evaluation["metrics"]["label_accuracy"] <= 1.0
    assert evaluation["overrides"] == ["sample.guidance=1"]
    code, out, err = toolkit(capsys, "sample", "--run", str(run), "sample.guidanse=1")
    assert code != 0 and "sample.guidance" in err  # an unknown key names the nearest


def test_guidance_through_the_python_api(runs, tmp_path):
    run, _ = runs
    model = diffusekit.load_model(run)
    paths = diffusekit.sample(model, n=10, steps=1, out_dir=tmp_path / "a", progress=False,
                              overrides=["sample.guidance=2"])
    assert (tmp_path / "a" / "grid.png") in paths
    guided = with_overrides(model, ["sample.guidance=2"])
    assert guided.process.guidance == 2.0 and model.process.guidance == 2.0  # the default w
    plain = with_overrides(model, ["sample.guidance=0"])
    assert plain.process.guidance == 0.0 and plain.network is model.network


def test_guidance_on_an_unconditional_model_is_one_line_and_a_nonzero_exit(runs, capsys):
    _, run = runs
    code, out, err = toolkit(capsys, "sample", "--run", str(run), "--steps", "1", "-n", "2",
                             "sample.guidance=2")
    assert code != 0
    assert err.startswith("error: sample.guidance=2 needs a class-conditional model")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err + out
    code, out, err = toolkit(capsys, "sample", "--run", str(run), "--steps", "1", "-n", "2",
                             "--out", str(run / "plain"))
    assert code == 0, err  # w = 0: the unconditional model samples


def test_guidance_for_a_process_without_it_is_a_config_error(runs):
    run, _ = runs
    model = diffusekit.load_model(run)
    cfg = configuration.override(model.cfg, overrides=["sample.guidance=1"])
    other = Model(model.path, model.domain, cfg, model.network, process=object())
    with pytest.raises(ConfigError, match="no classifier-free guidance"):
        with_overrides(other)


def test_benchmark_writes_its_record(fake_cache, tmp_path):
    domain = DigitsDomain()
    cfg = configuration.compose(domain.default_config(), domain="digits", overrides=[
        f"data.cache_file={fake_cache}", *TINY, "benchmark.train_steps=2",
        "benchmark.n_samples=20", "benchmark.samplers=[ddim,dpmpp_2m]",
        "benchmark.steps=[1,2]", "benchmark.guidance=[0,1]", "benchmark.grid=cross",
        "benchmark.cross_steps=2", "benchmark.cross_guidance=1", "benchmark.grid_per_class=1",
        "benchmark.sketch_control_steps=2", "benchmark.sketch_n=12", "benchmark.sketch_steps=2",
        "benchmark.sketch_sdedit_t=[0.5]", "benchmark.sketch_timing_steps=2",
        "benchmark.sketch_timing_rounds=1", "benchmark.sketch_grid_rows=3",
        f"benchmark.results_dir={tmp_path}"])
    result = domain.benchmark(cfg)
    metrics = result["metrics"]
    # cross: 2 samplers x 2 steps at w = 1, and 2 samplers x w in {0, 1} at 2 steps (one repeat)
    assert len(metrics["rows"]) == 6
    for row in metrics["rows"]:
        assert row["classifier_fd"] >= 0 and 0 <= row["label_accuracy"] <= 1
    assert {"target_label_accuracy_97", "classifier", "train_seconds"} <= set(metrics)
    assert 0 <= result["baselines"]["test_set"]["label_accuracy"] <= 1
    for suffix in ("json", "md", "png"):
        assert (tmp_path / f"digits.{suffix}").is_file()
    record = json.loads((tmp_path / "digits.json").read_text())
    assert record["name"] == "digits" and "classifier FD" in (tmp_path / "digits.md").read_text()
    # sketch -> digit: the base, SDEdit from each hint, each control and both, then the truth
    sketch = metrics["sketch"]
    systems = [r["system"] for r in sketch["rows"]]
    assert systems == ["base", "sdedit-edges t0=0.5", "sdedit-thumbnail t0=0.5", "edges",
                       "thumbnail", "both", "test digits"]
    for row in sketch["rows"]:
        assert 0 <= row["edge_f1_exact"] <= row["edge_f1"] <= 1 and 0 <= row["thumbnail_error"] <= 1
    truth = sketch["rows"][-1]  # the test digits against their own hints
    assert truth["edge_f1"] == 1.0 and truth["thumbnail_error"] < 1e-6
    assert sketch["timing"]["control_over_base_step"] > 0
    assert 0 < sketch["timing"]["control_trainable_parameters"] < sketch["timing"]["base_parameters"]
    assert {"target_edge_f1_0_75", "target_both_within_10_percent",
            "target_control_step_1_5x"} <= set(sketch)
    assert (tmp_path / "digits_sketch.png").is_file()
    assert "Sketch -> digit" in (tmp_path / "digits.md").read_text()
