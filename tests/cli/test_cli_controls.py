"""ControlNet through the command line (issue 17, part 3), on the toy domain: `toolkit train
--control-of MODEL control.hint=quadrant` trains only the control and saves it beside its base's
SHA-256; `toolkit sample --run CTRL [--hint FILE] [--control-scale S]` applies it; bad hints and
a control of another base are one error line that leaves nothing behind."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffusekit.core.app import controls
from diffusekit.core.app.training.inference import run_model
from diffusekit.core.app.training.models import sha256_of
from diffusekit.core.app.training.runs import RunDir
from diffusekit.core.control import Controlled, ControlSpec

from toy_domain import ToyDomain
from error_lines import one_error
from toy_runs import STEPS, new_run, points, sampler

@pytest.fixture
def control_run(toolkit, base, tmp_path):
    """A control of the base trained 10 steps on the quadrant hint (lr high enough that its
    zero layers move)."""
    before = list((tmp_path / "runs" / "toy").iterdir())
    code, out, err = toolkit("train", "--domain", "toy", "--control-of", str(base),
                             "control.hint=quadrant", "optim.lr=0.01", *STEPS)
    assert code == 0, err
    return new_run(tmp_path, before)


def _hint_file(path, tensor):
    save_file({"hint": tensor.contiguous()}, str(path))
    return path


def test_a_control_run_trains_only_the_control_and_saves_it_beside_its_base(control_run, base):
    folder = control_run / "control"
    assert sorted(p.name for p in folder.iterdir()) == ["base.json", "control.json",
                                                        "control.safetensors"]
    assert not (control_run / "model.safetensors").exists()
    assert json.loads((folder / "base.json").read_text()) == {
        "id": str(base), "sha256": sha256_of(base / "model.safetensors")}
    record = json.loads((folder / "control.json").read_text())
    spec = ControlSpec.from_dict(record["spec"])
    assert record["hint"] == "quadrant" and spec.blocks == ("net.0", "net.2")
    assert spec.hint_shape == (2,)
    tensors = load_file(folder / "control.safetensors")
    assert not any(k.startswith("copy.net.4") for k in tensors)  # the copy's unused tail
    assert any(v.abs().max() > 0 for k, v in tensors.items() if k.startswith("projections."))
    # the base inside the run never moved: the last checkpoint holds its weights unchanged
    ckpt = torch.load(control_run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for key, value in load_file(base / "model.safetensors").items():
        assert torch.equal(ckpt[f"network.base.{key}"], value)
    model = run_model(ToyDomain(), RunDir(control_run))
    assert isinstance(model.network, Controlled)
    assert not any(p.requires_grad for p in model.network.parameters())  # loaded: frozen


def test_control_scale_zero_samples_the_base_bit_for_bit(toolkit, control_run, base,
                                                         tmp_path):
    sample = sampler(toolkit, tmp_path)

    base_points = sample("--model", str(base))
    hint = _hint_file(tmp_path / "hint.safetensors", torch.tensor([1.0, 1.0]))
    assert torch.equal(sample("--run", str(control_run), "--control-scale", "0"), base_points)
    assert torch.equal(sample("--run", str(control_run), "--control-scale", "0",
                              "--hint", str(hint)), base_points)
    assert not torch.equal(sample("--run", str(control_run)), base_points)
    assert not torch.equal(sample("--run", str(control_run), "--hint", str(hint)), base_points)


def test_an_exported_control_samples_like_its_run_and_evaluates(toolkit, control_run,
                                                                tmp_path):
    code, _, err = toolkit("export", "--run", str(control_run), "--to", str(tmp_path / "ctrl"))
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "ctrl").iterdir()) == ["README.md", "config.yaml",
                                                                    "control"]
    assert "ControlNet" in (tmp_path / "ctrl" / "README.md").read_text()
    hint = _hint_file(tmp_path / "hint.safetensors", torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
    for source in (("--run", str(control_run)), ("--model", str(tmp_path / "ctrl"))):
        code, _, err = toolkit("sample", *source, "-n", "6", "--seed", "3", "--hint", str(hint),
                               "--out", str(tmp_path / source[0][2:]))
        assert code == 0, err
    assert torch.equal(points(tmp_path / "run"), points(tmp_path / "model"))
    code, out, err = toolkit("evaluate", "--run", str(control_run), "-n", "16")
    assert code == 0 and "mean_error" in out, err


def test_a_trained_control_steers_samples_into_the_hinted_quadrant(toolkit, tmp_path):
    """A 200-step base spreads its samples over the four blobs; a 150-step control of it sends
    them to the blob its hint names (the signs of the point)."""
    code, _, err = toolkit("train", "--domain", "toy", "trainer.max_steps=200",
                           "checkpoint_every=200", "val_every=200", "sample.val_n=0")
    assert code == 0, err
    (run,) = (tmp_path / "runs" / "toy").iterdir()
    code, _, err = toolkit("export", "--run", str(run), "--to", str(tmp_path / "base"))
    assert code == 0, err
    code, _, err = toolkit("train", "--domain", "toy", "--control-of", str(tmp_path / "base"),
                           "control.hint=quadrant", "trainer.max_steps=150",
                           "checkpoint_every=150", "val_every=150", "sample.val_n=0")
    assert code == 0, err
    (control,) = set((tmp_path / "runs" / "toy").iterdir()) - {run}
    for signs in ([1.0, 1.0], [-1.0, 1.0], [1.0, -1.0]):
        hint = _hint_file(tmp_path / "hint.safetensors", torch.tensor(signs))
        out = tmp_path / f"q{signs}"
        code, _, err = toolkit("sample", "--run", str(control), "-n", "32", "--hint", str(hint),
                               "--out", str(out))
        assert code == 0, err
        hit = (torch.sign(points(out)) == torch.tensor(signs)).all(1).float().mean()
        assert hit >= 0.85, (signs, hit)
    code, _, err = toolkit("sample", "--model", str(tmp_path / "base"), "-n", "32",
                           "--out", str(tmp_path / "free"))
    assert code == 0, err
    assert (torch.sign(points(tmp_path / "free")) == 1).all(1).float().mean() < 0.6


def test_hint_files_are_read_without_unpickling(tmp_path):
    from PIL import Image

    spec = ControlSpec(blocks=("a",), hint_shape=(1, 4, 6), entry_channels=1, entry_axis=1,
                       entry_ndim=3, channels=(1,), axes=(1,))
    grey = (torch.arange(24).reshape(4, 6) * 10).to(torch.uint8).numpy()
    Image.fromarray(grey).save(tmp_path / "sketch.png")
    hints = controls.file_hints(tmp_path / "sketch.png", spec).hints
    assert hints.shape == (1, 1, 4, 6) and torch.allclose(hints[0, 0, 0, 1], torch.tensor(10 / 255))
    Image.fromarray(grey).convert("RGB").save(tmp_path / "colour.png")
    assert controls.read_hint_file(tmp_path / "colour.png").shape == (3, 4, 6)
    from diffusekit.core.errors import DataError

    with pytest.raises(DataError, match=r"holds shape \[3, 4, 6\]; .* shape \[1, 4, 6\]"):
        controls.file_hints(tmp_path / "colour.png", spec)  # the wrong channels
    Image.fromarray(grey[:, :5]).save(tmp_path / "narrow.png")
    with pytest.raises(DataError, match=r"holds shape \[1, 4, 5\]"):
        controls.file_hints(tmp_path / "narrow.png", spec)  # the wrong size
    (tmp_path / "hint.pt").write_bytes(b"\x80\x04not a pickle we would ever open")

    with pytest.raises(DataError, match=r"give a \.safetensors file or a \.png"):
        controls.read_hint_file(tmp_path / "hint.pt")
    source = controls.FileHints(torch.arange(3.0)[:, None])  # hints cycle over the samples
    assert source({"x0": torch.zeros(2, 1)}).flatten().tolist() == [0.0, 1.0]
    assert source({"x0": torch.zeros(3, 1)}).flatten().tolist() == [2.0, 0.0, 1.0]


# ------------------------------------------------------------------------ one-line errors
def test_a_bad_hint_is_one_line_and_writes_nothing(toolkit, control_run, base, tmp_path):
    from PIL import Image

    Image.new("L", (5, 5)).save(tmp_path / "sketch.png")
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    cases = [
        (_hint_file(tmp_path / "size.safetensors", torch.ones(3)), ["holds shape [3]",
                                                                   "shape [2]"]),
        (_hint_file(tmp_path / "many.safetensors", torch.ones(4, 3)), ["holds shape [4, 3]"]),
        (tmp_path / "sketch.png", ["holds shape [1, 5, 5]", "shape [2]"]),
        (tmp_path / "missing.safetensors", ["does not exist"]),
        (tmp_path / "broken.safetensors", ["cannot be read"]),
    ]
    samples_before = sorted((control_run / "samples").rglob("*"))
    for path, needles in cases:
        for command in ("sample", "evaluate"):
            code, _, err = toolkit(command, "--run", str(control_run), "--hint", str(path))
            one_error(code, err, str(path.name), *needles)
    assert sorted((control_run / "samples").rglob("*")) == samples_before
    code, _, err = toolkit("sample", "--model", str(base), "--hint", str(cases[0][0]))
    one_error(code, err, "--hint steers a control")
    assert not (tmp_path / "samples").exists()


def test_a_control_of_another_base_is_one_line(toolkit, control_run, base, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(base, other)
    weights = load_file(other / "model.safetensors")
    save_file({k: v * 2 for k, v in weights.items()}, str(other / "model.safetensors"))
    code, _, err = toolkit("sample", "--run", str(control_run), "-n", "4", "--base", str(other))
    one_error(code, err, "since the control", "or is another model", "SHA-256")
    # a control folder copied beside another base: its base.json names the SHA-256 it needs
    code, _, err = toolkit("export", "--run", str(control_run), "--to", str(tmp_path / "ctrl"))
    assert code == 0, err
    record = json.loads((tmp_path / "ctrl" / "control" / "base.json").read_text())
    (tmp_path / "ctrl" / "control" / "base.json").write_text(json.dumps(
        {**record, "id": str(other)}))
    code, _, err = toolkit("evaluate", "--model", str(tmp_path / "ctrl"), "-n", "4")
    one_error(code, err, "since the control", "SHA-256")
    shutil.rmtree(base)
    code, _, err = toolkit("sample", "--run", str(control_run), "-n", "4")
    one_error(code, err, "base model of the control", "missing", "--base")
    assert not (tmp_path / "samples").exists()


@pytest.mark.parametrize("overrides, needle", [
    ([], "needs control.hint"),
    (["control.hint=nosuch"], "unknown hint maker 'nosuch'"),
    (["control.hint=quadrant", "control.blocks=[nosuch]"], "'nosuch' matches no module"),
    (["control.hint=quadrant", "control.width=0"], "control.width must be"),
    (["control.hint=quadrant", "init_from=BASE"], "does not go with init_from or adapter"),
])
def test_bad_control_settings_are_one_line_and_leave_no_run(toolkit, base, tmp_path, overrides,
                                                            needle):
    before = sorted((tmp_path / "runs" / "toy").iterdir())
    overrides = [o.replace("BASE", str(base)) for o in overrides]
    code, _, err = toolkit("train", "--domain", "toy", "--control-of", str(base), *overrides,
                           *STEPS)
    line = one_error(code, err, needle)
    if "nosuch" in " ".join(overrides):
        assert "quadrant" in line or "net.0" in line  # what exists is listed
    assert sorted((tmp_path / "runs" / "toy").iterdir()) == before


def test_a_control_of_no_model_or_with_init_from_is_one_line(toolkit, base, control_run,
                                                             tmp_path):
    code, _, err = toolkit("train", "--domain", "toy", "--control-of", str(tmp_path / "nowhere"),
                           "control.hint=quadrant", *STEPS)
    one_error(code, err, "nowhere")
    code, _, err = toolkit("train", "--domain", "toy", "--control-of", str(control_run),
                           "control.hint=quadrant", *STEPS)
    one_error(code, err, "holds no model.safetensors")
    code, _, err = toolkit("train", "--domain", "toy", "--control-of", str(base),
                           "--init-from", str(base), "control.hint=quadrant", *STEPS)
    one_error(code, err, "--control-of", "--init-from")


def test_several_controls_compose_each_with_its_scale(toolkit, control_run, base, tmp_path):
    before = list((tmp_path / "runs" / "toy").iterdir())
    code, _, err = toolkit("train", "--domain", "toy", "--control-of", str(base),
                           "control.hint=x0", "optim.lr=0.01", "seed=1", *STEPS)
    assert code == 0, err
    other = new_run(tmp_path, before)

    sample = sampler(toolkit, tmp_path)

    alone = sample("--run", str(control_run))
    assert torch.equal(sample("--run", str(control_run), "--control", f"{other}=0"), alone)
    assert torch.equal(sample("--model", str(base), "--control", f"{control_run}=1"), alone)
    both = sample("--run", str(control_run), "--control", f"{other}=0.5")
    assert not torch.equal(both, alone)
    assert torch.equal(sample("--model", str(base), "--control", f"{control_run}=1",
                              "--control", f"{other}=0.5"), both)
    hint = _hint_file(tmp_path / "hint.safetensors", torch.tensor([1.0, 1.0]))
    assert torch.equal(sample("--model", str(base), "--control", f"{control_run}=1",
                              "--hint", str(hint)),
                       sample("--run", str(control_run), "--hint", str(hint)))
    # a control of other base weights is one line
    code, _, err = toolkit("export", "--run", str(control_run), "--to", str(tmp_path / "ctrl"))
    assert code == 0, err
    record = json.loads((tmp_path / "ctrl" / "control" / "base.json").read_text())
    (tmp_path / "ctrl" / "control" / "base.json").write_text(json.dumps(
        {**record, "sha256": "0" * 64}))
    code, _, err = toolkit("sample", "--model", str(base), "--control", f"{tmp_path / 'ctrl'}=1")
    one_error(code, err, "trained on other base weights")
    code, _, err = toolkit("sample", "--model", str(base), "--control", "nosuch")
    one_error(code, err, "not of the form RUN=SCALE")


def test_a_control_composes_with_a_lora_adapter_on_its_base(toolkit, control_run, base,
                                                            tmp_path):
    before = list((tmp_path / "runs" / "toy").iterdir())
    code, _, err = toolkit("train", "--domain", "toy", "--init-from", str(base),
                           "adapter.kind=lora", "adapter.rank=2", "optim.lr=0.005", *STEPS)
    assert code == 0, err
    lora = new_run(tmp_path, before)

    sample = sampler(toolkit, tmp_path)

    controlled = sample("--run", str(control_run))
    adapted = sample("--run", str(lora))
    both = sample("--run", str(control_run), "--adapter", f"{lora}=1")
    assert not torch.equal(both, controlled) and not torch.equal(both, adapted)
    # each layer at scale 0 gives the layer below it
    assert torch.equal(sample("--run", str(control_run), "--adapter", f"{lora}=0"), controlled)
    assert torch.equal(sample("--run", str(control_run), "--control-scale", "0",
                              "--adapter", f"{lora}=1"), adapted)
    code, _, err = toolkit("sample", "--run", str(lora), "--control", f"{control_run}=1")
    one_error(code, err, "give the control run with --run")


def test_a_control_run_resumes_and_the_python_api_steers(toolkit, control_run, base, tmp_path):
    code, out, err = toolkit("train", "--resume", str(control_run), "trainer.max_steps=14")
    assert code == 0 and "to step 14" in out, err
    import diffusekit

    model = diffusekit.load_model(control_run, domain=ToyDomain())
    hint = _hint_file(tmp_path / "hint.safetensors", torch.tensor([1.0, 1.0]))
    a = diffusekit.sample(diffusekit.use_hint_file(model, hint), n=4, seed=2,
                          out_dir=tmp_path / "api", progress=False)
    plain = diffusekit.add_controls(diffusekit.load_model(base, domain=ToyDomain()),
                                    {control_run: 1.0})
    b = diffusekit.sample(diffusekit.use_hint_file(plain, hint), n=4, seed=2,
                          out_dir=tmp_path / "api2", progress=False)
    assert torch.equal(points(a[0].parent), points(b[0].parent))
