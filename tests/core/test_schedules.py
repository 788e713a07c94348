"""Schedules: the registry's contract, exact inverses, known values, and the time grids."""

import math

import pytest
import torch

from diffusekit.core import schedules
from diffusekit.core.registry import UnknownNameError

ALL = schedules.names()
F64 = torch.float64


def test_builtin_names_registered():
    assert {"vp_linear", "vp_cosine", "vp_discrete", "edm", "ve", "flow"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_log_snr_is_decreasing_and_consistent_with_alpha_sigma(name):
    s = schedules.get(name)
    t = torch.linspace(1e-4, s.t_max, 2001, dtype=F64)
    lam = s.log_snr(t)
    assert torch.all(lam[1:] < lam[:-1]), "log-SNR must be strictly decreasing"
    alpha, sigma = s.alpha_sigma(t)
    assert torch.allclose(torch.log(alpha**2 / sigma**2), lam, atol=1e-8, rtol=1e-8)
    if s.variance_preserving:
        assert torch.allclose(alpha**2 + sigma**2, torch.ones_like(t), atol=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_t_of_log_snr_inverts_log_snr(name):
    s = schedules.get(name)
    t = torch.linspace(2e-3, s.t_max, 997, dtype=F64)
    assert torch.allclose(s.t_of_log_snr(s.log_snr(t)), t, atol=1e-9)


@pytest.mark.parametrize("name", ALL)
def test_t_zero_is_the_data(name):
    s = schedules.get(name)
    zero = torch.zeros(1, dtype=F64)
    assert s.alpha(zero).item() == 1.0 and s.sigma(zero).item() == 0.0
    assert math.isinf(s.log_snr(zero).item()) and s.log_snr(zero).item() > 0


def test_vp_linear_matches_ddpm_betas():
    """Continuous VP-linear equals DDPM's linear betas in the limit N -> inf (Song et al. 2021)."""
    s = schedules.get("vp_linear")
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
    ab = torch.cumprod(1 - betas, 0)
    t = torch.arange(1, 1001, dtype=F64) / 1000
    # log alpha_bar agrees to within the O(beta^2) and half-step terms the continuum drops
    assert torch.allclose(torch.log(s.alpha(t) ** 2), torch.log(ab), atol=0.08)
    assert torch.allclose(s.alpha(t) ** 2, ab, atol=2e-3)


def test_vp_discrete_is_exact_at_its_grid_points():
    s = schedules.get("vp_discrete")
    ab = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=F64), 0)
    t = torch.arange(1, 1001, dtype=F64) / 1000
    assert torch.allclose(s.alpha(t) ** 2, ab, rtol=1e-12, atol=1e-15)
    custom = schedules.get("vp_discrete", alphas_cumprod=(0.9, 0.5, 0.1))
    assert custom.n_train_steps == 3
    assert torch.allclose(custom.alpha(torch.tensor([1 / 3, 2 / 3, 1.0], dtype=F64)) ** 2,
                          torch.tensor([0.9, 0.5, 0.1], dtype=F64))


def test_vp_discrete_rejects_increasing_alphas():
    with pytest.raises(ValueError, match="non-increasing"):
        schedules.get("vp_discrete", alphas_cumprod=(0.5, 0.9))


def test_vp_cosine_matches_nichol_dhariwal():
    s = schedules.get("vp_cosine")
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0.1, 0.5, 0.9):
        assert s.alpha(torch.tensor(t, dtype=F64)).item() ** 2 == pytest.approx(f(t) / f(0), rel=1e-12)


def test_flow_and_edm_closed_forms():
    t = torch.tensor([0.25, 0.5], dtype=F64)
    flow = schedules.get("flow")
    assert torch.allclose(flow.alpha(t), 1 - t) and torch.allclose(flow.sigma(t), t)
    edm = schedules.get("edm")
    assert torch.allclose(edm.sigma(t), 80 * t) and torch.allclose(edm.alpha(t), torch.ones_like(t))


def test_rescale_zero_terminal_snr():
    """Lin et al. 2024: the last step has zero SNR, the first keeps its value."""
    base = schedules.get("vp_discrete")
    z = schedules.rescale_zero_terminal_snr(base)
    one, first = torch.tensor(1.0, dtype=F64), torch.tensor(1e-3, dtype=F64)
    assert z.alpha(one).item() == 0.0
    assert z.alpha(first).item() == pytest.approx(base.alpha(first).item(), rel=1e-12)
    assert torch.all(z.alphas_cumprod_tensor[1:] <= z.alphas_cumprod_tensor[:-1])
    cont = schedules.rescale_zero_terminal_snr(schedules.get("vp_linear"))
    assert cont.alpha(one).item() == 0.0
    with pytest.raises(ValueError):
        schedules.rescale_zero_terminal_snr(schedules.get("edm"))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("kind", ["uniform", "trailing", "karras", "log_snr"])
@pytest.mark.parametrize("n", [1, 2, 7, 50])
def test_time_grid_contract(name, kind, n):
    s = schedules.get(name)
    ts = schedules.time_grid(s, n, kind)
    assert ts.shape == (n + 1,) and ts.dtype == F64
    assert ts[0].item() == pytest.approx(s.t_max) and ts[-1].item() == 0.0
    assert torch.all(ts[1:] < ts[:-1]), f"{kind} grid not strictly descending: {ts}"


def test_karras_grid_is_edm_discretisation():
    """EDM eq. 5 with sigma_min 0.002, sigma_max 80, rho 7."""
    s = schedules.get("edm")
    n = 18
    sig = s.sigma(schedules.time_grid(s, n, "karras"))
    i = torch.arange(n, dtype=F64)
    ref = (80 ** (1 / 7) + i / (n - 1) * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert torch.allclose(sig[:-1], ref, rtol=1e-10)


def test_log_snr_grid_is_evenly_spaced_in_log_snr():
    s = schedules.get("vp_linear")
    lam = s.log_snr(schedules.time_grid(s, 10, "log_snr")[:-1])
    steps = lam[1:] - lam[:-1]
    assert torch.allclose(steps, steps.mean().expand_as(steps), rtol=1e-8)


def test_trailing_snaps_to_training_grid():
    s = schedules.get("vp_discrete")
    ts = schedules.time_grid(s, 7, "trailing")
    k = ts * 1000
    assert torch.allclose(k, k.round()) and ts[0].item() == 1.0


def test_unknown_names_are_clear_errors():
    with pytest.raises(UnknownNameError, match="did you mean 'vp_cosine'"):
        schedules.get("vp_cosin")
    with pytest.raises(UnknownNameError, match="known: karras"):
        schedules.time_grid(schedules.get("edm"), 5, "bogus")
    with pytest.raises(ValueError):
        schedules.time_grid(schedules.get("edm"), 0)


def test_vp_polynomial_is_edms_polynomial_2_at_its_training_steps():
    """EDM's `polynomial_schedule(1000, s=1e-5, power=2)` (Hoogeboom et al. 2022), written out
    with numpy: alpha^2 on t = k / N, each step's ratio clipped at 0.001, then the precision s."""
    import numpy as np

    n, s = 1000, 1e-5
    a = (1 - (np.arange(n + 1) / n) ** 2) ** 2
    a = np.cumprod(np.clip(a / np.concatenate([[1.0], a[:-1]]), 0.001, 1.0))
    alphas2 = (1 - 2 * s) * a + s
    schedule = schedules.get("vp_polynomial")
    t = torch.arange(1, n + 1, dtype=F64) / n
    assert torch.allclose(schedule.alpha(t) ** 2, torch.from_numpy(alphas2[1:]), rtol=1e-12)
    assert schedule.alpha(torch.zeros((), dtype=F64)) == 1  # t = 0 is the clean data
    # the SNR stays within EDM's precision bounds: log((1 - s) / s) ~ 11.5 at both ends
    assert -11.6 < float(schedule.log_snr(torch.ones((), dtype=F64))) < -11.4
    assert schedules.get("vp_polynomial", power=3.0).alpha(torch.tensor(0.5, dtype=F64)) > \
        schedule.alpha(torch.tensor(0.5, dtype=F64))
    with pytest.raises(ValueError, match="vp_polynomial"):
        schedules.get("vp_polynomial", precision=0.0)


@pytest.mark.parametrize("name", ALL)
def test_a_schedule_follows_its_times_to_their_device(name):
    """Training draws its times on the data's device (a GPU); every schedule must evaluate there.
    The meta device stands in for a GPU: a tensor left on the CPU is an error there too."""
    s = schedules.get(name)
    t = torch.rand(4, dtype=F64, device="meta")
    alpha, sigma = s.alpha_sigma(t)
    assert alpha.device == sigma.device == s.log_snr(t).device == t.device
    assert s.t_of_log_snr(s.log_snr(t)).device == t.device
