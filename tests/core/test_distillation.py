"""Consistency distillation (core/distillation.py) and the `consistency` sampler.

Invariants: the student's boundary condition f(x, t_min) = x / alpha(t_min) whatever its network
returns; CM's coefficients in VE coordinates; the grid; the teacher's ODE step through `ddim_step`
and through any registered sampler (`sampler_step`) agree with the samplers themselves; zero-CoM
states stay centred through the loss. Learning: students of the exact denoiser of the 8-mode ring
(`GaussianMixture.ring_2d`, vp_linear), trained on one CPU thread, measured by sliced W2 against
true samples, paired (student and teacher samplers start from the same noise):

    2000 steps (~25 s):  student 1 / 2 / 4 NFE  0.090 / 0.042 / 0.031;  teacher's best sampler
                         at 2 / 4 / 10 / 50 NFE  0.93 / 0.29 / 0.061 / 0.046;  floor 0.027
    6000 steps, N = 50, batch 1024 (slow, 1-2 min):  student 1 / 2 / 4 NFE  0.055 / 0.039 / 0.040

and a w-conditioned student of the class-conditional guided teacher follows w.
"""

from __future__ import annotations

import copy
import functools
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from diffusekit.core import samplers, schedules
from diffusekit.core.analytic import GaussianMixture, sliced_wasserstein
from diffusekit.core.distillation import (ConsistencyStudent, GuidanceRange, boundary_time, consistency_grid,
                                          consistency_loss, ddim_step, ema_update, per_example_guided,
                                          sampler_step)
from diffusekit.core.parameterization import guided
from diffusekit.core.spaces import ZeroCoM

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: `benchmarks`
from benchmarks.distill_mixture import MixtureNet  # noqa: E402

SCHEDULE = schedules.get("vp_linear")
RING = GaussianMixture.ring_2d()
N_EVAL, PROJECTIONS = 50_000, 32  # evaluation samples and SW directions (the floor is ~0.027)
GRIDS = {1: [1.0, 0.0], 2: [1.0, 0.2, 0.0], 4: [1.0, 0.5, 0.2, 0.05, 0.0]}  # the student's NFE -> times
TEACHER_SAMPLERS = ("ddim", "dpmpp_2m", "dpmpp_3m", "unipc")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def ring_net(n_classes: int = 0) -> nn.Module:
    """The student's network on the 2-D ring: the mixture benchmark's MLP, width 128."""
    return MixtureNet(2, 128, n_classes=n_classes)


def train(student, teacher, draw, *, steps, n_steps=30, batch=512, lr=3e-3, decay=0.95, seed=0, **loss_options):
    """Algorithm 2 of CM: Adam (cosine-decayed), the EMA target; `draw(batch, generator)` gives
    (x0, cond). Returns the EMA target, the network one samples with."""
    target = copy.deepcopy(student).requires_grad_(False)
    optimiser = torch.optim.Adam(student.parameters(), lr=lr)
    decay_lr = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x0, cond = draw(batch, generator)
        loss = consistency_loss(student, target, teacher, x0, SCHEDULE, n_steps=n_steps, weighting="inverse_step",
                                generator=generator, cond=cond, **loss_options).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        decay_lr.step()
        ema_update(target, student, decay)
    return target


def sw(a, b) -> float:
    return float(sliced_wasserstein(a.double(), b.double(), PROJECTIONS, torch.Generator().manual_seed(0)))


@functools.cache
def ring_reference() -> tuple[torch.Tensor, torch.Tensor, float]:
    """(true samples, start noise, the floor: SW between two independent true sets)."""
    true = RING.sample(N_EVAL, torch.Generator().manual_seed(1))
    noise = torch.randn(N_EVAL, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return true, noise, sw(RING.sample(N_EVAL, torch.Generator().manual_seed(10)), true)


@functools.cache
def teacher_best(nfe: int) -> float:
    """The exact teacher's best deterministic sampler at `nfe` (uniform grid, the best grid here)."""
    true, noise, _ = ring_reference()
    ts = schedules.time_grid(SCHEDULE, nfe, "uniform")
    return min(sw(samplers.get(name)(RING.denoiser(SCHEDULE), noise, ts, SCHEDULE), true) for name in TEACHER_SAMPLERS)


def student_distance(student, nfe: int, cond=None, reference=None) -> float:
    true, noise, _ = ring_reference()
    with torch.no_grad():
        x = samplers.get("consistency")(student, noise.float(), torch.tensor(GRIDS[nfe], dtype=torch.float64),
                                        SCHEDULE, generator=torch.Generator().manual_seed(3), cond=cond)
    return sw(x, true if reference is None else reference)


def draw_ring(batch, generator):
    return RING.sample(batch, generator).float(), None


# ------------------------------------------------------------------------------ the student
@pytest.mark.parametrize("name", ["vp_linear", "vp_cosine", "edm", "ve", "flow"])
def test_the_boundary_condition_holds_for_any_network_output(name):
    schedule = schedules.get(name)
    student = ConsistencyStudent(lambda x, c: torch.full_like(x, 1e30), schedule)
    x = torch.randn(16, 2, dtype=torch.float64)
    alpha_min = schedule.alpha(torch.tensor(student.t_min, dtype=torch.float64))
    t_min = torch.full((16,), student.t_min, dtype=torch.float64)
    torch.testing.assert_close(student(x, t_min), x / alpha_min, rtol=1e-15, atol=0)
    t32 = torch.tensor(student.t_min, dtype=torch.float32)  # a float32 time rounds like the boundary
    torch.testing.assert_close(student(x.float(), t32), (x / alpha_min).float(), rtol=1e-6, atol=0)
    if not schedule.variance_preserving and name != "flow":
        assert torch.equal(student(x, t_min), x)  # alpha = 1: f(x, t_min) = x exactly
    assert student(x, t_min * 1.5).abs().min() > 1e20  # just above t_min the network counts


def test_coefficients_are_cms_in_ve_coordinates_and_finite_at_zero_snr():
    schedule = schedules.get("edm")  # alpha = 1, s = sigma
    student = ConsistencyStudent(lambda x, c: x, schedule, sigma_data=0.5)
    t = torch.tensor([0.001, 0.01, 0.3, 1.0], dtype=torch.float64)
    s, s_min, sd = schedule.sigma(t), student.s_min, 0.5
    c_skip, c_out, c_in = student.coefficients(t)
    torch.testing.assert_close(c_skip, sd**2 / ((s - s_min) ** 2 + sd**2))  # CM App. C
    torch.testing.assert_close(c_out, sd * (s - s_min) / (s**2 + sd**2).sqrt())
    torch.testing.assert_close(c_in, 1 / (s**2 + sd**2).sqrt())
    flow = ConsistencyStudent(lambda x, c: x, schedules.get("flow"), noise_input="t")
    c_skip, c_out, c_in = flow.coefficients(torch.tensor([1.0], dtype=torch.float64))  # alpha = 0
    assert torch.isfinite(torch.cat([c_skip, c_out, c_in])).all() and float(c_skip) == 0.0
    assert torch.isfinite(flow(torch.randn(3, 2), torch.tensor(1.0))).all()


@pytest.mark.parametrize("name", ["vp_linear", "vp_cosine", "edm", "flow"])
def test_the_grid_is_karras_spaced_between_t_max_and_t_min(name):
    schedule = schedules.get(name)
    ts = consistency_grid(schedule, 12)
    assert ts.shape == (13,) and bool((ts[1:] < ts[:-1]).all())
    assert ts[0] == schedule.t_max and ts[-1] == boundary_time(schedule)
    s = schedule.sigma(ts[1:]) / schedule.alpha(ts[1:])  # below t_max (a zero-SNR t_max is floored)
    steps = s ** (1 / 7.0)
    torch.testing.assert_close(steps[:-1] - steps[1:], (steps[:-1] - steps[1:]).mean().expand(11), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="t_min"):
        consistency_grid(schedule, 4, t_min=1.5)


def test_ema_update_moves_the_target_towards_the_student():
    student, target = nn.Linear(2, 2), nn.Linear(2, 2)
    before = target.weight.detach().clone()
    ema_update(target, student, 0.9)
    torch.testing.assert_close(target.weight, 0.9 * before + 0.1 * student.weight.detach())
    ema_update(target, student, 0.0)
    assert torch.equal(target.weight, student.weight)


# -------------------------------------------------------------------- the teacher's ODE step
def test_ddim_step_is_the_ddim_sampler_and_any_sampler_takes_its_first_step():
    D, x = RING.denoiser(SCHEDULE), torch.randn(64, 2, dtype=torch.float64)
    t, s = torch.full((64,), 0.5, dtype=torch.float64), torch.full((64,), 0.3, dtype=torch.float64)
    by_formula = ddim_step(D, x, t, s, SCHEDULE)
    torch.testing.assert_close(by_formula, sampler_step("ddim", D, x, 0.5, 0.3, SCHEDULE), rtol=1e-12, atol=1e-12)
    seen = []  # heun's first step over [0.5, 0.3, 0] (its callback after step 0), from the state x
    samplers.get("heun")(D, x / SCHEDULE.sigma(torch.tensor(0.5, dtype=torch.float64)),
                         torch.tensor([0.5, 0.3, 0.0], dtype=torch.float64), SCHEDULE, callback=seen.append)
    torch.testing.assert_close(sampler_step("heun", D, x, 0.5, 0.3, SCHEDULE), seen[0]["x"], rtol=1e-12, atol=1e-12)
    assert (seen[0]["x"] - by_formula).abs().max() > 1e-3  # a different solver, a different step
    with pytest.raises(ValueError, match="0 < s < t"):
        sampler_step("heun", D, x, 0.3, 0.0, SCHEDULE)


def test_the_loss_trains_only_the_student_and_takes_any_sampler():
    student = ConsistencyStudent(ring_net(), SCHEDULE)
    target = copy.deepcopy(student).requires_grad_(False)
    x0 = RING.sample(32, torch.Generator().manual_seed(0)).float()
    for sampler in ("ddim", "heun", "dpmpp_2m"):
        for metric in ("l2", "pseudo_huber"):
            loss = consistency_loss(student, target, RING.denoiser(SCHEDULE), x0, SCHEDULE, n_steps=8, sampler=sampler,
                                    metric=metric, generator=torch.Generator().manual_seed(1))
            assert loss.shape == (32,) and torch.isfinite(loss).all() and bool((loss >= 0).all())
            loss.mean().backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in target.parameters())


class VEIdentity(nn.Module):
    """f(x, t) = x / alpha(t) (+ a constant `shift`): constant along the 'ODE' of `keep_x_over_alpha`."""

    t_min = boundary_time(SCHEDULE)

    def __init__(self, shift: float | torch.Tensor = 0.0) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, x, t, **cond):
        return x / SCHEDULE.alpha(t.double()).reshape(-1, *[1] * (x.dim() - 1)).to(x.dtype) + self.shift


def keep_x_over_alpha(x, t, **cond):
    """A teacher D = x / alpha(t), whose DDIM step is x_s = (alpha_s / alpha_t) x: it keeps x / alpha."""
    return VEIdentity()(x, t)


def test_the_loss_is_zero_when_student_and_target_agree_across_the_step():
    x0 = RING.sample(16, torch.Generator().manual_seed(0))
    for weighting in ("uniform", "inverse_step"):
        loss = consistency_loss(VEIdentity(), None, keep_x_over_alpha, x0, SCHEDULE, weighting=weighting,
                                generator=torch.Generator().manual_seed(0))
        assert float(loss.abs().max()) < 1e-20
    loss = consistency_loss(VEIdentity(0.1), VEIdentity(), keep_x_over_alpha, x0, SCHEDULE,
                            generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loss, torch.full((16,), 0.01, dtype=torch.float64))  # |0.1|^2 per dof


# ------------------------------------------------------------------------------ zero-CoM
def test_zero_com_states_stay_centred_through_the_loss_and_the_sampler():
    mask = (torch.arange(6)[None, :] < torch.tensor([6, 4, 3])[:, None]).float()  # 3 molecules, padding
    space = ZeroCoM(mask, n_dims=3)
    seen = []

    def uncentred_teacher(x, t, **cond):  # writes into padding and shifts off-centre
        return torch.tanh(x) + 0.5

    def spy_net(x_in, c_noise, **cond):
        seen.append(x_in.detach())
        return torch.sin(x_in) + 0.3

    student = ConsistencyStudent(spy_net, SCHEDULE)
    x0 = space.project(torch.randn(3, 6, 5))
    loss = consistency_loss(student, None, uncentred_teacher, x0 + 2.0, SCHEDULE, space=space, n_steps=6,
                            generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss).all() and len(seen) == 2  # target on x^_n, student on x_{n+1}
    for x_in in seen:
        assert space.centre_of_mass(x_in).abs().max() < 1e-5 and torch.all(x_in[mask == 0] == 0)
    # the metric ignores the centre-of-mass direction (and padding): a translated student costs nothing
    translated = VEIdentity(torch.tensor([1.0, -2.0, 0.5, 0.0, 0.0]))
    loss = consistency_loss(translated, VEIdentity(), keep_x_over_alpha, x0.double(), SCHEDULE, space=space,
                            generator=torch.Generator().manual_seed(0))
    assert float(loss.abs().max()) < 1e-20
    states = []
    samplers.get("consistency")(student, torch.randn(3, 6, 5), schedules.time_grid(SCHEDULE, 4), SCHEDULE, space=space,
                                generator=torch.Generator().manual_seed(1), callback=lambda i: states.append(i["x"]))
    for state in states:
        assert space.centre_of_mass(state).abs().max() < 1e-5 and torch.all(state[mask == 0] == 0)


# ----------------------------------------------------------------- learning on the mixture
def test_a_student_of_the_exact_teacher_beats_the_teachers_samplers_at_two_nfe():
    """2000 steps on one thread (~25 s): the student at 2 NFE is at least as close to the ring as
    the teacher's best sampler at 10 NFE, at 1 NFE far closer than the teacher at 4, and at 4 NFE
    near the two-sample floor."""
    torch.manual_seed(0)
    student = train(ConsistencyStudent(ring_net(), SCHEDULE), RING.denoiser(SCHEDULE), draw_ring, steps=2000)
    _, _, floor = ring_reference()
    d = {nfe: student_distance(student, nfe) for nfe in GRIDS}
    assert d[2] <= teacher_best(10), (d, teacher_best(10))  # measured 0.042 vs 0.061
    assert d[1] < 0.5 * teacher_best(4), (d, teacher_best(4))  # measured 0.090 vs 0.29
    assert d[4] < 1.5 * floor, (d, floor)  # measured 0.031 vs 0.027


@pytest.mark.slow
def test_a_longer_trained_student_at_one_nfe_matches_the_teacher_at_ten():
    """6000 steps, N = 50, batch 1024 (1-2 min): 1 NFE as close to the ring as the teacher's best
    sampler at 10 NFE, 2 NFE as close as its best at 50 NFE (training seed 1 measured the same)."""
    torch.manual_seed(0)
    student = train(ConsistencyStudent(ring_net(), SCHEDULE), RING.denoiser(SCHEDULE), draw_ring, steps=6000,
                    n_steps=50, batch=1024)
    d = {nfe: student_distance(student, nfe) for nfe in GRIDS}
    assert d[1] <= teacher_best(10), (d, teacher_best(10))  # measured 0.055 vs 0.061
    assert d[2] <= teacher_best(50), (d, teacher_best(50))  # measured 0.039 vs 0.046 (floor 0.027)


HALVES = [GaussianMixture(RING.means[k], RING.stds[k], torch.full((4,), 0.25, dtype=torch.float64))
          for k in ([0, 1, 2, 3], [4, 5, 6, 7])]  # class 0: the upper half of the ring, class 1: the lower


def class_teacher(x, t, label=None):
    """The exact class-conditional denoiser E[x0 | x_t, label]; label None: the whole ring."""
    if label is None:
        return RING.denoiser(SCHEDULE)(x, t)
    return torch.where(label[:, None] == 0, HALVES[0].denoiser(SCHEDULE)(x, t), HALVES[1].denoiser(SCHEDULE)(x, t))


def test_per_example_guidance_is_guided_at_a_common_scale():
    x, t = torch.randn(8, 2, dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64)
    label = torch.randint(2, (8,), generator=torch.Generator().manual_seed(0))
    w = torch.full((8,), 2.5, dtype=torch.float64)
    torch.testing.assert_close(per_example_guided(class_teacher, w, {"label": None})(x, t, label=label),
                               guided(class_teacher, 2.5, {"label": None})(x, t, label=label))


def test_a_w_conditioned_student_follows_the_guided_teacher():
    """LCM's w-conditioning on the two half rings, w in [1, 3], 1500 steps (~16 s): at w = 1 and
    w = 3 the student's 2-NFE samples of class 0 lie near the guided teacher's (50-step ODE) at the
    same w (measured 0.145 and 0.145), far nearer than the teachers at w = 1 and 3 lie to each other
    (0.55) or than the student lies to the teacher at the other scale (0.46, 0.49), and nearer than
    the guided teacher's own dpmpp_2m at 4 NFE (0.32, 0.33)."""

    def draw(batch, generator):
        label = torch.randint(2, (batch,), generator=generator)
        x0 = torch.where(label[:, None] == 0, HALVES[0].sample(batch, generator), HALVES[1].sample(batch, generator))
        return x0.float(), {"label": label}

    torch.manual_seed(0)
    student = train(ConsistencyStudent(ring_net(n_classes=2), SCHEDULE), class_teacher, draw, steps=1500,
                    guidance=GuidanceRange(uncond={"label": None}, w_min=1.0, w_max=3.0))
    _, noise, _ = ring_reference()
    label = torch.zeros(N_EVAL, dtype=torch.long)

    def teacher(w, n, kind):
        return samplers.get("dpmpp_2m")(guided(class_teacher, w, {"label": None}), noise,
                                        schedules.time_grid(SCHEDULE, n, kind), SCHEDULE, cond={"label": label})

    reference = {w: teacher(w, 50, "karras") for w in (1.0, 3.0)}
    apart = sw(reference[1.0], reference[3.0])
    for w, other in ((1.0, 3.0), (3.0, 1.0)):
        cond = {"label": label, "guidance": torch.tensor(w)}
        d_same = student_distance(student, 2, cond, reference[w])
        assert d_same < 0.4 * apart, (w, d_same, apart)
        assert d_same < 0.5 * student_distance(student, 2, cond, reference[other]), w
        assert d_same < sw(teacher(w, 4, "uniform"), reference[w]), w
