"""The engine benchmark: diffusekit's samplers side by side with diffusers' schedulers and
k-diffusion's samplers, in one run, on the same denoisers.

(a) Quality. The denoiser is the exact E[x0 | x_t] of a Gaussian mixture (`core.analytic`), so a
    sampler's distance to true samples is its own discretisation error, nothing learnt. Two
    mixtures (the 2-D ring of 8 modes, a random 16-D mixture of 6), the DDPM schedule (1000
    steps, linear betas), NFE budgets 5, 10, 20, 50. Error = sliced 2-Wasserstein distance to
    true samples (`core.analytic.sliced_wasserstein`, the same projections for everyone); the
    noise floor is the same distance between two independent true sample sets. Every sampler
    starts from the same unit noise, and every configuration in the sweep is run; the tables
    show each sampler in its configuration of least error at 10 NFE (all of them are in the JSON).
    NFE are counted by wrapping the denoiser, not assumed: Heun with n steps costs 2n - 1.
(b) Overhead. A tiny eps-network (16 -> 64 -> 64 -> 16 MLP, batch 64) on one CPU thread; the whole
    sampling loop at 50 steps minus the time spent inside the network in that same run, per
    step; the libraries timed in the same repetitions. Ratio ours / diffusers for each comparable pair:
    the median of the per-repetition ratios (benchmarks/sampler_overhead.py).

    python benchmarks/samplers.py [--quick] [--out DIR] [--skip-kdiffusion]

writes samplers.json, samplers.md and samplers.png into DIR (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import sampler_baselines as base  # noqa: E402
from benchmarks.sampler_baselines import DIFFUSERS, KDIFF, OURS  # noqa: E402
# part (b), the overhead (TimedNetwork and TinyEpsNet are imported for the tests)
from benchmarks.sampler_overhead import (TimedNetwork, TinyEpsNet, overhead_markdown,  # noqa: E402, F401
                                         overhead_pairs, overhead_ratios, run_overhead)
from diffusekit.core.app.results import RESULTS_DIR, fmt, make_record, markdown_table, write_results  # noqa: E402
from diffusekit.core import samplers, schedules  # noqa: E402
from diffusekit.core.analytic import GaussianMixture  # noqa: E402

LIBRARIES = (OURS, DIFFUSERS, KDIFF)
NFE_BUDGETS = (5, 10, 20, 50)
HEADLINE_NFE = 10
MIXTURES: dict[str, Callable[[], GaussianMixture]] = {
    "ring_2d": GaussianMixture.ring_2d,
    "random_16d": lambda: GaussianMixture.random(dim=16),
}


@dataclass(frozen=True)
class Settings:
    """Sizes of one benchmark run. `full()` is the committed run, `quick()` a smoke run."""

    samples: dict = field(default_factory=lambda: {"ring_2d": 20000, "random_16d": 12000})
    budgets: tuple[int, ...] = NFE_BUDGETS
    projections: int = 256
    floor_sets: int = 4  # independent true sample sets for the noise floor (mean and spread)
    overhead_steps: int = 50
    overhead_reps: int = 25
    overhead_batch: int = 64
    kdiffusion: bool = True
    seed: int = 0
    only_configs: str | None = None  # keep only configurations whose label contains this (tests)

    @classmethod
    def full(cls) -> "Settings":
        return cls()

    @classmethod
    def quick(cls) -> "Settings":
        return cls(samples={"ring_2d": 4096, "random_16d": 2048}, overhead_reps=5)


# ---------------------------------------------------------------------------------------------
# The error metric


class SlicedW2ToReference:
    """`core.analytic.sliced_wasserstein(x, reference, n_projections, generator=seed)`, with the
    reference's projections drawn and sorted once (the same directions, hence the same number,
    for every sample set; sorting along rows makes it several times faster than the column
    sort)."""

    def __init__(self, reference: Tensor, n_projections: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        theta = torch.randn(reference.shape[1], n_projections, generator=g, dtype=torch.float64)
        self.theta_t = (theta / theta.norm(dim=0, keepdim=True)).T.contiguous()  # [P, D]
        self.ref_sorted = self._project_sorted(reference)

    def _project_sorted(self, x: Tensor) -> Tensor:
        return torch.sort(self.theta_t @ x.double().T, dim=1).values  # [P, n]

    def __call__(self, x: Tensor) -> float:
        """The distance from samples x: [n, D] to the reference; inf when x is not finite."""
        if not bool(torch.isfinite(x).all()):
            return math.inf
        return float(((self._project_sorted(x) - self.ref_sorted) ** 2).mean().sqrt())


def exact_denoiser(mixture: GaussianMixture, schedule) -> Callable[[Tensor, Tensor], Tensor]:
    """`mixture.denoiser(schedule)` (E[x0 | x_t], the same numbers) that evaluates alpha(t),
    sigma(t) once when all of the batch shares one t (every sampler here), rather than once per
    example: the schedule's interpolation would otherwise cost as much as the mixture itself."""

    def denoiser(x: Tensor, t: Tensor, **cond) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        if t.dim() > 0 and bool((t == t.reshape(-1)[0]).all()):
            t = t.reshape(-1)[0]
        alpha, sigma = schedule.alpha_sigma(t.to(torch.float64))
        flat = x.reshape(x.shape[0], -1)
        alpha, sigma = alpha.expand(flat.shape[0]), sigma.expand(flat.shape[0])
        return mixture.posterior_mean(flat, alpha, sigma).reshape(x.shape)

    return denoiser


class CountingDenoiser:
    """Wraps D(x, t) and counts its calls (the NFE)."""

    def __init__(self, denoiser: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.denoiser, self.calls = denoiser, 0

    def __call__(self, x: Tensor, t: Tensor, **cond) -> Tensor:
        self.calls += 1
        return self.denoiser(x, t, **cond)


# ---------------------------------------------------------------------------------------------
# The candidates: one (library, algorithm, configuration) each, all sampling from the same noise

SampleFn = Callable[[Callable, Tensor, int, int], Tensor]  # (exact D, noise, steps, seed) -> x0


@dataclass(frozen=True)
class Candidate:
    library: str
    algorithm: str
    config: str
    sample: SampleFn = field(repr=False, compare=False)

    @property
    def key(self) -> str:
        return f"{self.library}/{self.algorithm}"


def _ours(name: str, kind: str, schedule) -> SampleFn:
    def sample(denoiser, noise, steps, seed):
        ts = schedules.time_grid(schedule, steps, kind=kind)
        return samplers.get(name)(denoiser, noise, ts, schedule, generator=torch.Generator().manual_seed(seed))

    return sample


def _diffusers(config: base.DiffusersConfig, schedule) -> SampleFn:
    def sample(denoiser, noise, steps, seed):
        scheduler = base.make_scheduler(config)
        eps_model = base.eps_model_from_denoiser(denoiser, schedule, scheduler)
        return base.diffusers_sample(scheduler, eps_model, noise, steps, torch.Generator().manual_seed(seed))

    return sample


def _kdiffusion(kd, sampler: str, kind: str, schedule) -> SampleFn:
    def sample(denoiser, noise, steps, seed):
        sigmas = base.kdiffusion_sigmas(kd, schedule, steps, kind)
        model = base.sigma_model_from_denoiser(denoiser, schedule)
        return base.kdiffusion_sample(kd, sampler, model, noise, sigmas, seed)

    return sample


def build_candidates(schedule, kd=None, libraries=LIBRARIES) -> list[Candidate]:
    """Every configuration of the sweep: our samplers on every registered time grid, diffusers'
    `DIFFUSERS_CONFIGS`, and (when `kd` is loaded) k-diffusion's samplers on its two grids."""
    out: list[Candidate] = []
    if OURS in libraries:
        for name in samplers.names():
            for kind in schedules.GRIDS.names():
                out.append(Candidate(OURS, name, f"grid={kind}", _ours(name, kind, schedule)))
    if DIFFUSERS in libraries:
        out += [Candidate(DIFFUSERS, c.algorithm, c.label, _diffusers(c, schedule)) for c in base.DIFFUSERS_CONFIGS]
    if KDIFF in libraries and kd is not None:
        for fn, algorithm in base.KDIFFUSION_SAMPLERS.items():
            for kind in base.KDIFFUSION_GRIDS:
                out.append(Candidate(KDIFF, algorithm, f"{fn}, sigmas={kind}", _kdiffusion(kd, fn, kind, schedule)))
    return out


def nfe_of(candidate: Candidate, denoiser, dim: int, steps: int) -> int:
    """Denoiser calls of `candidate` at `steps`, counted on a 4-sample run."""
    counter = CountingDenoiser(denoiser)
    candidate.sample(counter, torch.zeros(4, dim), steps, 0)
    return counter.calls


_STEPS_CACHE: dict[tuple[str, str, int], tuple[int, int]] = {}


def steps_for_budget(candidate: Candidate, denoiser, dim: int, budget: int) -> tuple[int, int]:
    """(steps, nfe): the most steps whose counted NFE fits in `budget` (cached per candidate)."""
    key = (candidate.key, candidate.config, budget)
    if key not in _STEPS_CACHE:
        _STEPS_CACHE[key] = _steps_for_budget(candidate, denoiser, dim, budget)
    return _STEPS_CACHE[key]


def _steps_for_budget(candidate: Candidate, denoiser, dim: int, budget: int) -> tuple[int, int]:
    for steps in range(budget, 0, -1):
        nfe = nfe_of(candidate, denoiser, dim, steps)
        if nfe <= budget:
            return steps, nfe
    return 1, nfe_of(candidate, denoiser, dim, 1)


# ---------------------------------------------------------------------------------------------
# (a) quality


def run_quality(settings: Settings, kd=None, libraries=LIBRARIES, progress: bool = True) -> dict:
    """The sweep, in two passes per mixture: every candidate at the selection budget (10 NFE),
    then each sampler's best configuration there (`select_best`) at the other budgets.

    Returns {"noise_floor": {mixture: mean sw}, "noise_floor_std": {...}, "runs": [{mixture,
    library, algorithm, config, budget, steps, nfe, error, seconds, failure}], "samples": {...},
    "selection_budget": int}.
    """
    schedule = schedules.get("vp_discrete")
    candidates = [c for c in build_candidates(schedule, kd, libraries)
                  if settings.only_configs is None or settings.only_configs in c.config]
    select_at = HEADLINE_NFE if HEADLINE_NFE in settings.budgets else settings.budgets[0]
    others = [b for b in settings.budgets if b != select_at]
    runs, floors, floor_std = [], {}, {}
    n_samplers = len({c.key for c in candidates})
    total = len(MIXTURES) * (len(candidates) + n_samplers * len(others))
    bar = tqdm(total=total, desc="quality", disable=not progress, mininterval=1.0)
    warnings.filterwarnings("ignore", message="Should have", module="torchsde")  # float32 sigma_max
    for mi, (mix_name, make_mixture) in enumerate(MIXTURES.items()):
        mixture = make_mixture()
        n, dim = settings.samples[mix_name], mixture.dim
        denoiser = exact_denoiser(mixture, schedule)
        seed = settings.seed + 100 * mi
        reference = mixture.sample(n, torch.Generator().manual_seed(seed + 1))
        metric = SlicedW2ToReference(reference, settings.projections, seed + 3)
        floor = [metric(mixture.sample(n, torch.Generator().manual_seed(seed + 10 + k)))
                 for k in range(settings.floor_sets)]
        floors[mix_name] = statistics.fmean(floor)
        floor_std[mix_name] = statistics.stdev(floor) if len(floor) > 1 else 0.0
        noise = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed + 4))

        def measure(cand: Candidate, budget: int) -> None:
            bar.set_postfix_str(f"{mix_name} {cand.library} {cand.config[:40]} @{budget}", refresh=False)
            steps, _ = steps_for_budget(cand, denoiser, dim, budget)
            counter = CountingDenoiser(denoiser)
            start = time.perf_counter()
            try:
                with torch.no_grad():
                    x0 = cand.sample(counter, noise, steps, seed + 5)
                error, failure = metric(x0), None
            except Exception as err:  # a configuration that crashes is reported, not fatal
                error, failure = math.inf, f"{type(err).__name__}: {err}"[:200]
            runs.append(dict(mixture=mix_name, library=cand.library, algorithm=cand.algorithm,
                             config=cand.config, budget=budget, steps=steps, nfe=counter.calls,
                             error=error, seconds=time.perf_counter() - start, failure=failure))
            bar.update()

        for cand in candidates:
            measure(cand, select_at)
        chosen = select_best([r for r in runs if r["mixture"] == mix_name], select_at)[mix_name]
        for cand in candidates:
            if chosen.get(cand.key) == cand.config:
                for budget in others:
                    measure(cand, budget)
    bar.close()
    runs.sort(key=lambda r: (r["mixture"], r["library"], r["algorithm"], r["config"], r["budget"]))
    return {"noise_floor": floors, "noise_floor_std": floor_std, "runs": runs,
            "samples": dict(settings.samples), "selection_budget": select_at}


def select_best(runs: list[dict], budget: int = HEADLINE_NFE) -> dict:
    """{mixture: {library/algorithm: config}}: each sampler's configuration of least error at
    `budget` (ties: the configuration name that sorts first)."""
    best: dict[str, dict[str, tuple[float, str]]] = {}
    for r in runs:
        if r["budget"] != budget:
            continue
        key = f"{r['library']}/{r['algorithm']}"
        slot = best.setdefault(r["mixture"], {})
        if key not in slot or (r["error"], r["config"]) < slot[key]:
            slot[key] = (r["error"], r["config"])
    return {m: {k: cfg for k, (_, cfg) in d.items()} for m, d in best.items()}


def curves(runs: list[dict], best: dict) -> dict:
    """{mixture: {library/algorithm: {"config", "budget": [...], "nfe": [...], "error": [...]}}}
    for each sampler's selected configuration."""
    out: dict = {}
    for r in runs:
        key = f"{r['library']}/{r['algorithm']}"
        if best.get(r["mixture"], {}).get(key) != r["config"]:
            continue
        c = out.setdefault(r["mixture"], {}).setdefault(
            key, {"library": r["library"], "algorithm": r["algorithm"], "config": r["config"],
                  "budget": [], "nfe": [], "error": []})
        c["budget"].append(r["budget"])
        c["nfe"].append(r["nfe"])
        c["error"].append(r["error"])
    return out


def best_at(curve_set: dict, library: str, budget: int = HEADLINE_NFE) -> dict | None:
    """The library's sampler of least error at `budget`: {"sampler", "config", "nfe", "error"}."""
    found = None
    for key, c in curve_set.items():
        if c["library"] != library or budget not in c["budget"]:
            continue
        i = c["budget"].index(budget)
        if found is None or c["error"][i] < found["error"]:
            found = {"sampler": key, "config": c["config"], "nfe": c["nfe"][i], "error": c["error"][i]}
    return found


# ---------------------------------------------------------------------------------------------
# targets, tables, plot


def evaluate_targets(curve_sets: dict, ratios: dict, floors: dict, floor_std: dict | None = None) -> dict:
    """The issue's two targets. Quality: at 10 NFE our best sampler's error is no worse than
    diffusers' best, on each mixture; "no worse" allows the measurement's resolution (the spread
    of the sliced-W2 noise floor over independent true sample sets), and whether ours is strictly
    lower is reported beside it. Overhead: ours / diffusers per-step overhead <= 0.5 for every
    comparable pair."""
    quality = {}
    for mixture, cs in curve_sets.items():
        ours, theirs, kd = best_at(cs, OURS), best_at(cs, DIFFUSERS), best_at(cs, KDIFF)
        tol = (floor_std or {}).get(mixture, 0.0)
        both = ours is not None and theirs is not None
        quality[mixture] = {"ours_best": ours, "diffusers_best": theirs, "k-diffusion_best": kd,
                            "noise_floor": floors[mixture], "resolution": tol,
                            "strictly_lower": both and ours["error"] < theirs["error"],
                            "met": both and ours["error"] <= theirs["error"] + tol}
    per_pair = {a: r["vs_diffusers"] for a, r in ratios.items() if "vs_diffusers" in r}
    cold = {a: r["cold_vs_diffusers"] for a, r in ratios.items() if "cold_vs_diffusers" in r}
    return {
        "quality_at_10_nfe": {"met": all(q["met"] for q in quality.values()) if quality else False,
                              "per_mixture": quality},
        "overhead_half_of_diffusers": {
            "met": bool(per_pair) and all(v <= 0.5 for v in per_pair.values()),
            "pairs_met": sorted(a for a, v in per_pair.items() if v <= 0.5),
            "ratio_per_pair": per_pair,
            "ratio_geometric_mean": (math.exp(statistics.fmean(math.log(v) for v in per_pair.values()))
                                     if per_pair and min(per_pair.values()) > 0 else None),
            "cold_ratio_per_pair": cold,
            "cold_pairs_met": sorted(a for a, v in cold.items() if v <= 0.5),
        },
    }


def markdown_report(result: dict) -> str:
    """The Markdown body: targets, error tables per mixture, overhead table, notes."""
    q, o, t = result["quality"], result["overhead"], result["targets"]
    lines = ["## Targets", ""]
    qt, ot = t["quality_at_10_nfe"], t["overhead_half_of_diffusers"]
    lines.append(f"- **Quality** (at 10 NFE our best sampler's error <= diffusers' best): "
                 f"**{'met' if qt['met'] else 'not met'}**")
    for mixture, m in qt["per_mixture"].items():
        parts = [f"{who} {m[k]['sampler']} [{m[k]['config']}] {fmt(m[k]['error'])} ({m[k]['nfe']} NFE)"
                 for who, k in (("ours", "ours_best"), ("diffusers", "diffusers_best"),
                                ("k-diffusion", "k-diffusion_best")) if m.get(k)]
        verdict = "met" if m["met"] else "NOT met"
        strict = "ours strictly lower" if m["strictly_lower"] else "ours not strictly lower"
        lines.append(f"  - {mixture}: {verdict} ({strict}; resolution ±{fmt(m['resolution'], 2)}) — "
                     + "; ".join(parts) + f"; noise floor {fmt(m['noise_floor'])}")
    ratio_text = ", ".join(f"{a} {fmt(v, 2)}" for a, v in ot["ratio_per_pair"].items())
    lines.append(f"- **Overhead** (ours <= half of diffusers' per-step overhead, every pair): "
                 f"**{'met' if ot['met'] else 'not met'}** — ours/diffusers: {ratio_text}; "
                 f"geometric mean {fmt(ot['ratio_geometric_mean'], 2)}")
    if ot.get("cold_ratio_per_pair"):
        cold_text = ", ".join(f"{a} {fmt(v, 2)}" for a, v in ot["cold_ratio_per_pair"].items())
        lines.append(f"  - the first run of a grid (ours with its coefficient cache emptied before every run): "
                     f"{cold_text}; at most half in {len(ot['cold_pairs_met'])} of "
                     f"{len(ot['cold_ratio_per_pair'])} pairs")
    lines += ["", "## Setup", "",
              "Exact Gaussian-mixture denoiser E[x0 | x_t] (`core.analytic`) on the DDPM schedule "
              "(`vp_discrete`: 1000 steps, betas linspace(1e-4, 0.02)); diffusers sees it as an "
              "eps-model of the training timestep (at the noise level each scheduler assigns the "
              "timestep), k-diffusion as a denoiser in VE coordinates. Same unit noise for every "
              "sampler; float32 states. Error: sliced 2-Wasserstein distance "
              f"({result['settings']['projections']} fixed projections) to true samples; samples per run: "
              + ", ".join(f"{k} {v}" for k, v in q["samples"].items())
              + ". Noise floor: the same distance from independent true sample sets of the same size "
              "(mean ± standard deviation over " + str(result["settings"]["floor_sets"]) + " sets); "
              "differences below that spread are not resolved, and deterministic samplers that have "
              "converged share one point set (the same noise), hence one number. NFE counted by "
              "wrapping the denoiser (Heun: 2n - 1 for n steps); each budget gets the most steps "
              "that fit. Every configuration in the sweep (ours: every time grid; diffusers: "
              "`DIFFUSERS_CONFIGS` in benchmarks/sampler_baselines.py; k-diffusion: Karras and "
              "exponential sigmas) is run at 10 NFE; each sampler is shown in its configuration of "
              "least error there, which is then run at the other budgets (all runs are in the JSON). "
              "diffusers schedulers are created fresh per run, clip_sample off.", ""]
    k_status = result["k_diffusion"]
    lines.append(f"k-diffusion: {k_status}.")
    lines.append("")
    for mixture, cs in result["curves"].items():
        floor, spread = q["noise_floor"][mixture], q["noise_floor_std"][mixture]
        lines += [f"## Error vs NFE — {mixture} (noise floor {fmt(floor)} ± {fmt(spread, 2)})", ""]
        budgets = result["settings"]["budgets"]
        rows = []
        for key, c in cs.items():
            cells = []
            for b in budgets:
                if b in c["budget"]:
                    i = c["budget"].index(b)
                    e = c["error"][i]
                    cell = fmt(e) if math.isfinite(e) else "fail"
                    cells.append(cell if c["nfe"][i] == b else f"{cell} ({c['nfe'][i]})")
                else:
                    cells.append("–")
            head = c["error"][c["budget"].index(HEADLINE_NFE)] if HEADLINE_NFE in c["budget"] else math.inf
            rows.append((head, [c["library"], c["algorithm"], c["config"], *cells]))
        rows.sort(key=lambda r: (r[0], r[1][0]))
        lines.append(markdown_table(["library", "sampler", "configuration (best at 10 NFE)",
                                     *[f"NFE {b}" for b in budgets]], [r for _, r in rows]))
        lines += ["", "A number in parentheses is the NFE actually spent where it is below the budget.", ""]
    lines += overhead_markdown(o, result["ratios"])
    failures = sorted({(r["library"], r["config"], r["failure"] or "non-finite samples")
                       for r in q["runs"] if not math.isfinite(r["error"])})
    if failures:
        lines += ["## Configurations that failed (non-finite samples or an exception)", ""]
        lines += [f"- {lib} {cfg}: {why}" for lib, cfg, why in failures]
        lines.append("")
    return "\n".join(lines)


ALGO_COLOURS = {"ddpm": "tab:gray", "ddim": "tab:brown", "euler": "tab:blue", "heun": "tab:orange",
                "dpmpp_2m": "tab:green", "dpmpp_2m_sde": "tab:olive", "dpmpp_3m": "tab:red",
                "dpmpp_3m_sde": "tab:pink", "unipc": "tab:purple"}
LIBRARY_STYLES = {OURS: ("-", "o"), DIFFUSERS: ("--", "s"), KDIFF: (":", "^")}


def plot_error_vs_nfe(curve_sets: dict, floors: dict, path: Path) -> Path:
    """Log-log error vs NFE per mixture: ours solid, diffusers dashed, k-diffusion dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, len(curve_sets), figsize=(6.5 * len(curve_sets), 5.2), squeeze=False)
    extra = iter(["tab:cyan", "black", "gold", "navy"])
    colours = dict(ALGO_COLOURS)
    for ax, (mixture, cs) in zip(axes[0], curve_sets.items()):
        for key, c in cs.items():
            colour = colours.setdefault(c["algorithm"], next(extra, "black"))
            style, marker = LIBRARY_STYLES[c["library"]]
            pts = [(n, e) for n, e in zip(c["nfe"], c["error"]) if math.isfinite(e)]
            if pts:
                ax.plot(*zip(*pts), linestyle=style, marker=marker, color=colour, lw=1.6, ms=4, alpha=0.9)
        ax.axhline(floors[mixture], color="k", lw=0.8, alpha=0.5)
        ax.text(5, floors[mixture], " noise floor", va="bottom", fontsize=8, alpha=0.7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        budgets = sorted({b for c in cs.values() for b in c["budget"]})
        ax.set_xticks(budgets)
        ax.set_xticklabels([str(b) for b in budgets])
        ax.xaxis.set_minor_formatter(NullFormatter())
        finite = [e for c in cs.values() for e in c["error"] if math.isfinite(e)]
        if finite:  # keep the interesting range readable: a sampler far off the chart leaves it
            ax.set_ylim(0.8 * min(min(finite), floors[mixture]), min(1.2 * max(finite), 30 * floors[mixture]))
        ax.set_xlabel("NFE (network evaluations)")
        ax.set_ylabel("sliced W2 to true samples")
        ax.set_title(mixture)
        ax.grid(True, which="both", alpha=0.25)
    used = sorted({c["algorithm"] for cs in curve_sets.values() for c in cs.values()})
    handles = [Line2D([], [], color=colours[a], lw=2, label=a) for a in used]
    handles += [Line2D([], [], color="k", linestyle=s, marker=m, label=lib) for lib, (s, m) in LIBRARY_STYLES.items()]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=9, frameon=False)
    fig.suptitle("Sampler error vs NFE, exact mixture denoiser (DDPM discrete VP schedule)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# the run


def run_benchmark(settings: Settings, out_dir: Path = RESULTS_DIR, command: str | None = None,
                  progress: bool = True) -> dict:
    """Quality sweep, overhead timing, targets; writes samplers.json / .md / .png into out_dir
    and returns the record."""
    kd, k_status = None, "not requested (--skip-kdiffusion)"
    if settings.kdiffusion:
        try:
            kd = base.load_kdiffusion_sampling()
            # where it came from, without this machine's paths (the record is committed)
            source = ("the installed package" if kd.__name__ == "k_diffusion.sampling" else
                      "sampling.py alone from the wheel (kept in $DIFFUSEKIT_DATA/k-diffusion/), under a stub package")
            k_status = (f"k-diffusion {base.KDIFFUSION_VERSION} {source}; samplers "
                        + ", ".join(base.KDIFFUSION_SAMPLERS))
        except base.KDiffusionUnavailable as err:
            k_status = f"unavailable: {err}"
    libraries = LIBRARIES if kd is not None else (OURS, DIFFUSERS)
    quality = run_quality(settings, kd, libraries, progress)
    best = select_best(quality["runs"], quality["selection_budget"])
    curve_sets = curves(quality["runs"], best)
    overhead = run_overhead(settings, overhead_pairs(best), kd, progress)
    ratios = overhead_ratios(overhead)
    targets = evaluate_targets(curve_sets, ratios, quality["noise_floor"], quality["noise_floor_std"])
    import diffusers

    versions = {"torch": torch.__version__, "diffusers": diffusers.__version__,
                "k-diffusion": base.KDIFFUSION_VERSION if kd is not None else None}
    split = lambda lib: {m: {k: c for k, c in cs.items() if c["library"] == lib} for m, cs in curve_sets.items()}
    metrics = {
        "targets": targets,
        "noise_floor": quality["noise_floor"],
        "noise_floor_std": quality["noise_floor_std"],
        "error_vs_nfe": split(OURS),
        "overhead_us_per_step": {a: libs[OURS] for a, libs in overhead["pairs"].items() if OURS in libs},
        "overhead_ratio": ratios,
        "denoiser_adapter_us_per_call": overhead["denoiser_adapter_us_per_call"],
        "settings": asdict(settings),
        "versions": versions,
        "sweep": [r for r in quality["runs"] if r["library"] == OURS],
    }
    baselines = {
        lib: {"error_vs_nfe": split(lib),
              "overhead_us_per_step": {a: libs[lib] for a, libs in overhead["pairs"].items() if lib in libs},
              "sweep": [r for r in quality["runs"] if r["library"] == lib]}
        for lib in (DIFFUSERS, KDIFF) if lib in libraries
    }
    if kd is None:
        baselines[KDIFF] = {"status": k_status}
    record = make_record("samplers", metrics, baselines, command=command)
    report = markdown_report({"quality": quality, "overhead": overhead, "targets": targets, "ratios": ratios,
                              "curves": curve_sets, "settings": asdict(settings), "k_diffusion": k_status})
    report += "\n![error vs NFE](samplers.png)\n"
    write_results(record, report, out_dir, title="Samplers: diffusekit vs diffusers vs k-diffusion")
    plot_error_vs_nfe(curve_sets, quality["noise_floor"], Path(out_dir) / "samplers.png")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and repetitions (smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="output folder (default benchmarks/results)")
    parser.add_argument("--skip-kdiffusion", action="store_true", help="leave k-diffusion out")
    args = parser.parse_args(argv)
    settings = Settings.quick() if args.quick else Settings.full()
    if args.skip_kdiffusion:
        settings = Settings(**{**asdict(settings), "kdiffusion": False})
    torch.set_num_threads(1)
    start = time.perf_counter()
    record = run_benchmark(settings, args.out)
    t = record["metrics"]["targets"]
    print(f"quality target met: {t['quality_at_10_nfe']['met']}; overhead target met: "
          f"{t['overhead_half_of_diffusers']['met']}; wrote {args.out}/samplers.{{json,md,png}} "
          f"in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
