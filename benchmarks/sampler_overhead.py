"""Part (b) of the sampler benchmark (`benchmarks/samplers.py`): the per-step overhead of each
library's sampling loop, what a sampler costs beyond the network it calls.

The network is deliberately tiny (`TinyEpsNet`, an eps-MLP 16 -> 64 -> 64 -> 16 at batch 64, on
one CPU thread), so that the loop's own work is not hidden behind it. The network's calls are
timed from inside (`TimedNetwork`): a run's overhead is its wall time minus the time spent in the
network during that same run, per step (50 steps). For each algorithm diffusekit shares with a
baseline, every library's loop, in the configuration the quality sweep selected
(`overhead_pairs`), is timed in the same repetitions, back to back and in a rotating order;
diffusekit runs twice, as is and with its per-grid coefficient cache emptied before every run
(every run a first run). A ratio diffusekit / baseline is the median of the per-repetition
ratios (`overhead_ratios`); `overhead_markdown` is the report's section on it.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

if __package__ in (None, ""):  # loaded by file, not as benchmarks.sampler_overhead: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import sampler_baselines as base  # noqa: E402
from benchmarks.sampler_baselines import DIFFUSERS, KDIFF, OURS, OURS_COLD  # noqa: E402
from diffusekit.core import samplers, schedules  # noqa: E402
from diffusekit.core.app.results import fmt, markdown_table  # noqa: E402
from diffusekit.core.parameterization import Denoiser  # noqa: E402
from diffusekit.core.samplers import scalar_cache  # noqa: E402


class OverheadSettings(Protocol):
    """What `run_overhead` reads of the benchmark's settings (`benchmarks.samplers.Settings`)."""

    @property
    def seed(self) -> int: ...

    @property
    def overhead_steps(self) -> int: ...

    @property
    def overhead_reps(self) -> int: ...

    @property
    def overhead_batch(self) -> int: ...


class TinyEpsNet(nn.Module):
    """The overhead benchmark's network: eps = MLP([x, c / 1000]), 2 hidden layers of 64.
    c: the noise input, [B] or a scalar (diffusers passes one timestep for the batch)."""

    def __init__(self, dim: int = 16, hidden: int = 64) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                 nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        c = torch.as_tensor(c, dtype=x.dtype).expand(x.shape[0])
        return self.mlp(torch.cat([x, c[:, None] / 1000.0], dim=1))


def network_sigma_model(net: nn.Module, schedule) -> base.SigmaModel:
    """k-diffusion's model(x_ve, sigma_ve) -> x0 around an eps-network of discrete timesteps (what
    k-diffusion's own DiscreteEpsDDPMDenoiser does): c_in = 1 / sqrt(1 + sigma^2), the timestep
    by log-sigma interpolation over the training sigmas, x0 = x - sigma eps."""
    log_sigmas = base._train_log_sigmas(schedule).float()

    def model(x: Tensor, sigma: Tensor) -> Tensor:
        sigma = sigma.to(x.dtype).expand(x.shape[0])
        ls = sigma.log()
        hi = torch.searchsorted(log_sigmas, ls.contiguous()).clamp(1, len(log_sigmas) - 1)
        lo_v, hi_v = log_sigmas[hi - 1], log_sigmas[hi]
        tau = (hi - 1).to(x.dtype) + ((ls - lo_v) / (hi_v - lo_v)).clamp(0, 1)
        eps = net(x * torch.rsqrt(1.0 + sigma * sigma)[:, None], tau)
        return x - sigma[:, None] * eps

    return model


class TimedNetwork:
    """Wraps the network and adds the wall time spent inside its calls to `seconds` (and counts
    them in `calls`), so that a sampling loop's overhead is measured within the same run: loop
    time - time inside the network. (Timing the network separately and subtracting adds the
    noise of two runs, and a network timed on one reused input runs faster than inside a loop.)
    A plain callable, not an nn.Module: its own cost (two clock reads and an addition, well
    under a microsecond per call) counts as overhead for every library alike, so it is kept
    as small as possible."""

    __slots__ = ("net", "seconds", "calls")

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, x: Tensor, c: Tensor) -> Tensor:
        start = time.perf_counter()
        out = self.net(x, c)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def _interleaved_overheads(loops: dict[str, Callable[[], object]], network: TimedNetwork,
                           reps: int, warmup: int = 2, runs: int = 3) -> dict[str, list[float]]:
    """{library: [loop seconds - seconds inside `network`, per repetition]}.

    In every repetition each library samples `runs` times back to back, as when sampling batch
    after batch; the first of these re-warms the caches the other libraries have just used and is
    not counted, the rest are averaged. The libraries take turns in a rotating order, so that
    drifting machine load hits all of them alike."""
    names = list(loops)
    for _ in range(warmup):
        for loop in loops.values():
            loop()
    diffs: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            loops[name]()  # re-warm
            network.seconds = 0.0
            start = time.perf_counter()
            for _ in range(runs - 1):
                loops[name]()
            diffs[name].append((time.perf_counter() - start - network.seconds) / (runs - 1))
    return diffs


def overhead_pairs(best: dict, mixture: str = "random_16d") -> dict[str, dict[str, str]]:
    """{algorithm: {library: config}} for algorithms ours shares with a baseline, each in its
    configuration selected by the quality sweep on `mixture`."""
    pairs: dict[str, dict[str, str]] = {}
    for key, config in best.get(mixture, {}).items():
        library, algorithm = key.split("/", 1)
        pairs.setdefault(algorithm, {})[library] = config
    return {a: p for a, p in sorted(pairs.items()) if OURS in p and len(p) > 1}


def run_overhead(settings: OverheadSettings, pairs: dict[str, dict[str, str]], kd=None, progress: bool = True) -> dict:
    """Per-step overhead of each library's loop around `TinyEpsNet` on one CPU thread.

    For each algorithm, every library's sampling loop is timed in the same repetitions, and the
    time spent inside the network during that very run is taken off (`TimedNetwork`,
    `_interleaved_overheads`); overhead per step = median(loop - network) / steps, and the ratio
    ours / other is the median over repetitions of the paired ratio. Returns {"pairs": {algorithm: {library: {"config",
    "steps", "nfe", "overhead_us_per_step", "ratio_to_ours"}}}, "denoiser_adapter_us_per_call", ...}.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    schedule = schedules.get("vp_discrete")
    torch.manual_seed(settings.seed)
    net = TimedNetwork(TinyEpsNet().eval())
    steps, reps, batch = settings.overhead_steps, settings.overhead_reps, settings.overhead_batch
    noise = torch.randn(batch, 16, generator=torch.Generator().manual_seed(settings.seed))
    ours_denoiser = Denoiser(net, schedule, prediction="eps", noise_input="t1000")
    diffusers_by_label = {c.label: c for c in base.DIFFUSERS_CONFIGS}
    kd_by_label = {f"{fn}, sigmas={kind}": (fn, kind) for fn in base.KDIFFUSION_SAMPLERS for kind in base.KDIFFUSION_GRIDS}
    out: dict = {}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_mid = torch.tensor(0.5, dtype=torch.float64)
        adapter = _interleaved_overheads({OURS: lambda: [ours_denoiser(noise, t_mid) for _ in range(50)]}, net, reps)[OURS]
        for algorithm, libraries in tqdm(list(pairs.items()), desc="overhead", disable=not progress):
            loops, meta = {}, {}
            for library, config in libraries.items():
                loop = _overhead_loop(library, config, algorithm, ours_denoiser, net, noise, steps, schedule, kd,
                                      diffusers_by_label, kd_by_label)
                if loop is None:
                    continue
                net.calls = 0
                loop()
                loops[library] = loop
                meta[library] = dict(config=config, steps=steps, nfe=net.calls)
                if library == OURS:
                    loops[OURS_COLD] = _cleared_before(loop)
                    meta[OURS_COLD] = meta[OURS]
            diffs = _interleaved_overheads(loops, net, reps)
            for library, d in diffs.items():
                entry = dict(meta[library], overhead_us_per_step=1e6 * statistics.median(d) / steps)
                for mine, ratio_key in ((OURS, "ratio_to_ours"), (OURS_COLD, "ratio_to_ours_cold")):
                    if library not in (OURS, OURS_COLD) and mine in diffs:
                        paired = [a / b for a, b in zip(diffs[mine], d) if b > 0]
                        entry[ratio_key] = statistics.median(paired) if paired else None
                out.setdefault(algorithm, {})[library] = entry
    torch.set_num_threads(threads)
    return {"pairs": out, "denoiser_adapter_us_per_call": 1e6 * statistics.median(adapter) / 50,
            "steps": steps, "repetitions": reps, "batch": batch, "threads": 1}


def _cleared_before(loop: Callable[[], Tensor]) -> Callable[[], Tensor]:
    """`loop` with the engine's cache of per-grid coefficient tensors emptied first."""

    def run():
        scalar_cache.clear()
        return loop()

    return run


def _overhead_loop(library, config, algorithm, ours_denoiser, net, noise, steps, schedule, kd,
                   diffusers_by_label, kd_by_label) -> Callable[[], Tensor] | None:
    """One sampling run of `library` as a callable (None where that library is not loaded)."""
    if library == OURS:
        kind, sampler = config.split("=", 1)[1], samplers.get(algorithm)

        def run():
            ts = schedules.time_grid(schedule, steps, kind=kind)
            return sampler(ours_denoiser, noise, ts, schedule, generator=torch.Generator().manual_seed(0))

        return run
    if library == DIFFUSERS:
        # made once, as a pipeline holds its scheduler; each run's set_timesteps resets its state
        scheduler = base.make_scheduler(diffusers_by_label[config])

        def run():
            return base.diffusers_sample(scheduler, net, noise, steps, torch.Generator().manual_seed(0))

        return run
    if kd is None:
        return None
    fn, kind = kd_by_label[config]
    model = network_sigma_model(net, schedule)

    def run():
        sigmas = base.kdiffusion_sigmas(kd, schedule, steps, kind)
        return base.kdiffusion_sample(kd, fn, model, noise, sigmas)

    return run


def overhead_ratios(overhead: dict) -> dict:
    """{algorithm: {"vs_diffusers": ours / diffusers, "vs_k-diffusion": ours / k-diffusion,
    "cold_vs_diffusers": ours with an empty grid cache / diffusers, ...}}: the median of the
    per-repetition paired ratios (see `run_overhead`)."""
    ratios = {}
    for algorithm, libs in overhead["pairs"].items():
        if OURS not in libs:
            continue
        ratios[algorithm] = {f"vs_{lib}": v["ratio_to_ours"] for lib, v in libs.items()
                             if lib != OURS and v.get("ratio_to_ours") is not None}
        ratios[algorithm].update({f"cold_vs_{lib}": v["ratio_to_ours_cold"] for lib, v in libs.items()
                                  if v.get("ratio_to_ours_cold") is not None})
    return ratios


def overhead_markdown(overhead: dict, ratios: dict) -> list[str]:
    """The report's lines on overhead (`run_overhead`'s result and `overhead_ratios`):
    its heading, the table of every pair, and how it was measured."""
    lines = ["## Per-step overhead (tiny MLP eps-network, batch "
             f"{overhead['batch']}, {overhead['steps']} steps, 1 thread, median of {overhead['repetitions']})", ""]
    rows = []
    for algorithm, libs in overhead["pairs"].items():
        ours = libs.get(OURS, {})
        ratio = ratios.get(algorithm, {})
        rows.append([algorithm, ours.get("config"), ours.get("overhead_us_per_step"),
                     libs.get(OURS_COLD, {}).get("overhead_us_per_step"),
                     libs.get(DIFFUSERS, {}).get("config"), libs.get(DIFFUSERS, {}).get("overhead_us_per_step"),
                     ratio.get("vs_diffusers"), ratio.get("cold_vs_diffusers"),
                     libs.get(KDIFF, {}).get("overhead_us_per_step"), ratio.get("vs_k-diffusion")])
    lines.append(markdown_table(["sampler", "ours config", "ours µs/step", "ours, cold µs/step",
                                 "diffusers config", "diffusers µs/step", "ours/diffusers",
                                 "cold/diffusers", "k-diffusion µs/step", "ours/k-diffusion"], rows))
    lines += ["", "Overhead per step = median over repetitions of (loop time − the time spent inside "
              "the network during that same run) / steps. In each repetition every library of a row is timed back to back, in a "
              "rotating order; ours/other is the median of the per-repetition ratios. The loop includes "
              "building the time grid / `set_timesteps` once per sampling run; each diffusers "
              "scheduler is created once, as a pipeline holds one (a test checks that "
              "`set_timesteps` resets it to a fresh scheduler's output). Ours makes a grid's 0-dim "
              "coefficient tensors on its first run and reuses them for later runs of an equal grid "
              "(`core/samplers/scalar_cache.py`), as when sampling batch after batch; the 'cold' "
              "column empties that cache before every run, i.e. every run is a first run. Ours includes the `Denoiser` adapter (eps -> x0 with alpha(t), "
              "sigma(t) of the schedule); on its general path (a time no sampler prepared) it costs "
              f"{fmt(overhead['denoiser_adapter_us_per_call'])} µs per call beyond the network; diffusers' "
              "eps -> x0 conversion happens inside `step`. "
              "k-diffusion's model wrapper here is ours too (c_in scaling, sigma -> timestep "
              "interpolation, x0 = x − sigma eps, as its DiscreteEpsDDPMDenoiser does); its SDE "
              "samplers pay for torchsde's Brownian tree.", ""]
    return lines
