"""The mixture distillation benchmark at tiny size: the record's schema and files, the step
budgets of the teacher's samplers, and a distilled student that beats one step of DDIM."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: `benchmarks`

from benchmarks import distill_mixture as bench  # noqa: E402


def test_the_distance_is_core_sliced_wasserstein():
    from diffusekit.core.analytic import GaussianMixture, sliced_wasserstein

    mix = GaussianMixture.random(dim=4, n_modes=3)
    a, b = mix.sample(300, torch.Generator().manual_seed(1)), mix.sample(300, torch.Generator().manual_seed(2))
    core = float(sliced_wasserstein(a, b, 16, torch.Generator().manual_seed(0)))
    assert bench.Distance(b, 16)(a) == pytest.approx(core, rel=1e-9)


def test_teacher_steps_fit_the_nfe_budget():
    assert [bench.teacher_steps("heun", n) for n in (1, 2, 4, 8, 10)] == [1, 1, 2, 4, 5]  # 2n - 1 NFE
    assert bench.teacher_steps("dpmpp_2m", 8) == 8


def test_tiny_run_writes_the_record_and_the_student_learns(tmp_path):
    torch.set_num_threads(1)
    settings = bench.Settings(train_steps={"ring_2d": 150, "random_16d": 20}, width={"ring_2d": 64, "random_16d": 32},
                              eval_n={"ring_2d": 2000, "random_16d": 500}, batch=256, seeds=(0,),
                              teacher_nfe=(1, 2, 10), student_nfe=(1, 2), projections=16, guided_steps=20,
                              guided_w=(1.0,), grid_steps=10)
    record = bench.run_benchmark(settings, tmp_path, log=lambda *_: None)
    for suffix in ("json", "md", "png"):
        assert (tmp_path / f"distill_mixture.{suffix}").is_file()
    saved = json.loads((tmp_path / "distill_mixture.json").read_text())
    assert saved["name"] == "distill_mixture" and set(saved["metrics"]) >= {"ring_2d", "random_16d", "guided"}
    ring = record["metrics"]["ring_2d"]
    assert set(ring["student"]) == {"1", "2"} and set(ring["teacher"]) == {"1", "2", "10"}
    # 150 steps already put one consistency step closer to the ring than one step of any sampler
    assert ring["student"]["1"]["mean"] < 0.85 * ring["teacher"]["1"]["best"]  # measured 0.98 vs 1.41
    assert "Target: the student at 2 NFE" in (tmp_path / "distill_mixture.md").read_text()
    assert set(record["metrics"]["guided"]["rows"]["1.0"]) >= {"student_2", "teacher_4", "teacher_10"}
