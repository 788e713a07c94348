"""Inpainting (core/inpainting.py) and sampler segments (core/samplers/segments.py), against the
exact denoiser of Gaussian mixtures, whose law given known coordinates is analytic
(`GaussianMixture.conditional`): replacement and RePaint with every sampler, the known part exact,
segments ending above t = 0, the zero-CoM frame, and the checks on bad input."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from diffusekit.core import samplers, schedules
from diffusekit.core.analytic import GaussianMixture, sliced_wasserstein
from diffusekit.core.inpainting import (
    METHODS,
    RePaint,
    Replace,
    inpaint,
    known_mask,
    renoise,
    repaint_segments,
    replacement_denoiser,
)
from diffusekit.core.registry import UnknownNameError
from diffusekit.core.spaces import Euclidean, ZeroCoM

SCHEDULE = schedules.get("vp_linear")
EXAMPLE_SAMPLER = Path(__file__).resolve().parents[2] / "plugins/example/diffusekit_example/sampler.py"
STOCHASTIC = [("ddpm", {}), ("dpmpp_2m_sde", {}), ("dpmpp_3m_sde", {}), ("ddim", {"eta": 1.0}),
              ("euler", {"S_churn": 20.0}), ("heun", {"S_churn": 20.0, "S_tmin": 0.05, "S_tmax": 50.0})]


def example_midpoint():
    """The example plugin's `sample_midpoint` (public sampler API only), loaded from its file."""
    spec = importlib.util.spec_from_file_location("_inpainting_example_sampler", EXAMPLE_SAMPLER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.sample_midpoint


# every registered sampler, and a third-party one
SAMPLERS = {**{name: samplers.get(name) for name in samplers.names()}, "midpoint": example_midpoint()}


def two_modes(a: float = 0.7, b: float = 0.7, n_unknown: int = 4, std: float = 0.3) -> GaussianMixture:
    """Two equal modes +-(a, b, ..., b) in R^(1 + n_unknown): the first coordinate picks the mode."""
    means = torch.full((2, 1 + n_unknown), b, dtype=torch.float64)
    means[:, 0] = a
    means[1] *= -1
    return GaussianMixture(means, torch.full((2,), std, dtype=torch.float64),
                           torch.full((2,), 0.5, dtype=torch.float64))


def distance_to(out: torch.Tensor, law: GaussianMixture, seed: int = 2) -> tuple[float, float]:
    """(sliced W2 of out [n, D] to exact draws of `law`, the two-sample floor: the same between
    two exact draws), on the same projections."""
    truth, other = (law.sample(out.shape[0], torch.Generator().manual_seed(seed + k)) for k in (0, 1))
    directions = lambda: torch.Generator().manual_seed(7)  # noqa: E731 - the same directions
    return (float(sliced_wasserstein(out, truth, 64, directions())),
            float(sliced_wasserstein(other, truth, 64, directions())))


def counted(denoiser):
    """(denoiser with a call counter, the counter [calls]): the NFE of a run."""
    calls = [0]

    def wrapped(x, t, **cond):
        calls[0] += 1
        return denoiser(x, t, **cond)

    return wrapped, calls


def inpaint_mixture(mixture, mask, known, sampler, steps, method, n=2000, seed=0):
    """(x [n, D] inpainted with the exact denoiser, the NFE); known [D] for every sample."""
    denoiser, calls = counted(mixture.denoiser(SCHEDULE))
    noise = torch.randn(n, mixture.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = inpaint(samplers.get(sampler), denoiser, noise, schedules.time_grid(SCHEDULE, steps), SCHEDULE,
                known.expand(n, -1), mask, method=method, generator=torch.Generator().manual_seed(seed + 1))
    return x, calls[0]


# ------------------------------------------------------------------------------ the analytic truth
def test_the_conditional_of_a_mixture_is_bayes_rule():
    """conditional(known, mask) has the joint density along the unknown coordinate, normalised
    numerically on a fine grid."""
    mixture = GaussianMixture.random(dim=3, n_modes=4, seed=2)
    mask = torch.tensor([True, False, True])
    known = torch.tensor([0.4, 0.0, -1.1], dtype=torch.float64)
    u = torch.linspace(-12, 12, 24001, dtype=torch.float64)
    points = known.expand(u.shape[0], 3).clone()
    points[:, 1] = u
    joint = mixture.log_prob(points)
    log_z = torch.logsumexp(joint, 0) + math.log(float(u[1] - u[0]))  # a Riemann sum of the density
    conditional = mixture.conditional(known, mask)
    assert conditional.dim == 1
    torch.testing.assert_close(conditional.log_prob(u[:, None]), joint - log_z, rtol=0, atol=1e-8)


# ----------------------------------------------------------------------------- the building blocks
def test_the_repaint_jump_schedule():
    """Segments of jump_length counted from t = 0; each but the top one done `resamplings` times."""
    assert repaint_segments(10, 3, 1) == [(0, 1), (1, 4), (4, 7), (7, 10)]
    assert repaint_segments(10, 3, 2) == [(0, 1), (1, 4), (4, 1), (1, 4), (4, 7), (7, 4), (4, 7),
                                          (7, 10), (10, 7), (7, 10)]
    for n, j, r in [(12, 2, 10), (40, 5, 5), (7, 7, 3), (5, 9, 2), (1, 1, 4)]:
        moves = repaint_segments(n, j, r)
        down = [b - a for a, b in moves if a < b]
        up = [a - b for a, b in moves if a > b]
        top = n - j * ((n - 1) // j)
        assert sum(down) == n + (r - 1) * (n - top) and max(down) <= j and up == [j] * len(up)
        position = 0
        for a, b in moves:  # the moves chain and land on the data
            assert a == position
            position = b
        assert position == n


@pytest.mark.parametrize(("t_from", "t_to"), [(0.0, 0.3), (0.2, 0.5), (0.5, 1.0)])
def test_renoise_is_the_forward_transition(t_from, t_to):
    """x_b ~ q(x_b | x0), then renoise to t_a: x_a ~ q(x_a | x0) = N(alpha_a x0, sigma_a^2)."""
    x0 = torch.tensor([1.5, -0.5, 0.25], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    a_b, s_b = (float(v) for v in SCHEDULE.alpha_sigma(torch.tensor(t_from, dtype=torch.float64)))
    x_b = a_b * x0 + s_b * torch.randn(40000, 3, generator=g, dtype=torch.float64)
    x_a = renoise(x_b, t_from, t_to, SCHEDULE, generator=g)
    a_a, s_a = (float(v) for v in SCHEDULE.alpha_sigma(torch.tensor(t_to, dtype=torch.float64)))
    torch.testing.assert_close(x_a.mean(0), a_a * x0, rtol=0, atol=0.02)
    torch.testing.assert_close(x_a.std(0), torch.full((3,), s_a, dtype=torch.float64), rtol=0.02, atol=0)
    with pytest.raises(ValueError, match="up in time"):
        renoise(x_b, t_to, t_from, SCHEDULE)


def test_a_segment_is_the_first_steps_of_a_run():
    """ddim (first order, no history): the segment [ts[0] -> ts[4] > 0] is the state a full run
    reports after step 3, and the segment [ts[4] -> 0] from it ends where the full run ends."""
    mixture = GaussianMixture.random(dim=4, n_modes=3, seed=3)
    D, ts, ddim = mixture.denoiser(SCHEDULE), schedules.time_grid(SCHEDULE, 10), samplers.get("ddim")
    noise = torch.randn(16, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    seen = {}
    full = ddim(D, noise, ts, SCHEDULE, callback=lambda info: seen.setdefault(info["i"], info["x"]))
    start = samplers.Grid.build(SCHEDULE, ts).start_state(noise, Euclidean())
    steps = []
    middle = samplers.run_segment(ddim, D, start, ts[:5], SCHEDULE, callback=lambda info: steps.append(info["i"]))
    assert steps == [0, 1, 2, 3]  # the run's step 4 (to t = 0) is never taken
    torch.testing.assert_close(middle, seen[3], rtol=1e-12, atol=1e-12)
    end = samplers.run_segment(ddim, D, middle, ts[4:], SCHEDULE)
    torch.testing.assert_close(end, full, rtol=1e-10, atol=1e-10)


SPLIT_CASES = [(name, {}) for name in SAMPLERS] + [o for o in STOCHASTIC if o[0] in ("euler", "heun")]


@pytest.mark.parametrize(("name", "options"), SPLIT_CASES, ids=[f"{n}{'-churn' if o else ''}" for n, o in SPLIT_CASES])
def test_a_run_split_at_t_above_zero_samples_the_same_law(name, options):
    """[t_max -> t_b] then [t_b -> 0] (two `run_segment` calls, t_b halfway) against one run
    [t_max -> 0]: as close to each other as two exact draws of the mixture (sliced W2 floor), and
    the split no further from the mixture than the run. Overlapping modes (widths doubled), so
    that the distance is not dominated by how many samples each mode happens to get."""
    base = GaussianMixture.random(dim=4, n_modes=3, seed=3)
    mixture = GaussianMixture(base.means, 2 * base.stds, base.weights)
    D, ts, sample = mixture.denoiser(SCHEDULE), schedules.time_grid(SCHEDULE, 30), SAMPLERS[name]
    noise = torch.randn(3000, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    full = sample(D, noise, ts, SCHEDULE, generator=torch.Generator().manual_seed(1), **options)
    g = torch.Generator().manual_seed(2)
    start = samplers.Grid.build(SCHEDULE, ts).start_state(noise, Euclidean())
    middle = samplers.run_segment(sample, D, start, ts[:16], SCHEDULE, generator=g, **options)
    split = samplers.run_segment(sample, D, middle, ts[15:], SCHEDULE, generator=g, **options)
    (d_full, floor), (d_split, _) = distance_to(full, mixture), distance_to(split, mixture)
    between = float(sliced_wasserstein(split, full, 64, torch.Generator().manual_seed(7)))
    assert between < 1.5 * floor + 0.01, (between, floor)
    assert d_split < d_full + floor, (d_split, d_full, floor)


def test_a_sampler_that_never_reports_a_step_cannot_end_a_segment_above_zero():
    def sample_silent(denoiser, noise, ts, schedule, **options):
        return noise

    with pytest.raises(RuntimeError, match="callback"):
        samplers.run_segment(sample_silent, lambda x, t: x, torch.zeros(2, 3),
                             torch.tensor([1.0, 0.5, 0.2], dtype=torch.float64), SCHEDULE)


# ------------------------------------------------------------------- the known part, every sampler
MIXTURE_12 = GaussianMixture.random(dim=12, n_modes=3, seed=1)
CASES = ([(name, {}) for name in SAMPLERS] + STOCHASTIC)


@pytest.mark.parametrize("method", [Replace(), RePaint(jump_length=2, resamplings=2)], ids=["replace", "repaint"])
@pytest.mark.parametrize(("name", "options"), CASES, ids=[f"{n}{'-' + str(o) if o else ''}" for n, o in CASES])
def test_the_known_part_is_exact_at_the_end(name, options, method):
    """Euclidean states [B, 3, 4] in float32: the result equals `known` where known, bit for bit."""
    known = MIXTURE_12.sample(8, torch.Generator().manual_seed(0)).float().reshape(8, 3, 4)
    mask = torch.rand(8, 3, 4, generator=torch.Generator().manual_seed(1)) < 0.5
    noise = torch.randn(8, 3, 4, generator=torch.Generator().manual_seed(2))
    out = inpaint(SAMPLERS[name], MIXTURE_12.denoiser(SCHEDULE), noise, schedules.time_grid(SCHEDULE, 6),
                  SCHEDULE, known, mask, method=method, generator=torch.Generator().manual_seed(3), **options)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.equal(out[mask], known[mask])
    assert not torch.equal(out[~mask], known[~mask])


@pytest.mark.parametrize("name", ["ddim", "dpmpp_2m", "heun", "unipc", "ddpm", "dpmpp_2m_sde"])
def test_the_states_known_part_follows_the_noising_path(name):
    """With D' the state's known part is alpha_t known + sigma_t z_t at every step: deterministic
    samplers keep z_t = the start noise exactly; stochastic ones keep z_t a unit Gaussian."""
    n, mixture = 4000, GaussianMixture.random(dim=4, n_modes=3, seed=3)
    known = mixture.sample(n, torch.Generator().manual_seed(0))
    mask = torch.tensor([True, False, True, False])
    noise = torch.randn(n, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    states = []
    inpaint(samplers.get(name), mixture.denoiser(SCHEDULE), noise, schedules.time_grid(SCHEDULE, 8), SCHEDULE,
            known, mask, generator=torch.Generator().manual_seed(2),
            callback=lambda info: states.append((info["t_next"], info["x"])))
    for t, x in states[:-1]:  # the last state is at t = 0: known itself (the test above)
        alpha, sigma = SCHEDULE.alpha_sigma(t)
        z = (x[:, mask] - alpha * known[:, mask]) / sigma
        if name in ("ddpm", "dpmpp_2m_sde"):
            assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.05, (float(t), float(z.mean()), float(z.std()))
        else:
            torch.testing.assert_close(z, noise[:, mask], rtol=0, atol=1e-8)


# ------------------------------------------------------------------------- against the true law
@pytest.mark.parametrize(("sampler", "steps", "method"),
                         [("ddpm", 200, Replace()), ("dpmpp_2m", 40, RePaint(jump_length=5, resamplings=5))],
                         ids=["replace-ddpm", "repaint-dpmpp_2m"])
def test_inpainting_samples_the_true_conditional(sampler, steps, method):
    """8-D mixture of 4 modes, 6 coordinates known (from a draw of the mixture): the unknown two
    are distributed as the exact conditional, within the two-sample noise. (Replacement with a
    deterministic sampler stays further off, about 0.1 here: its ODE is not the conditional's.)"""
    mixture = GaussianMixture.random(dim=8, n_modes=4, seed=0)
    mask = torch.arange(8) < 6
    known = mixture.sample(1, torch.Generator().manual_seed(5))[0]
    x, _ = inpaint_mixture(mixture, mask, known, sampler, steps, method)
    distance, floor = distance_to(x[:, ~mask], mixture.conditional(known, mask))
    assert distance < 1.5 * floor + 0.01, (distance, floor)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_repaint_is_closer_to_the_true_conditional_than_replacement_at_equal_nfe(sampler):
    """Two modes +-(0.7, 0.7, 0.7, 0.7, 0.7), std 0.3; the first coordinate known = +0.7 selects
    the + mode (the - mode keeps weight e^-10.9 in the conditional). Replacement (102 steps)
    commits about a third of the samples to the - mode before the noisy known coordinate shows
    which; RePaint (12 steps, jump_length 2, 10 resamplings: 102 NFE) redoes each stretch and
    harmonises. Measured (sliced W2, n = 2000, floor 0.015): ddpm 0.58 vs 0.32, ddim 0.65 vs 0.37."""
    mixture = two_modes()
    mask = torch.arange(5) == 0
    known = mixture.means[0]
    truth = mixture.conditional(known, mask)
    replaced, nfe_replace = inpaint_mixture(mixture, mask, known, sampler, 102, Replace())
    repainted, nfe_repaint = inpaint_mixture(mixture, mask, known, sampler, 12, RePaint(jump_length=2, resamplings=10))
    assert nfe_replace == nfe_repaint == 102
    (d_replace, floor), (d_repaint, _) = distance_to(replaced[:, ~mask], truth), distance_to(repainted[:, ~mask], truth)
    wrong = lambda x: float((x[:, 1:].mean(1) < 0).double().mean())  # noqa: E731 - share in the - mode
    assert d_repaint < 0.75 * d_replace, (d_repaint, d_replace, floor)
    assert wrong(repainted) < 0.6 * wrong(replaced), (wrong(repainted), wrong(replaced))


@pytest.mark.parametrize(("sampler", "d_plain", "d_guided"), [("ddpm", 0.57, 0.20), ("ddim", 0.65, 0.33)])
def test_reconstruction_guidance_is_closer_to_the_true_conditional(sampler, d_plain, d_guided):
    """The two-mode case above: reconstruction guidance (w_r = 5) pulls the unknown part towards
    the mode the known coordinate shows, at every step, through the gradient of how well D
    reconstructs it. Measured (sliced W2, n = 2000, floor 0.015) at 34 steps: ddpm 0.57 plain vs
    0.20 guided, ddim 0.65 vs 0.33; and closer than plain replacement at 102 steps (the guided
    run's network-call equivalents: a forward and a backward pass a call), and than RePaint at
    102 NFE (0.32, 0.37). The distance falls with the weight (w_r = 1, 2, 5)."""
    mixture = two_modes()
    mask = torch.arange(5) == 0
    known = mixture.means[0]
    truth = mixture.conditional(known, mask)
    distance = {}
    for weight in (0.0, 1.0, 2.0, 5.0):
        x, nfe = inpaint_mixture(mixture, mask, known, sampler, 34, Replace(reconstruction=weight))
        assert nfe == 34 and torch.equal(x[:, mask], known[mask].expand(len(x), -1))  # known part exact
        distance[weight] = distance_to(x[:, ~mask], truth)[0]
    replaced, _ = inpaint_mixture(mixture, mask, known, sampler, 102, Replace())
    plain_at_equal_cost = distance_to(replaced[:, ~mask], truth)[0]
    assert distance[0.0] > distance[1.0] > distance[2.0] > distance[5.0], distance
    assert distance[5.0] < 0.6 * min(distance[0.0], plain_at_equal_cost), (distance, plain_at_equal_cost)
    assert abs(distance[0.0] - d_plain) < 0.05 and abs(distance[5.0] - d_guided) < 0.05, distance


def test_reconstruction_guidance_off_is_plain_replacement_and_its_weight_is_checked():
    """w_r = 0 takes the plain path (the same numbers); a negative or non-finite weight is a
    ValueError at construction; the gradient never reaches the caller's graph."""
    mixture = GaussianMixture.random(dim=4, n_modes=3, seed=3)
    mask = torch.tensor([True, False, True, False])
    known = mixture.sample(1, torch.Generator().manual_seed(1))[0]
    plain, _ = inpaint_mixture(mixture, mask, known, "ddpm", 6, "replace", n=50)
    off, _ = inpaint_mixture(mixture, mask, known, "ddpm", 6, Replace(reconstruction=0.0), n=50)
    guided, _ = inpaint_mixture(mixture, mask, known, "ddpm", 6, Replace(reconstruction=1.0), n=50)
    assert torch.equal(plain, off) and not torch.equal(plain, guided)
    assert not guided.requires_grad and guided.grad_fn is None
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="reconstruction guidance weight"):
            Replace(reconstruction=bad)
        with pytest.raises(ValueError, match="reconstruction guidance weight"):
            RePaint(reconstruction=bad)


# ----------------------------------------------------------------------------------- zero CoM
NODE_MASK = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
KNOWN_ATOMS = torch.tensor([[1, 1, 0, 1, 0, 0], [0, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 1]], dtype=torch.bool)
MOLECULE_MIXTURE = GaussianMixture.random(dim=6 * 5, n_modes=3, seed=4)  # [N = 6, 3 positions + 2 features]


def molecule_inpaint(known, method, sampler="ddpm", mask=KNOWN_ATOMS):
    space = ZeroCoM(NODE_MASK)
    noise = torch.randn(3, 6, 5, generator=torch.Generator().manual_seed(1))
    return inpaint(samplers.get(sampler), MOLECULE_MIXTURE.denoiser(SCHEDULE), noise, schedules.time_grid(SCHEDULE, 8),
                   SCHEDULE, known, mask, space=space, method=method, generator=torch.Generator().manual_seed(2))


def molecules() -> torch.Tensor:
    """[3, 6, 5] float32 known molecules: positions far from the origin, padding zero."""
    x = torch.randn(3, 6, 5, generator=torch.Generator().manual_seed(0)) + torch.tensor([4.0, -3.0, 2.0, 0, 0])
    return x * NODE_MASK[..., None]


@pytest.mark.parametrize(("method", "sampler"), [(Replace(), "ddpm"), (RePaint(jump_length=2, resamplings=3), "ddim"),
                                               (Replace(reconstruction=3.0), "dpmpp_2m")],
                         ids=["replace-ddpm", "repaint-ddim", "guided-dpmpp_2m"])
def test_zero_com_reproduces_the_known_atoms_and_keeps_padding_zero(method, sampler):
    known = molecules()
    out = molecule_inpaint(known, method, sampler)
    atoms = KNOWN_ATOMS & NODE_MASK
    torch.testing.assert_close(out[atoms][:, :3], known[atoms][:, :3], rtol=0, atol=1e-5)  # positions, given frame
    assert torch.equal(out[atoms][:, 3:], known[atoms][:, 3:])  # features (atom types) as given
    assert torch.equal(out[~NODE_MASK], torch.zeros_like(out[~NODE_MASK]))  # padding
    assert torch.isfinite(out).all() and not torch.allclose(out[NODE_MASK & ~atoms], known[NODE_MASK & ~atoms])


def test_zero_com_inpainting_of_a_translated_molecule_is_the_translated_result():
    known = molecules()
    shift = torch.tensor([[1.5, -2.0, 0.5], [-3.0, 0.0, 7.0], [0.25, 0.5, -1.0]])[:, None, :]
    moved = torch.cat([known[..., :3] + shift, known[..., 3:]], -1) * NODE_MASK[..., None]
    out, out_moved = molecule_inpaint(known, Replace()), molecule_inpaint(moved, Replace())
    expected = torch.cat([out[..., :3] + shift, out[..., 3:]], -1) * NODE_MASK[..., None]
    torch.testing.assert_close(out_moved, expected, rtol=0, atol=1e-5)


def test_zero_com_refuses_a_partly_known_position():
    mask = KNOWN_ATOMS[..., None].expand(3, 6, 5).clone()
    mask[0, 0, 1] = False  # atom 0 of molecule 0: x and z known, y not
    with pytest.raises(ValueError, match="position"):
        molecule_inpaint(molecules(), Replace(), mask=mask)


# ------------------------------------------------------------------------------- the interface
def bad_inputs():
    """name -> (known [4, 3], mask, a function making the method, the error's words)."""
    known, mask = torch.randn(4, 3), torch.ones(4, 3, dtype=torch.bool)
    with_nan = known.clone()
    with_nan[1, 2] = float("nan")
    return {
        "mask of another shape": (known, torch.ones(4, 2, dtype=torch.bool), Replace, "does not fit"),
        "mask not 0 / 1": (known, torch.full((4, 3), 2.0), Replace, "0 / 1"),
        "known with NaN": (with_nan, mask, Replace, "NaN"),
        "known of another shape than the noise": (torch.randn(4, 2), mask[:, :2], Replace, "must match"),
        "jump_length < 1": (known, mask, lambda: RePaint(jump_length=0), "jump_length"),
        "resamplings < 1": (known, mask, lambda: RePaint(resamplings=0), "resamplings"),
    }


@pytest.mark.parametrize("case", bad_inputs())
def test_bad_input_is_refused_with_a_clear_error(case):
    known, mask, make_method, message = bad_inputs()[case]
    with pytest.raises(ValueError, match=message):
        inpaint(samplers.get("ddim"), MIXTURE_12.denoiser(SCHEDULE), torch.randn(4, 3), schedules.time_grid(SCHEDULE, 4),
                SCHEDULE, known, mask, method=make_method())


def test_methods_by_name_nan_where_unknown_and_mask_forms():
    assert {"replace", "repaint"} <= set(METHODS.names())
    with pytest.raises(UnknownNameError, match="repaint"):
        METHODS.get("repaint_v2")
    mixture = GaussianMixture.random(dim=3, n_modes=2, seed=0)
    known = mixture.sample(5, torch.Generator().manual_seed(0))
    holes = known.clone()
    holes[:, 1] = float("nan")  # NaN marks the unknown part
    run = lambda k, m, method: inpaint(samplers.get("ddpm"), mixture.denoiser(SCHEDULE), torch.ones(5, 3),  # noqa: E731
                                       schedules.time_grid(SCHEDULE, 20), SCHEDULE, k, m, method=method,
                                       generator=torch.Generator().manual_seed(1))
    full_mask = torch.tensor([True, False, True]).expand(5, 3)
    out = run(holes, torch.tensor([1, 0, 1]), "repaint")  # broadcast, 0 / 1, by name: RePaint(10, 10)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, run(known, full_mask, RePaint()), rtol=0, atol=0)
    # a leading [B, N] mask, as the spaces take it, covers every trailing entry
    assert known_mask(torch.tensor([[1, 0]] * 2), torch.zeros(2, 2, 3)).tolist() == [[[True] * 3, [False] * 3]] * 2


def test_cond_reaches_the_denoiser_and_its_prepared_fast_path_is_kept():
    mixture = GaussianMixture.random(dim=3, n_modes=2, seed=0)
    received, prepared = [], []

    class Prepared:
        def __call__(self, x, t, **cond):
            received.append(cond)
            return mixture.denoiser(SCHEDULE)(x, t)

        def prepare_times(self, times, stacked=None, **known):
            prepared.append(len(times))
            return self

    for method in (Replace(), RePaint(jump_length=2, resamplings=2)):
        received.clear()
        inpaint(samplers.get("dpmpp_2m"), Prepared(), torch.randn(4, 3), schedules.time_grid(SCHEDULE, 6), SCHEDULE,
                torch.zeros(4, 3), torch.tensor([True, False, False]), method=method, cond={"label": 3})
        assert received and all(c == {"label": 3} for c in received)
    assert prepared[0] == 6  # the whole grid at once, for the run of Replace
    wrapped = replacement_denoiser(Prepared(), torch.zeros(4, 3), torch.ones(4, 3, dtype=torch.bool), SCHEDULE)
    assert wrapped.prepare_times([torch.tensor(0.5)]) is not wrapped  # alpha, sigma made for the times


class HostRead(RuntimeError):
    """Raised when a tensor that came from the state is read on the host."""


class Watched(torch.Tensor):
    """A tensor whose descendants raise on every host read (item, tolist, bool, float, int)."""

    READS = (torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__float__,
             torch.Tensor.__int__)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in cls.READS:
            raise HostRead(f"{func.__name__} of a tensor made from the state")
        return super().__torch_function__(func, types, args, kwargs)


@pytest.mark.parametrize("method", [Replace(), RePaint(jump_length=2, resamplings=3), Replace(reconstruction=2.0)],
                         ids=["replace", "repaint", "guided"])
@pytest.mark.parametrize("sampler", ["ddpm", "dpmpp_2m", "heun"])
def test_the_state_is_never_read_on_the_host(sampler, method):
    """The noise is a `Watched` tensor, so is every state, denoiser output and result made from
    it: a run that reads one back (.item(), bool(), float(), ...) fails. The grid work on the
    host (float64 times on the CPU, per sampler run) is allowed."""
    noise = torch.randn(6, 4).as_subclass(Watched)
    with pytest.raises(HostRead):  # the tripwire works
        bool(noise[0, 0] > 0)
    mixture = GaussianMixture.random(dim=4, n_modes=3, seed=3)
    out = inpaint(samplers.get(sampler), mixture.denoiser(SCHEDULE), noise, schedules.time_grid(SCHEDULE, 6),
                  SCHEDULE, torch.ones(6, 4), torch.tensor([True, True, False, False]), method=method,
                  generator=torch.Generator().manual_seed(0))
    assert isinstance(out, Watched)
    assert torch.isfinite(out.as_subclass(torch.Tensor)).all()


def test_zero_com_completion_grows_from_the_fragment_where_the_distribution_puts_it():
    """One narrow mode: a 5-atom configuration (zero CoM) whose 3 free atoms sit 2.4 A to one side
    of the 2 known ones. Inpainting from the known pair, translated anywhere, must put the free
    atoms there, not around the pair (replacing the known atoms at their own centroid in every
    state shrank that offset by k / N a step, to 0.00)."""
    config = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0.5, 2.0, 0], [1.5, 2.5, 0], [-0.5, 2.5, 0.5]], dtype=torch.float64)
    config = config - config.mean(0)
    mixture = GaussianMixture(config.reshape(1, -1), torch.tensor([0.05], dtype=torch.float64), torch.ones(1, dtype=torch.float64))
    atoms = torch.tensor([True, True, False, False, False])
    known = (config + torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64)).float().expand(64, -1, -1).clone()
    known[:, ~atoms] = float("nan")
    space = ZeroCoM(torch.ones(64, 5, dtype=torch.bool))

    def flat_denoiser(x, t, **cond):
        return mixture.denoiser(SCHEDULE)(x.reshape(len(x), -1), t).reshape(x.shape)

    for method, sampler in [(Replace(), "ddpm"), (Replace(), "ddim"), (RePaint(jump_length=2, resamplings=3), "ddpm")]:
        out = inpaint(samplers.get(sampler), flat_denoiser, torch.randn(64, 5, 3, generator=torch.Generator().manual_seed(3)),
                      schedules.time_grid(SCHEDULE, 20), SCHEDULE, known, atoms[None, :].expand(64, -1), space=space,
                      method=method, generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(out[:, atoms], known[:, atoms], rtol=0, atol=1e-5)
        offset = out[:, ~atoms].mean(1) - out[:, atoms].mean(1)  # free atoms' centroid from the pair's
        true = (config[~atoms].mean(0) - config[atoms].mean(0)).float()
        assert float((offset - true).norm(dim=-1).mean()) < 0.15, (method, sampler, offset.mean(0), true)
