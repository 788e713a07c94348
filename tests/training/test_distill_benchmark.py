"""The distillation benchmark (`toolkit benchmark --distill`) at tiny size on the toy domain: a
teacher and its student through the toolkit's trainer, every setting scored, the record and its
targets; the NFE accounting of the teacher's samplers."""

from __future__ import annotations

import json

import pytest
import torch

from diffusekit.core.app.distill_benchmark import cost, run_distill_benchmark, steps_within, summary
from diffusekit.core.errors import ConfigError

TINY = ["distill.benchmark.teacher_steps=6", "distill.benchmark.student_steps=4", "distill.benchmark.n=24",
        "distill.benchmark.nfe=[1,2]", "distill.benchmark.reference_nfe=4", "distill.benchmark.target_nfe=2",
        "distill.benchmark.samplers=[ddim,heun]", "distill.benchmark.renoise_max=[0.5,1.0]",
        "distill.benchmark.grids=[uniform,log_snr]", "distill.guidance=[0,0]", "distill.grid_steps=6", "sample.batch_size=16",
        "distill.benchmark.metric=radius", "distill.benchmark.target_vs_reference=1.5",
        "distill.benchmark.target_vs_same_nfe=0.5", "distill.benchmark.within={mean_error: 10.0}"]


def test_budgets_count_heun_and_guidance():
    assert [cost("heun", n, 1) for n in (1, 2, 3)] == [1, 3, 5]
    assert cost("ddim", 3, 2) == 6  # classifier-free guidance: two calls a step
    assert steps_within("heun", 4, 1) == 2 and steps_within("dpmpp_2m", 4, 2) == 2
    assert steps_within("ddim", 1, 2) == 0  # a guided step does not fit one NFE


def test_tiny_benchmark_writes_its_record(toy, toy_cfg, tmp_path):
    cfg = toy_cfg(*TINY, f"distill.benchmark.results_dir={tmp_path / 'out'}")
    metrics = run_distill_benchmark(toy, cfg)
    rows = metrics["rows"]
    students = [(r["system"], r["sampler"], r["steps"], r["nfe"]) for r in rows if r["system"] != "teacher"]
    assert students == [("student, renoise_max 0.5", "consistency", 1, 1), ("student, renoise_max 0.5", "consistency", 2, 2),
                        ("student, renoise_max 1", "consistency", 2, 2)]  # one step never re-noises
    teacher = {(r["sampler"], r["steps"], r["grid"]): r["nfe"] for r in rows if r["system"] == "teacher"}
    # budgets 1, 2, 4: ddim 1, 2, 4 steps; heun 1, 1, 2 steps (counted: 1, 1, 3 calls a sample); each
    # on both grids but one step ([t_max, 0] on any grid)
    assert teacher == {("ddim", 1, "uniform"): 1, ("ddim", 2, "uniform"): 2, ("ddim", 2, "log_snr"): 2,
                       ("ddim", 4, "uniform"): 4, ("ddim", 4, "log_snr"): 4, ("heun", 1, "uniform"): 1,
                       ("heun", 2, "uniform"): 3, ("heun", 2, "log_snr"): 3}
    assert all(r["seconds_per_sample"] > 0 and r["radius"] >= 0 for r in rows)
    assert metrics["metric"] == "radius" and set(metrics["per_nfe"]) == {1, 2, 4}
    assert set(metrics["targets"]) == {"vs_reference", "vs_same_nfe", "mean_error_within_10"}
    record = json.loads((tmp_path / "out" / "toy_distill.json").read_text())
    assert record["name"] == "toy_distill" and record["metrics"]["distill"]["steps"] == 2
    assert record["metrics"]["distill"]["guidance"] == [0, 0]  # config lists go into the JSON
    assert "teacher" not in record["metrics"]["distill"]  # a path on the machine that ran it
    text = (tmp_path / "out" / "toy_distill.md").read_text()
    assert "teacher's best" in text and "toy_distill.png" in text
    assert (tmp_path / "out" / "toy_distill.png").is_file()


def rows(values):
    return [{"system": s, "sampler": "x", "grid": "uniform", "steps": n, "nfe": n, "seconds_per_sample": 1.0, "fd": v}
            for s, n, v in values]


def test_summary_compares_with_the_best_teacher_in_each_budget_and_judges_targets():
    opts = {"metric": "fd", "higher_is_better": False, "nfe": [1, 4], "reference_nfe": 50, "target_nfe": 4,
            "target_vs_reference": 1.3, "target_vs_same_nfe": 0.5, "within": {}}
    m = summary(rows([("student", 1, 30.0), ("student", 4, 12.0), ("teacher", 1, 90.0), ("teacher", 3, 40.0),
                      ("teacher", 4, 30.0), ("teacher", 50, 10.0), ("teacher", 49, 11.0)]), opts)
    assert m["per_nfe"][4]["teacher_best"] == 30.0 and m["per_nfe"][50]["teacher_best"] == 10.0
    assert m["student_over_reference"] == pytest.approx(1.2) and m["targets"] == {"vs_reference": True,
                                                                                 "vs_same_nfe": True}
    with pytest.raises(ConfigError, match="not among the domain's metrics"):
        summary(rows([("student", 4, 1.0), ("teacher", 50, 1.0)]), {**opts, "metric": "fid"})


def test_the_figure_shows_the_samples_of_the_student_and_the_best_teacher_at_each_nfe(tmp_path):
    from PIL import Image

    from diffusekit.core.app.distill_benchmark import _plot, _shown_rows

    opts = {"metric": "fd", "higher_is_better": False, "nfe": [1, 4], "reference_nfe": 50, "target_nfe": 4,
            "target_vs_reference": None, "target_vs_same_nfe": None, "within": {}}
    m = summary(rows([("student", 1, 30.0), ("student", 4, 12.0), ("teacher", 4, 30.0), ("teacher", 3, 40.0),
                      ("teacher", 50, 10.0)]), opts)
    m["rows"] = rows([("student", 1, 30.0), ("student", 4, 12.0), ("teacher", 4, 30.0), ("teacher", 3, 40.0),
                      ("teacher", 50, 10.0)])
    shown = {i: torch.rand(8, 1, 6, 6) * 2 - 1 for i in range(5)}
    picked = [label.split("\n")[0] for label, _ in _shown_rows(m, shown)]
    # NFE 1: the student (no teacher setting fits); 4: both, the teacher's best of 3 and 4 NFE; 50: the teacher
    assert picked == ["student 1 NFE", "student 4 NFE", "teacher 4 NFE", "teacher 50 NFE"]
    path = _plot(m, opts, tmp_path / "figure.png", "title", shown)
    with_pictures = Image.open(path).size
    _plot(m, opts, tmp_path / "plain.png", "title")  # samples that are not images: the curves only
    assert with_pictures[1] > Image.open(tmp_path / "plain.png").size[1]
