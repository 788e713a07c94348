"""`toolkit inpaint` and `toolkit benchmark --repair` for a domain that declares no repair (the toy
domain): one error line each; and the command's region options, parsed the same for every
domain (core/app/repair.py)."""

from __future__ import annotations

import math

import pytest
import torch

from diffusekit.core.app.repair import (BenchmarkRun, biharmonic, check_region, hole_scores,
                                        inpaint_method, mean_of_draws, nfe_of, parse_indices,
                                        parse_region, parse_span, repeat_batch, stroke_mask,
                                        sweep_settings)
from diffusekit.core.errors import ConfigError
from diffusekit.core.inpainting import RePaint, Replace
from omegaconf import OmegaConf


def test_a_domain_that_cannot_inpaint_is_one_line(toolkit, trained_run, tmp_path):
    (tmp_path / "points.csv").write_text("0,0\n")
    code, _, err = toolkit("inpaint", "--run", str(trained_run), "points.csv", "--keep", "0")
    assert code != 0 and err == ["error: the 'toy' domain cannot inpaint (it declares no "
                                 "inpaint_regions)"]
    assert not (tmp_path / "repaired").exists()
    code, _, err = toolkit("benchmark", "--domain", "toy", "--repair")
    assert code != 0 and err == ["error: domain 'toy' has no repair benchmark"]
    code, _, err = toolkit("benchmark", "--domain", "toy", "--repair", "--finetune")
    assert code != 0 and len(err) == 1 and "give one" in err[0]


def test_region_options_parse_or_fail_in_one_line():
    region = parse_region(mask="hole.png", boxes=["1,2,3.5,4"], spans=["0.25 - 0.5"],
                          keep="0,2-4,2")
    assert region.kinds() == ("mask", "box", "span", "keep")
    assert region.boxes == ((1.0, 2.0, 3.5, 4.0),) and region.spans == ((0.25, 0.5),)
    assert region.keep == (0, 2, 3, 4)
    for bad, call in [("1,2", lambda: parse_span("1,2")), ("4-2", lambda: parse_indices("4-2")),
                      ("x", lambda: parse_indices("x")), ("nan", lambda: parse_region(
                          boxes=["nan,0,1,1"]))]:
        with pytest.raises(ConfigError):
            call()


def test_check_region_names_what_the_domain_takes():
    class Photos:
        name, inpaint_regions = "photos", ("mask", "box")

    check_region(Photos(), parse_region(boxes=["0,0,1,1"]))
    with pytest.raises(ConfigError, match=r"does not take --span; it takes --mask FILE, --box"):
        check_region(Photos(), parse_region(spans=["0-1"]))


def test_methods_and_their_network_calls():
    cfg = OmegaConf.create({"inpaint": {"method": "replace", "jump_length": 5, "resamplings": 4}})
    assert inpaint_method(cfg) == Replace(reconstruction=0.0)
    repaint = inpaint_method(cfg, "repaint")
    assert repaint == RePaint(jump_length=5, resamplings=4)
    guided = OmegaConf.merge(cfg, {"inpaint": {"reconstruction": 2}})
    assert inpaint_method(guided) == Replace(reconstruction=2.0)
    assert inpaint_method(guided, "repaint") == RePaint(jump_length=5, resamplings=4, reconstruction=2.0)
    with pytest.raises(ConfigError, match="reconstruction guidance weight"):
        inpaint_method(cfg, reconstruction=-1)
    assert nfe_of("replace", 20) == 20 and nfe_of("replace", 20, calls_per_step=2) == 40
    assert nfe_of(repaint, 20) == 20 + 3 * 15  # the top segment is done once
    assert nfe_of(Replace(reconstruction=1.0), 10) == 30  # a forward and a backward pass a call
    section = OmegaConf.create({"samplers": ["ddpm", "heun"], "steps": [5, 10],
                                "repaint_steps": [10], "resamplings": [2, 4], "jump_length": 5,
                                "reconstruction": [4], "reconstruction_steps": [8]})
    assert [(s.label, s.nfe()) for s in sweep_settings(section)] == [
        ("replace-5 (ddpm)", 5), ("replace-10 (ddpm)", 10), ("replace-5 (heun)", 5),
        ("replace-10 (heun)", 10), ("repaint-10x2-j5 (ddpm)", 15), ("repaint-10x4-j5 (ddpm)", 25),
        ("replace-8 +rg4 (ddpm)", 24)]
    means = OmegaConf.merge(section, {"averaged": [2, 4], "averaged_steps": [1]})
    assert [(s.label, s.curve, s.nfe()) for s in sweep_settings(means)[-2:]] == [
        ("mean of 2 x replace-1 (ddpm)", "mean of replace-1 (ddpm)", 2),
        ("mean of 4 x replace-1 (ddpm)", "mean of replace-1 (ddpm)", 4)]
    assert sweep_settings(means)[-1].fields()["repairs_averaged"] == 4


def test_mean_of_draws_averages_repairs_seeded_one_after_another():
    seeds: list[int] = []

    def repair(seed: int) -> torch.Tensor:
        seeds.append(seed)
        return torch.full((2,), float(seed))

    assert mean_of_draws(repair, 4, 10).tolist() == [11.5, 11.5] and seeds == [10, 11, 12, 13]
    assert mean_of_draws(repair, 1, 7).tolist() == [7.0, 7.0]  # one draw: the repair itself
    # a domain's own mean (repair_mean) receives the draws in seed order
    seen: list[list[float]] = []
    assert mean_of_draws(repair, 3, 5, mean=lambda draws: seen.append(
        [float(d[0]) for d in draws]) or "mean") == "mean"
    assert seen == [[5.0, 6.0, 7.0]]
    with pytest.raises(ValueError, match="draws must be >= 1"):
        mean_of_draws(repair, 0, 0)


def test_repeat_batch_and_strokes():
    batch = {"x0": torch.ones(1, 2, 3), "cond": {"label": torch.tensor([4])}, "name": "a"}
    out = repeat_batch(batch, 3)
    assert out["x0"].shape == (3, 2, 3) and out["cond"]["label"].tolist() == [4, 4, 4]
    assert out["name"] == "a"
    strokes = stroke_mask(28, 28, torch.Generator().manual_seed(0), strokes=2, width_px=1.5)
    assert strokes.dtype == torch.bool and 0.05 < float(strokes.float().mean()) < 0.6


def test_a_control_steers_inpainting_through_its_hints():
    from diffusekit.core.app.controls import HintedProcess

    seen = {}

    class Process:
        def inpaint(self, network, batch, known, **options):
            seen.update(batch=batch, known=known, options=options)
            return batch["x0"]

    hinted = HintedProcess(Process(), {"hint": lambda batch: batch["x0"] * 2})
    batch = {"x0": torch.ones(2, 3)}
    hinted.inpaint(None, batch, torch.tensor([True, False, True]), method="replace", steps=3)
    assert torch.equal(seen["batch"]["cond"]["hint"], 2 * torch.ones(2, 3))
    assert seen["options"] == {"method": "replace", "steps": 3}
    with pytest.raises(ConfigError, match="cannot inpaint"):
        HintedProcess(object(), {}).inpaint(None, batch, None)


def test_output_names_cannot_leave_the_output_folder():
    from pathlib import Path

    from diffusekit.core.app.repair import output_name

    assert output_name(Path("x/../..evil name!.png")) == "evil_name_"
    assert output_name(Path("d/.png")) == "png" and output_name(Path("...")) == "input"
    assert "/" not in output_name(Path("a\\b/../c d.wav"))


def test_inpaint_model_takes_the_sampler_and_method_of_the_inpaint_section():
    """`toolkit inpaint`'s defaults: `inpaint.sampler` (else `sample.sampler`) and the method with
    `inpaint.reconstruction`; the command line's --sampler wins."""
    from types import SimpleNamespace

    from diffusekit.core.app.repair import inpaint_model
    from diffusekit.plugins.domain import Damaged

    seen = []

    class Process:
        def inpaint(self, network, batch, known, **options):
            seen.append(options)
            return batch["x0"]

    def model(inpaint):
        cfg = OmegaConf.create({"seed": 0, "sample": {"sampler": "dpmpp_2m", "steps": 3}, "inpaint": inpaint})
        return SimpleNamespace(cfg=cfg, network=None, process=Process(), domain=SimpleNamespace(name="fake"))

    damaged = Damaged(batch={"x0": torch.zeros(1, 4)}, known=torch.ones(1, 4, dtype=torch.bool))
    inpaint_model(model({"sampler": "ddpm", "reconstruction": 10.0}), damaged, progress=False)
    inpaint_model(model({"sampler": None}), damaged, progress=False)
    inpaint_model(model({"sampler": "ddpm"}), damaged, sampler="heun", progress=False)
    assert [o["sampler"] for o in seen] == ["ddpm", "dpmpp_2m", "heun"]
    assert seen[0]["method"] == Replace(reconstruction=10.0) and seen[1]["method"] == Replace()
    assert seen[0]["steps"] == 3


def test_inpaint_runs_where_sample_device_says_and_puts_the_network_back():
    """`toolkit inpaint` repairs on `sample.device` (auto: a GPU when torch sees one): the network
    is there during the repair, with the noise generator beside it, and back where it was after,
    also when the repair fails; the result comes back on the CPU. A device torch does not know,
    or a GPU it does not see, is one ConfigError."""
    from types import SimpleNamespace

    from diffusekit.core.app.repair import generator_for, inpaint_model
    from diffusekit.core.app.training.inference import network_on
    from diffusekit.plugins.domain import Damaged

    seen = []

    class Process:
        def inpaint(self, network, batch, known, *, generator, **options):
            seen.append((next(network.parameters()).device, generator.device, batch["x0"].device))
            if options["steps"] == 13:
                raise RuntimeError("the repair failed")
            return network(batch["x0"])

    network = torch.nn.Linear(4, 4)
    expected = "cuda" if torch.cuda.is_available() else "cpu"

    def model(device):
        cfg = OmegaConf.create({"seed": 0, "sample": {"steps": 2, "device": device}})
        return SimpleNamespace(cfg=cfg, network=network, process=Process(),
                               domain=SimpleNamespace(name="fake"))

    damaged = Damaged(batch={"x0": torch.ones(1, 4)}, known=torch.zeros(1, 4, dtype=torch.bool))
    for device in ("auto", "cpu"):
        out = inpaint_model(model(device), damaged, n=2, progress=False)
        assert out.device.type == "cpu" and out.shape == (2, 4)
        torch.testing.assert_close(out, network(torch.ones(2, 4)).detach())
    assert [tuple(d.type for d in s) for s in seen] == [(expected,) * 3, ("cpu",) * 3]
    with pytest.raises(RuntimeError, match="the repair failed"):
        inpaint_model(model("auto"), damaged, steps=13, progress=False)
    assert next(network.parameters()).device.type == "cpu"  # put back after a failure too
    with pytest.raises(ConfigError, match="not a device"):
        inpaint_model(model("tpu9"), damaged, progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no GPU"):
            inpaint_model(model("cuda"), damaged, progress=False)
    # a plain denoiser function has no device of its own: its noise is drawn on the CPU
    denoiser = lambda x, t: x  # noqa: E731
    with network_on(denoiser, torch.device("cpu")) as device:
        assert device.type == "cpu"
    assert generator_for(denoiser, 3).device.type == "cpu"
    assert torch.equal(torch.randn(5, generator=generator_for(network, 3)),
                       torch.randn(5, generator=torch.Generator().manual_seed(3)))


def test_inpaint_model_averages_repairs_through_the_domain():
    """--average K (`inpaint.average`): each repair the domain's mean of K, the k-th drawn with
    seed + k; a domain whose repairs are not averaged, or K < 1, is one ConfigError."""
    from types import SimpleNamespace

    from diffusekit.core.app.repair import inpaint_model
    from diffusekit.plugins.domain import Damaged

    class Process:
        def inpaint(self, network, batch, known, *, generator, **options):
            return batch["x0"] + torch.randn(batch["x0"].shape, generator=generator)

    def model(mean, average=1):
        cfg = OmegaConf.create({"seed": 5, "sample": {"steps": 2}, "inpaint": {"average": average}})
        domain = SimpleNamespace(name="fake", repair_mean=lambda: mean)
        return SimpleNamespace(cfg=cfg, network=None, process=Process(), domain=domain)

    damaged = Damaged(batch={"x0": torch.zeros(1, 6)}, known=torch.zeros(1, 6, dtype=torch.bool))
    stack_mean = lambda draws: torch.stack(draws).mean(0)  # noqa: E731
    draws = [torch.randn((3, 6), generator=torch.Generator().manual_seed(5 + k)) for k in range(4)]
    got = inpaint_model(model(stack_mean), damaged, n=3, average=4, progress=False)
    assert torch.allclose(got, torch.stack(draws).mean(0))
    assert torch.equal(inpaint_model(model(stack_mean, average=4), damaged, n=3, progress=False), got)
    one = inpaint_model(model(stack_mean), damaged, n=3, progress=False)  # the default: one draw
    assert torch.equal(one, draws[0])
    assert one.std() > 2 * got.std()  # the mean of 4 draws of N(0, 1) has std 1/2
    with pytest.raises(ConfigError, match="'fake' domain's repairs cannot be averaged"):
        inpaint_model(model(None), damaged, average=2, progress=False)
    with pytest.raises(ConfigError, match="inpaint.average must be >= 1"):
        inpaint_model(model(stack_mean, average=0), damaged, progress=False)


def test_hole_scores_are_exact_on_a_known_error():
    truth = torch.zeros(1, 1, 16, 16)
    repaired = truth.clone()
    fill = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    fill[..., 2:4, 2:4] = True
    repaired[fill] = 51.0  # 51 grey levels off on the hole, exact outside
    scores = hole_scores(repaired, truth, fill)
    assert float(scores["hole_psnr"][0]) == pytest.approx(20 * math.log10(255 / 51), abs=1e-6)
    assert float(hole_scores(truth, truth, fill)["hole_ssim"][0]) == pytest.approx(1.0)


@pytest.mark.parametrize("channels", [1, 3])
def test_biharmonic_fills_a_smooth_image_and_keeps_the_rest(channels):
    ys, xs = torch.meshgrid(torch.linspace(-0.5, 0.5, 20), torch.linspace(-0.5, 0.5, 24),
                            indexing="ij")
    planes = [ys + xs, ys - xs, 0.5 * ys][:channels]  # linear: biharmonic fills them exactly
    image = torch.stack(planes)[None]
    fill = torch.zeros(1, 1, 20, 24, dtype=torch.bool)
    fill[..., 6:13, 8:16] = True
    damaged = torch.where(fill, torch.zeros_like(image), image)
    out = biharmonic(damaged, fill)
    assert out.shape == image.shape
    torch.testing.assert_close(out[~fill.expand_as(out)], image[~fill.expand_as(image)])
    assert float((out - image).abs().max()) < 1e-3


def test_timing_line_says_when_the_base_was_trained_by_an_earlier_start():
    clock = {"train_steps": 100, "load_average_start": 1.0, "load_average_end": 2.0}
    fresh = BenchmarkRun.timing_line({**clock, "train_seconds": 50.0, "seconds": 80.0})
    reloaded = BenchmarkRun.timing_line({**clock, "train_seconds": 500.0, "seconds": 80.0})
    assert "100 steps in 50.0 s; the whole benchmark 80.0 s" in fresh and "earlier" not in fresh
    assert "500.0 s over all its starts, part or all of it by an earlier start" in reloaded
