"""Models as folders, fine-tuning and LoRA adapters (issue 16), on the toy domain, through the
command line: export / load (a path and a Hub id from a cache the test builds), --init-from,
adapter.kind=lora, adapter_scale, several adapters, merge, and the one-line errors."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from diffusekit.core.app import adapters
from diffusekit.core.app.training.inference import add_adapters, run_model
from diffusekit.core.app.training.models import load_model, sha256_of
from diffusekit.core.app.training.runs import RunDir

from toy_domain import ToyDomain
from error_lines import one_error
from toy_runs import STEPS, new_run, points, sampler

@pytest.fixture
def lora_run(toolkit, base, tmp_path):
    """A rank-2 LoRA adapter trained 10 steps on the base model (its B matrices made non-zero
    by training: lr x adapter.lr_scale high enough to move them)."""
    before = list((tmp_path / "runs" / "toy").iterdir())
    code, _, err = toolkit("train", "--domain", "toy", "--init-from", str(base),
                           "adapter.kind=lora", "adapter.rank=2", "optim.lr=0.005", *STEPS)
    assert code == 0, err
    return new_run(tmp_path, before)


def test_export_writes_a_model_folder_that_loads_like_the_run(toolkit, trained_run, base,
                                                              tmp_path):
    assert sorted(p.name for p in base.iterdir()) == ["README.md", "config.yaml",
                                                      "model.safetensors"]
    card = (base / "README.md").read_text()
    assert "toy" in card and "10 steps" in card and sha256_of(base / "model.safetensors") in card
    run_weights = load_file(trained_run / "model.safetensors")
    assert all(torch.equal(run_weights[k], v) for k, v in
               load_file(base / "model.safetensors").items())
    for source in (("--run", str(trained_run)), ("--model", str(base))):
        code, _, err = toolkit("sample", *source, "-n", "8", "--seed", "3",
                               "--out", str(tmp_path / source[0][2:]))
        assert code == 0, err
    assert torch.equal(points(tmp_path / "run"), points(tmp_path / "model"))
    code, _, err = toolkit("export", "--run", str(trained_run), "--to", str(tmp_path / "half"),
                           "--half")
    assert code == 0, err
    assert all(v.dtype == torch.float16 for v in load_file(tmp_path / "half" /
                                                             "model.safetensors").values())
    code, out, err = toolkit("evaluate", "--model", str(tmp_path / "half"), "-n", "16")
    assert code == 0 and "mean_error" in out, err
    # nothing is overwritten
    code, _, err = toolkit("export", "--run", str(trained_run), "--to", str(base))
    one_error(code, err, "exists and is not empty")


def test_a_hub_id_resolves_through_the_hugging_face_cache(toolkit, base, tmp_path):
    from huggingface_hub import constants

    # the cache layout huggingface_hub writes: refs/main names the snapshot of the revision
    repo = Path(constants.HF_HUB_CACHE) / "models--someone--toy-points"
    revision = "0" * 40
    shutil.copytree(base, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    model = load_model("someone/toy-points", domain=ToyDomain())
    assert model.domain.name == "toy" and sha256_of(model.path / "model.safetensors") == \
        sha256_of(base / "model.safetensors")
    code, _, err = toolkit("sample", "--model", "someone/toy-points", "-n", "4")
    assert code == 0, err
    assert (tmp_path / "samples" / revision).is_dir()  # samples/<model folder name>/...
    code, _, err = toolkit("sample", "--model", "someone/not-cached", "-n", "4")
    one_error(code, err, "someone/not-cached")


def test_init_from_fine_tunes_every_weight_from_the_model(toolkit, base, tmp_path):
    before = list((tmp_path / "runs" / "toy").iterdir())
    code, _, err = toolkit("train", "--domain", "toy", "--init-from", str(base),
                           "trainer.max_steps=2", "checkpoint_every=2", "val_every=2",
                           "optim.warmup_steps=0", "ema.decay=0.0")
    assert code == 0, err
    run = new_run(tmp_path, before)
    assert yaml.safe_load((run / "config.yaml").read_text())["init_from"] == str(base)
    start, tuned = load_file(base / "model.safetensors"), load_file(run / "model.safetensors")
    assert all(not torch.equal(start[k], tuned[k]) for k in start if k.endswith("weight"))
    assert all((start[k] - tuned[k]).abs().max() < 0.1 for k in start)  # 2 steps from the base


def test_lora_trains_only_the_adapter_and_saves_it_in_peft_format(lora_run, base):
    folder = lora_run / "adapter"
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json",
                                                        "adapter_model.safetensors", "base.json"]
    assert not (lora_run / "model.safetensors").exists()
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["r"] == 2 and config["peft_type"] == "LORA"
    assert json.loads((folder / "base.json").read_text()) == {
        "id": str(base), "sha256": sha256_of(base / "model.safetensors")}
    tensors = load_file(folder / "adapter_model.safetensors")
    assert tensors and all("lora_" in k for k in tensors)
    assert any(v.abs().max() > 0 for k, v in tensors.items() if "lora_B" in k)  # it trained
    # the base weights inside the run never moved: the last checkpoint holds them unchanged
    ckpt = torch.load(lora_run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    start = load_file(base / "model.safetensors")
    for key, value in start.items():
        wrapped = key.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch.equal(ckpt.get(f"network.{key}", ckpt.get(f"network.{wrapped}")), value)
    trainable, total = adapters.parameter_counts(run_model(ToyDomain(), RunDir(lora_run)).network)
    assert trainable == 0  # loaded for sampling: frozen


def test_adapter_scale_zero_is_the_base_bit_for_bit_and_one_differs(toolkit, lora_run, base,
                                                                    tmp_path):
    sample = sampler(toolkit, tmp_path)

    base_points = sample("--model", str(base))
    assert torch.equal(sample("--run", str(lora_run), "--adapter-scale", "0"), base_points)
    assert not torch.equal(sample("--run", str(lora_run)), base_points)


def test_several_adapters_add_their_updates(lora_run, tmp_path):
    domain = ToyDomain()
    x, t = torch.randn(5, 2), torch.rand(5)
    single = run_model(domain, RunDir(lora_run), adapter_scale=0.5)
    double = run_model(domain, RunDir(lora_run), adapter_scale=0.25,
                       adapters={lora_run: 0.25})
    with torch.no_grad():
        assert torch.allclose(single.network(x, t), double.network(x, t), atol=1e-6)
    base = run_model(domain, RunDir(lora_run), adapter_scale=0.0)
    added = add_adapters(run_model(domain, RunDir(lora_run), adapter_scale=0.0),
                         {lora_run: 0.5})
    with torch.no_grad():
        assert torch.allclose(added.network(x, t), single.network(x, t), atol=1e-6)
        assert not torch.allclose(added.network(x, t), base.network(x, t), atol=1e-6)


def test_merge_writes_a_plain_model_equal_to_base_plus_adapter(toolkit, lora_run, tmp_path):
    code, _, err = toolkit("merge", "--run", str(lora_run), "--to", str(tmp_path / "merged"))
    assert code == 0, err
    merged = load_model(tmp_path / "merged", domain=ToyDomain())
    assert merged.cfg.adapter.kind is None and not adapters.lora_layers(merged.network)
    adapted = run_model(ToyDomain(), RunDir(lora_run))
    x, t = torch.randn(64, 2), torch.rand(64)
    with torch.no_grad():
        assert torch.allclose(merged.network(x, t), adapted.network(x, t), atol=1e-5, rtol=0)
    assert sorted(load_file(tmp_path / "merged" / "model.safetensors")) == sorted(
        ToyDomain().build_network(merged.cfg).state_dict())


# ------------------------------------------------------------------------ one-line errors
def test_an_adapter_whose_base_changed_or_vanished_is_one_line(toolkit, lora_run, base,
                                                               tmp_path):
    weights = load_file(base / "model.safetensors")
    from safetensors.torch import save_file

    save_file({k: v + 1 for k, v in weights.items()}, str(base / "model.safetensors"))
    code, _, err = toolkit("sample", "--run", str(lora_run), "-n", "4")
    one_error(code, err, "has changed since the adapter", "SHA-256")
    shutil.rmtree(base)
    code, _, err = toolkit("sample", "--run", str(lora_run), "-n", "4")
    one_error(code, err, "base model", "missing")


def test_a_shared_adapter_finds_a_moved_base_with_base(toolkit, lora_run, base, tmp_path):
    code, _, err = toolkit("export", "--run", str(lora_run), "--to", str(tmp_path / "shared"))
    assert code == 0, err
    code, _, err = toolkit("sample", "--model", str(tmp_path / "shared"), "-n", "4",
                           "--seed", "3", "--out", str(tmp_path / "before"))
    assert code == 0, err
    moved = tmp_path / "elsewhere" / "base"
    moved.parent.mkdir()
    shutil.move(str(base), str(moved))
    code, _, err = toolkit("sample", "--model", str(tmp_path / "shared"), "-n", "4")
    one_error(code, err, "base model", "missing", "--base")
    code, _, err = toolkit("sample", "--model", str(tmp_path / "shared"), "-n", "4", "--seed",
                           "3", "--base", str(moved), "--out", str(tmp_path / "after"))
    assert code == 0, err
    assert torch.equal(points(tmp_path / "before"), points(tmp_path / "after"))
    code, _, err = toolkit("merge", "--run", str(lora_run), "--base", str(moved),
                           "--to", str(tmp_path / "merged"))
    assert code == 0, err
    # a --base with other weights is refused like a changed base
    weights = load_file(moved / "model.safetensors")
    from safetensors.torch import save_file

    save_file({k: v * 2 for k, v in weights.items()}, str(moved / "model.safetensors"))
    code, _, err = toolkit("evaluate", "--run", str(lora_run), "--base", str(moved))
    one_error(code, err, "has changed since the adapter", "SHA-256")


@pytest.mark.parametrize("override, needle", [
    ("adapter.rank=0", "adapter.rank must be a whole number > 0"),
    ("adapter.targets=[nosuch]", "'nosuch' matches no Linear / Conv / Embedding module"),
    ("adapter.kind=dora", "adapter.kind='dora' is not known"),
    ("adapter.lr_scale=-1", "adapter.lr_scale must be > 0"),
])
def test_bad_adapter_settings_are_one_line_and_leave_no_run(toolkit, base, tmp_path, override,
                                                            needle):
    before = sorted((tmp_path / "runs" / "toy").iterdir())
    code, _, err = toolkit("train", "--domain", "toy", "--init-from", str(base),
                           "adapter.kind=lora", override, *STEPS)
    line = one_error(code, err, needle)
    if "nosuch" in override:
        assert "net.0" in line  # the modules that exist are listed
    assert sorted((tmp_path / "runs" / "toy").iterdir()) == before


def test_lora_without_a_base_and_a_base_of_another_network_are_one_line(toolkit, base):
    code, _, err = toolkit("train", "--domain", "toy", "adapter.kind=lora", *STEPS)
    one_error(code, err, "--init-from")
    code, _, err = toolkit("train", "--domain", "toy", "--init-from", str(base),
                           "model.hidden=8", *STEPS)
    one_error(code, err, "does not match model")


def test_a_model_folder_of_another_domain_is_one_line(toolkit, base, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(base, other)
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    cfg["domain"] = "image"
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    code, _, err = toolkit("train", "--domain", "toy", "--init-from", str(other), *STEPS)
    one_error(code, err, "of domain 'image', not 'toy'")
    code, _, err = toolkit("sample", "--model", str(other))
    one_error(code, err, "does not fit domain 'image'")


def test_the_python_api_loads_samples_and_blends(base, lora_run, tmp_path):
    import diffusekit

    model = diffusekit.load_model(base, domain=ToyDomain())
    paths = diffusekit.sample(model, n=4, seed=1, out_dir=tmp_path / "api", progress=False)
    assert [p.name for p in paths] == ["points.csv"]
    adapted = diffusekit.add_adapters(diffusekit.load_model(base, domain=ToyDomain()),
                                      {lora_run: 1.0})
    x, t = torch.randn(8, 2), torch.rand(8)
    with torch.no_grad():
        assert torch.allclose(adapted.network(x, t),
                              run_model(ToyDomain(), RunDir(lora_run)).network(x, t), atol=1e-6)


def test_the_finetune_benchmark_scores_four_systems_through_the_trainer(toolkit, tmp_path):
    code, out, err = toolkit("benchmark", "--domain", "toy", "--finetune", "--quick",
                             "finetune.quick_base_steps=12", "finetune.quick_steps=6",
                             "finetune.quick_eval_n=16", f"finetune.results_dir={tmp_path}/res")
    assert code == 0, err
    record = json.loads((tmp_path / "res" / "toy_finetune_quick.json").read_text())
    metrics = record["metrics"]
    assert set(metrics["scores"]) == {"base", "lora", "full", "scratch"}
    assert metrics["steps"] == 6 and metrics["base_steps"] == 12 and metrics["metric"] == "mean_error"
    assert 0 < metrics["lora_parameter_share"] < 1 and 0 < metrics["lora_file_share"] < 1
    markdown = (tmp_path / "res" / "toy_finetune_quick.md").read_text()
    assert "LoRA recovers" in markdown and "![toy: customisation" in markdown
    assert (tmp_path / "res" / "toy_finetune_quick.png").read_bytes()[:4] == b"\x89PNG"
    # every system also gets its held-out training objective, on the same examples and draws
    losses = {name: s["test_loss"] for name, s in metrics["scores"].items()}
    assert all(0 < v < float("inf") for v in losses.values()) and len(set(losses.values())) > 1
    assert metrics["target_warmup_steps"] == 0  # at most a tenth of the 6 target steps
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.ckpt"))


def test_the_held_out_loss_draws_the_same_noise_for_every_call(base):
    from diffusekit.core.app.training.inference import held_out_loss as test_loss

    model = load_model(base, domain=ToyDomain())
    first, again = test_loss(model, 16), test_loss(model, 16)
    assert first == again and 0 < first < float("inf")
    assert test_loss(model, 16, seed=1) != first  # other draws, another estimate
    assert test_loss(model, 16, repeats=1) != first
