"""Contract tests over every registered sampler and several schedules: the promises of
`diffusekit.core.samplers` (shape, dtype, seeding, callback, landing on t = 0, no host sync).
The example plugin's `midpoint`, written with the public sampler API only, is held to them too."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest
import torch

from diffusekit.core import samplers, schedules
from diffusekit.core.analytic import GaussianMixture
from diffusekit.core.registry import UnknownNameError

# (schedule, time-grid kind) pairs: VP continuous, VP with alpha(1) ~ 0, discrete VP, VE, flow.
SCHEDULES = [("vp_linear", "log_snr"), ("vp_cosine", "karras"), ("vp_discrete", "trailing"),
             ("edm", "karras"), ("flow", "uniform")]
BUILTINS = ["consistency", "ddim", "ddpm", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m", "dpmpp_3m_sde", "euler",
            "heun", "unipc"]
DETERMINISTIC = ["ddim", "dpmpp_2m", "dpmpp_3m", "euler", "heun", "unipc", "midpoint"]
STOCHASTIC = [("consistency", {}), ("ddpm", {}), ("dpmpp_2m_sde", {}), ("dpmpp_3m_sde", {}), ("ddim", {"eta": 1.0}),
              ("euler", {"S_churn": 20.0}), ("heun", {"S_churn": 20.0, "S_tmin": 0.05, "S_tmax": 50.0})]
N_STEPS, SHAPE = 6, (8, 3, 4)  # data [B, 3, 4]: the mixture lives on the 12 flattened entries
MIXTURE = GaussianMixture.random(dim=12, n_modes=3, seed=1)
EXAMPLE_SAMPLER = Path(__file__).resolve().parents[2] / "plugins/example/diffusekit_example/sampler.py"


def load_example_midpoint():
    """The example plugin's `sample_midpoint`, loaded from its file (it imports only the engine)."""
    spec = importlib.util.spec_from_file_location("_example_plugin_sampler", EXAMPLE_SAMPLER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.sample_midpoint


# every registered sampler, and a third-party one written with the public API
SAMPLERS = {**{name: samplers.get(name) for name in samplers.names()}, "midpoint": load_example_midpoint()}


def run(name: str, schedule_name: str, kind: str, *, dtype=torch.float32, seed: int = 0,
        n: int = N_STEPS, **options):
    schedule = schedules.get(schedule_name)
    ts = schedules.time_grid(schedule, n, kind)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(123), dtype=dtype)
    generator = torch.Generator().manual_seed(seed)
    x = SAMPLERS[name](MIXTURE.denoiser(schedule), noise, ts, schedule, generator=generator, **options)
    return x, ts


def test_builtins_registered_and_unknown_name_lists_known():
    assert set(BUILTINS) <= set(samplers.names())
    with pytest.raises(UnknownNameError, match="dpmpp_2m"):
        samplers.get("dpmpp2m")


def test_register_function_and_decorator_forms(monkeypatch):
    monkeypatch.setattr(samplers.REGISTRY, "_entries", dict(samplers.REGISTRY._entries))

    def sample_mine(denoiser, noise, ts, schedule, **options):
        return noise

    samplers.register("mine", sample_mine)
    decorated = samplers.register("mine_too")(sample_mine)
    assert decorated is sample_mine
    assert samplers.get("mine") is sample_mine and samplers.get("mine_too") is sample_mine
    with pytest.raises(ValueError, match="already registered"):
        samplers.register("ddim", sample_mine)


@pytest.mark.parametrize("name", SAMPLERS)
def test_signature(name):
    params = inspect.signature(SAMPLERS[name]).parameters
    assert list(params)[:4] == ["denoiser", "noise", "ts", "schedule"]
    for keyword in ("space", "generator", "callback", "cond"):
        assert params[keyword].kind is inspect.Parameter.KEYWORD_ONLY, keyword
        assert params[keyword].default is not inspect.Parameter.empty, keyword
    assert (SAMPLERS[name].__doc__ or "").strip(), "every sampler names its algorithm"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("schedule_name", "kind"), SCHEDULES)
@pytest.mark.parametrize("name", SAMPLERS)
def test_shape_dtype_finite(name, schedule_name, kind, dtype):
    x, _ = run(name, schedule_name, kind, dtype=dtype)
    assert x.shape == SHAPE and x.dtype == dtype
    assert torch.isfinite(x).all()
    assert x.abs().max() < 10.0  # near the data (means ~ 1.5 N(0, 1)), not blown up


@pytest.mark.parametrize(("schedule_name", "kind"), SCHEDULES)
@pytest.mark.parametrize("name", SAMPLERS)
def test_same_seed_same_output(name, schedule_name, kind):
    a, _ = run(name, schedule_name, kind, seed=5)
    b, _ = run(name, schedule_name, kind, seed=5)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_samplers_ignore_the_generator(name):
    a, _ = run(name, "vp_linear", "log_snr", seed=1)
    b, _ = run(name, "vp_linear", "log_snr", seed=2)
    assert torch.equal(a, b)


@pytest.mark.parametrize(("schedule_name", "kind"), [("vp_linear", "log_snr"), ("edm", "karras"),
                                                     ("flow", "uniform")])
@pytest.mark.parametrize(("name", "options"), STOCHASTIC)
def test_stochastic_samplers_depend_on_the_seed(name, options, schedule_name, kind):
    a, _ = run(name, schedule_name, kind, seed=1, **options)
    b, _ = run(name, schedule_name, kind, seed=2, **options)
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize(("schedule_name", "kind"), SCHEDULES)
@pytest.mark.parametrize("name", SAMPLERS)
def test_callback_sees_the_grid_in_order_and_lands_on_zero(name, schedule_name, kind):
    seen = []
    x, ts = run(name, schedule_name, kind, dtype=torch.float64, callback=seen.append)
    assert [s["i"] for s in seen] == list(range(N_STEPS))
    assert torch.equal(torch.stack([s["t"] for s in seen]), ts[:-1])
    assert torch.equal(torch.stack([s["t_next"] for s in seen]), ts[1:])
    assert seen[-1]["t_next"] == 0 and ts[-1] == 0
    assert seen[-1]["x"] is x
    if name in BUILTINS:  # their final step to t = 0 (sigma = 0, alpha = 1) returns D itself
        torch.testing.assert_close(x, seen[-1]["denoised"], rtol=0, atol=1e-12)


class CountingDenoiser:
    """Counts evaluations; records the times it was called at."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __call__(self, x, t, **cond):
        self.calls += 1
        return self.inner(x, t, **cond)


@pytest.mark.parametrize(("schedule_name", "kind", "zero_snr"), [("vp_linear", "log_snr", False),
                                                                 ("flow", "uniform", True)])
@pytest.mark.parametrize("name", BUILTINS)
def test_number_of_function_evaluations(name, schedule_name, kind, zero_snr):
    schedule = schedules.get(schedule_name)
    ts = schedules.time_grid(schedule, N_STEPS, kind)
    denoiser = CountingDenoiser(MIXTURE.denoiser(schedule))
    samplers.get(name)(denoiser, torch.randn(SHAPE), ts, schedule, generator=torch.Generator().manual_seed(0))
    # Heun corrects every step but the last (and one that starts at zero SNR): 2n - 1 (2n - 2)
    expected = 2 * N_STEPS - 1 - int(zero_snr) if name == "heun" else N_STEPS
    assert denoiser.calls == expected


def test_cond_is_forwarded_to_every_denoiser_call():
    schedule = schedules.get("vp_linear")
    ts = schedules.time_grid(schedule, N_STEPS, "log_snr")
    inner, received = MIXTURE.denoiser(schedule), []

    def denoiser(x, t, **cond):
        received.append(cond)
        return inner(x, t)

    for name, sample in SAMPLERS.items():
        received.clear()
        sample(denoiser, torch.randn(SHAPE), ts, schedule, cond={"label": 3, "scale": 2.0})
        assert received and all(c == {"label": 3, "scale": 2.0} for c in received), name


def test_bad_grids_and_options_are_rejected():
    schedule = schedules.get("vp_linear")
    D, noise = MIXTURE.denoiser(schedule), torch.randn(SHAPE)
    sample = samplers.get("dpmpp_2m")
    with pytest.raises(ValueError, match="end at t = 0"):
        sample(D, noise, torch.tensor([1.0, 0.5, 0.1], dtype=torch.float64), schedule)
    with pytest.raises(ValueError, match="descending"):
        sample(D, noise, torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64), schedule)
    with pytest.raises(TypeError):
        sample(D, noise, schedules.time_grid(schedule, 4), schedule, eta=1.0)  # not an option of 2M
    with pytest.raises(ValueError, match="eta"):
        samplers.get("ddim")(D, noise, schedules.time_grid(schedule, 4), schedule, eta=2.0)
    with pytest.raises(ValueError, match="order"):
        samplers.get("unipc")(D, noise, schedules.time_grid(schedule, 4), schedule, order=4)


class HostSync(RuntimeError):
    """Raised by the tripwire when the sampling loop synchronises with the host."""


@pytest.mark.parametrize(("schedule_name", "kind"), [("vp_discrete", "trailing"), ("flow", "uniform")])
@pytest.mark.parametrize(("name", "options"), [(n, {}) for n in SAMPLERS] + STOCHASTIC)
def test_no_host_sync_inside_the_loop(monkeypatch, name, options, schedule_name, kind):
    """Tensor.item / tolist / __bool__ / __float__ / __int__ raise once the loop has started.

    The tripwire is armed by the first denoiser call (the grid preparation before the loop may
    use the host); it covers the rest of step 0 and every later step, callbacks included."""
    schedule = schedules.get(schedule_name)
    ts = schedules.time_grid(schedule, N_STEPS, kind)
    inner, armed = MIXTURE.denoiser(schedule), []

    def trip(*args, **kwargs):
        raise HostSync("host synchronisation inside the sampling loop")

    def arm():
        for method in ("item", "tolist", "__bool__", "__float__", "__int__"):
            monkeypatch.setattr(torch.Tensor, method, trip)
        armed.append(True)

    def denoiser(x, t, **cond):
        if not armed:
            arm()
        return inner(x, t, **cond)

    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    x = SAMPLERS[name](denoiser, noise, ts, schedule, generator=torch.Generator().manual_seed(1),
                       callback=lambda info: None, **options)
    assert armed, "the denoiser was never called"
    with pytest.raises(HostSync):  # the tripwire works
        torch.ones(()).item()
    monkeypatch.undo()
    assert torch.isfinite(x).all()
