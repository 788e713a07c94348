"""`toolkit distill` end to end on the toy domain: a 10-step teacher distilled into full and LoRA
consistency students that `toolkit sample` / `evaluate` sample with the consistency sampler at the
student's steps, the resume, and the bad inputs (one line each)."""

import json

import pytest
import torch
from omegaconf import OmegaConf
from toy_domain import ToyDomain
from toy_runs import new_run, points

from diffusekit.core.app.distill import StudentProcess
from diffusekit.core.app.training.models import load_model

DISTIL = ["distill.max_steps=6", "checkpoint_every=3", "val_every=3", "sample.val_n=2",
          "distill.grid_steps=8"]


def distil(toolkit, tmp_path, *args):
    """Run `toolkit distill *args` (6 steps); return the new run folder."""
    before = list((tmp_path / "runs" / "toy").iterdir())
    code, out, err = toolkit("distill", *args, *DISTIL)
    assert code == 0, err
    assert "distilled a" in out
    return new_run(tmp_path, before)


def test_a_full_student_samples_with_the_consistency_sampler_at_its_steps(toolkit, trained_run, tmp_path):
    run = distil(toolkit, tmp_path, "--run", str(trained_run), "distill.steps=2", "distill.lr=0.002")
    cfg = OmegaConf.load(run / "config.yaml")
    assert cfg.sample.sampler == "consistency" and cfg.sample.steps == 2 and cfg.optim.lr == 0.002
    assert cfg.distill.teacher == cfg.init_from == str(trained_run) and cfg.ema.decay == 0.95
    assert (run / "model.safetensors").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert json.loads((run / "metrics.json").read_text())["step"] == 6
    assert (run / "samples" / "step-000006" / "points.csv").is_file()  # validation samples

    code, out, err = toolkit("sample", "--run", str(run), "-n", "8", "--seed", "1")
    assert code == 0, err
    assert points(run / "samples" / "consistency-2").shape == (8, 2)  # the run's sampler and steps
    code, out, err = toolkit("evaluate", "--run", str(run), "-n", "16")
    assert code == 0, err
    assert "with consistency, 2 steps" in out

    student, teacher = load_model(run, domain=ToyDomain()), load_model(trained_run, domain=ToyDomain())
    assert isinstance(student.process, StudentProcess) and student.process.teacher is None
    assert student.process.settings.steps == 2
    # the student started from the teacher's weights and moved away from them
    moved = [not torch.equal(a, b) for a, b in zip(student.network.state_dict().values(),
                                                    teacher.network.state_dict().values())]
    assert any(moved)


def test_a_lora_student_is_an_adapter_on_the_teacher(toolkit, base, tmp_path):
    run = distil(toolkit, tmp_path, "--model", str(base), "distill.kind=lora", "distill.steps=1")
    assert not (run / "model.safetensors").exists()
    adapter = run / "adapter"
    assert {p.name for p in adapter.iterdir()} >= {"adapter_model.safetensors", "adapter_config.json",
                                                   "base.json"}
    assert json.loads((adapter / "base.json").read_text())["id"] == str(base.resolve())
    code, out, err = toolkit("sample", "--run", str(run), "-n", "4", "--seed", "2")
    assert code == 0, err
    assert points(run / "samples" / "consistency-1").shape == (4, 2)
    model = load_model(run, domain=ToyDomain())
    assert isinstance(model.process, StudentProcess)
    assert any("lora_" in name for name, _ in model.network.named_parameters())


def test_a_distillation_run_resumes_from_its_checkpoint(toolkit, trained_run, tmp_path):
    run = distil(toolkit, tmp_path, "--run", str(trained_run))
    code, out, err = toolkit("distill", "--resume", str(run), "trainer.max_steps=9")
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["step"] == 9 and metrics["resumed_at_steps"] == [6]
    code, out, err = toolkit("train", "--resume", str(run), "trainer.max_steps=12")  # the same run
    assert code == 0, err
    assert json.loads((run / "metrics.json").read_text())["step"] == 12


def one_error_line(result):
    code, out, err = result
    assert code != 0 and len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in out
    return err[0]


@pytest.mark.parametrize("args, message", [
    (["distill.steps=0"], "distill.steps must be a whole number > 0"),
    (["distill.steps=-2"], "distill.steps must be a whole number > 0"),
    (["distill.kind=half"], "distill.kind='half' is not known"),
    (["distill.solver=nope"], "nope"),
    (["distill.guidance=2"], "has no classifier-free guidance"),
    (["distill.guidance=[3,1]"], "w_min <= w_max"),
])
def test_bad_distill_settings_are_one_line_each(toolkit, trained_run, args, message):
    assert message in one_error_line(toolkit("distill", "--run", str(trained_run), *args))


def test_bad_teachers_are_one_line_each(toolkit, trained_run, tmp_path):
    line = one_error_line(toolkit("distill", "--run", str(trained_run), "--domain", "example"))
    assert "is of domain 'toy', not 'example'" in line
    line = one_error_line(toolkit("distill", "--run", str(tmp_path / "nowhere")))
    assert "nowhere" in line
    student = distil(toolkit, tmp_path, "--run", str(trained_run))
    line = one_error_line(toolkit("distill", "--run", str(student)))
    assert "is itself a distilled student" in line
    line = one_error_line(toolkit("distill", "--resume", str(trained_run)))
    assert "is not a distillation run" in line
    line = one_error_line(toolkit("distill"))
    assert "exactly one of --run RUN and --model" in line


def test_the_student_grid_starts_at_t_max_and_renoises_below_renoise_max():
    from diffusekit.core import schedules
    from diffusekit.core.app.distill import student_grid

    schedule = schedules.get("vp_linear")
    assert student_grid(schedule, 2, "uniform", 0.4).tolist() == pytest.approx([1.0, 0.2, 0.0])
    assert student_grid(schedule, 4, "uniform", 1.0).tolist() == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    assert student_grid(schedule, 1, "karras", 0.3).tolist() == pytest.approx([1.0, 0.0])


def test_a_student_composes_with_inpainting(toolkit, trained_run, tmp_path):
    """The student is an ordinary denoiser: the engine's inpainting runs it with the consistency
    sampler, and the known coordinate comes back exactly."""
    from diffusekit.core import samplers
    from diffusekit.core.app.distill import student_grid
    from diffusekit.core.inpainting import inpaint

    run = distil(toolkit, tmp_path, "--run", str(trained_run), "distill.steps=2")
    model = load_model(run, domain=ToyDomain())
    process = model.process
    known = torch.tensor([[1.0, float("nan")]] * 6)
    mask = torch.tensor([[True, False]] * 6)
    ts = student_grid(process.schedule, 2, "uniform", 1.0)
    with torch.no_grad():
        x0 = inpaint(samplers.get("consistency"), process.student(model.network), torch.randn(6, 2), ts,
                     process.schedule, known, mask, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x0[:, 0], known[:, 0]) and torch.isfinite(x0).all()


def test_a_student_samples_with_any_sampler(toolkit, trained_run, tmp_path):
    run = distil(toolkit, tmp_path, "--run", str(trained_run))
    code, out, err = toolkit("sample", "--run", str(run), "--sampler", "dpmpp_2m", "--steps", "3", "-n", "4")
    assert code == 0, err
    assert points(run / "samples" / "dpmpp_2m-3").shape == (4, 2)
