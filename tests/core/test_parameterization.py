"""Denoiser adapters: every prediction type inverts its own target, and preconditioning is EDM's."""

import math

import pytest
import torch

from diffusekit.core import schedules
from diffusekit.core.parameterization import PREDICTIONS, Denoiser, guided

F64 = torch.float64


def _state(schedule, batch=64, dim=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(batch, dim, generator=g, dtype=F64)
    eps = torch.randn(batch, dim, generator=g, dtype=F64)
    t = torch.rand(batch, generator=g, dtype=F64) * 0.98 + 0.01
    a, s = schedule.alpha_sigma(t)
    return x0, eps, t, a[:, None] * x0 + s[:, None] * eps


class Oracle(torch.nn.Module):
    """A 'network' that outputs the exact target for known (x0, eps): D must return x0 exactly."""

    def __init__(self, denoiser_of, x0, eps, t):
        super().__init__()
        self.d, self.x0, self.eps, self.t = denoiser_of, x0, eps, t
        self.seen = None

    def forward(self, x_in, c_noise):
        self.seen = (x_in, c_noise)
        return self.d().target(self.x0, self.eps, self.t)


@pytest.mark.parametrize("prediction", PREDICTIONS.names())
@pytest.mark.parametrize("schedule_name", ["vp_cosine", "vp_linear", "edm", "flow", "ve"])
def test_denoiser_recovers_x0_from_exact_target(prediction, schedule_name):
    # v holds for any schedule through x0 = (alpha x - sigma v) / (alpha^2 + sigma^2)
    sched = schedules.get(schedule_name)
    x0, eps, t, xt = _state(sched)
    holder = {}
    net = Oracle(lambda: holder["D"], x0, eps, t)
    D = Denoiser(net, sched, prediction)
    holder["D"] = D
    assert torch.allclose(D(xt, t), x0, atol=1e-9)


def test_edm_preconditioning_coefficients():
    """Karras et al. 2022 Table 1: c_in = 1/sqrt(s^2 + sd^2), c_noise = ln(s)/4 on the VE sigma."""
    sched = schedules.get("edm")
    t = torch.tensor([0.01, 0.1, 0.5], dtype=F64)
    seen = {}

    def net(x_in, c_noise):
        seen["x_in"], seen["c"] = x_in, c_noise
        return torch.zeros_like(x_in)

    x = torch.ones(3, 2, dtype=F64)
    out = Denoiser(net, sched, "edm")(x, t)
    sigma = 80 * t
    assert torch.allclose(seen["x_in"][:, 0], 1 / torch.sqrt(sigma**2 + 0.25))
    assert torch.allclose(seen["c"], torch.log(sigma) / 4)
    assert torch.allclose(out[:, 0], 0.25 / (sigma**2 + 0.25))  # c_skip x with F = 0


def test_edm_preconditioning_on_vp_uses_ve_coordinates():
    """On a VP schedule the network still sees unit-variance input: c_in x / alpha."""
    sched = schedules.get("vp_cosine")
    x0, eps, t, xt = _state(sched, batch=20000, dim=1)
    seen = {}

    def net(x_in, c_noise):
        seen["x_in"] = x_in
        return torch.zeros_like(x_in)

    Denoiser(net, sched, "edm", sigma_data=1.0)(xt, t)
    assert seen["x_in"].var().item() == pytest.approx(1.0, abs=0.05)


def test_noise_inputs_and_scalar_time():
    sched = schedules.get("vp_linear")
    seen = {}

    def net(x_in, c_noise):
        seen["c"] = c_noise
        return torch.zeros_like(x_in)

    x = torch.zeros(4, 3)
    Denoiser(net, sched, "eps", noise_input="t1000")(x, torch.tensor(0.25))
    assert seen["c"].shape == (4,) and torch.allclose(seen["c"], torch.full((4,), 250.0))
    Denoiser(net, sched, "eps", noise_input="log_snr")(x, 0.5)
    assert torch.allclose(seen["c"], sched.log_snr(torch.full((4,), 0.5)).float())
    assert seen["c"].dtype == torch.float32


def test_denoiser_forwards_conditioning_and_is_a_module():
    lin = torch.nn.Linear(3, 3)

    def net_fn(x_in, c_noise, label):
        return lin(x_in) + label[:, None]

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x_in, c_noise, label):
            return net_fn(x_in, c_noise, label)

    D = Denoiser(Net(), schedules.get("vp_cosine"), "x0")
    out = D(torch.zeros(2, 3), torch.tensor([0.5, 0.5]), label=torch.tensor([1.0, 2.0]))
    assert torch.allclose(out[1] - out[0], torch.ones(3))
    assert sum(p.numel() for p in D.parameters()) == 12


def test_classifier_free_guidance():
    def D(x, t, label):
        return x * 0 + label[:, None]

    g = guided(D, 3.0, uncond={"label": torch.zeros(2)})
    out = g(torch.zeros(2, 2), torch.tensor(0.5), label=torch.tensor([1.0, 2.0]))
    assert torch.allclose(out, torch.tensor([[3.0, 3.0], [6.0, 6.0]]))  # 0 + 3 (c - 0)
    calls = []
    one = guided(lambda x, t, **c: calls.append(1) or x, 1.0, uncond={})
    one(torch.zeros(1, 1), 0.5)
    assert len(calls) == 1, "scale 1 must not evaluate the unconditional branch"


def test_v_prediction_matches_salimans_ho():
    sched = schedules.get("vp_cosine")
    x0, eps, t, xt = _state(sched)
    D = Denoiser(lambda x, c: x, sched, "v")
    a, s = sched.alpha_sigma(t)
    v = a[:, None] * eps - s[:, None] * x0
    assert torch.allclose(D.target(x0, eps, t), v)
    assert math.isclose(float((a**2 + s**2).max()), 1.0, rel_tol=1e-12)


@pytest.mark.parametrize("prediction", ["eps", "v", "edm"])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_prepared_times_give_the_same_output_as_the_slow_path(prediction, dtype, tol):
    """Samplers hand Denoiser their grid once (prepare_times); the result must not change.
    (In float32 the prepared coefficients are rounded once from float64, the slow path's at
    every operation: they agree to float32 rounding, amplified by this random network.)"""
    from diffusekit.core import samplers

    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3).to(dtype)
    net = lambda x, c: lin(torch.cat([x, c[:, None]], 1))  # noqa: E731
    sched = schedules.get("vp_cosine")
    D = Denoiser(net, sched, prediction)
    plain = lambda x, t, **c: D(x, t, **c)  # noqa: E731  (no prepare_times: the slow path)
    noise = torch.randn(8, 3, generator=torch.Generator().manual_seed(1), dtype=dtype)
    ts = schedules.time_grid(sched, 12, "log_snr")
    with torch.no_grad():
        for name in ("dpmpp_2m", "heun", "ddim", "ddpm", "unipc"):
            fast = samplers.get(name)(D, noise, ts, sched, generator=torch.Generator().manual_seed(2))
            slow = samplers.get(name)(plain, noise, ts, sched, generator=torch.Generator().manual_seed(2))
            assert fast.dtype == dtype
            assert float((fast - slow).abs().max()) <= tol * float(slow.abs().max()), name
    assert D._prepared, "samplers must hand their grid to the denoiser"


def test_only_the_prepared_tensors_take_the_prepared_path():
    """Prepared entries are found by identity: an equal but different tensor, or another time,
    takes the general path, and both paths agree (through both entry points)."""
    seen = []
    D = Denoiser(lambda x, c: seen.append(c) or torch.zeros_like(x), schedules.get("edm"), "x0")
    t = torch.tensor(0.5)
    call = D.prepare_times([t], batch=2)
    for entry_point in (call, D):
        for time in (t, torch.tensor(0.5), torch.tensor(0.25)):
            entry_point(torch.zeros(2, 1), time)
    prepared = seen[0]
    assert seen[3] is prepared, "a prepared time reuses its prepared noise input"
    assert all(c is not prepared for i, c in enumerate(seen) if i not in (0, 3))
    expected = [0.5, 0.5, 0.25] * 2
    assert all(torch.allclose(c, torch.full((2,), v)) for c, v in zip(seen, expected))


def test_module_hooks_still_fire_during_sampling():
    """Samplers call Denoiser.forward directly only when no module hook would be skipped."""
    from diffusekit.core import samplers

    sched = schedules.get("vp_cosine")
    D = Denoiser(lambda x, c: torch.zeros_like(x), sched, "eps")
    calls = []
    D.register_forward_hook(lambda module, args, out: calls.append(1))
    samplers.get("dpmpp_2m")(D, torch.randn(4, 2), schedules.time_grid(sched, 6), sched)
    assert len(calls) == 6
    assert D.prepare_times([torch.tensor(0.5)]) is D
    assert Denoiser(lambda x, c: x, sched).prepare_times([torch.tensor(0.5)]) is not None


def test_a_prepared_time_serves_another_batch_size_and_dtype():
    """prepare_times(batch=B) expands c_noise once; a call with another batch or dtype still
    gets the right noise input (rebuilt from the prepared value), through both entry points."""
    seen = []
    D = Denoiser(lambda x, c: seen.append(c) or torch.zeros_like(x), schedules.get("vp_cosine"), "eps",
                 noise_input="t1000")
    t = torch.tensor(0.25)
    call = D.prepare_times([t], batch=4)
    call(torch.zeros(4, 2), t)
    call(torch.zeros(3, 2, dtype=torch.float64), t)
    D.forward(torch.zeros(5, 2), t)
    assert [tuple(c.shape) for c in seen] == [(4,), (3,), (5,)]
    assert seen[1].dtype == torch.float64
    assert all(torch.allclose(c.double(), torch.full_like(c.double(), 250.0)) for c in seen)


def test_repeated_runs_reuse_the_prepared_grid_and_a_denoiser_still_pickles():
    """Equal grids give the very same time tensors (scalar_cache), so a second run keeps the
    denoiser's prepared table; the result is unchanged, and the denoiser pickles afterwards."""
    import pickle

    from diffusekit.core import samplers

    sched = schedules.get("vp_cosine")
    D = Denoiser(lambda x, c: x * 0.5, sched, "eps", noise_input="t1000")
    noise = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        first = samplers.get("heun")(D, noise, schedules.time_grid(sched, 6), sched)
        table = D._prepared
        second = samplers.get("heun")(D, noise, schedules.time_grid(sched, 6), sched)
    assert D._prepared is table and torch.equal(first, second)
    D.net = QuarterNet()
    with torch.no_grad():
        samplers.get("heun")(D, noise, schedules.time_grid(sched, 6), sched)
    assert D._prepared is not table, "a new network must not reuse the old closure"
    clone = pickle.loads(pickle.dumps(D))
    assert clone._prepared == {} and isinstance(clone.net, QuarterNet)


class QuarterNet(torch.nn.Module):
    """net(x, c) = x / 4 (module level, so that it pickles)."""

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return 0.25 * x
