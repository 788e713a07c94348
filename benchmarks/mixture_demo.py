"""The engine demo (`make demo`): sample the 2-D ring of Gaussians with its exact denoiser.

Several of the engine's samplers, each at a few step counts, start from the same noise; their
error is the sliced 2-Wasserstein distance to true samples (the noise floor, between two true
sample sets of the same size, is printed beside it). Writes into --out:

    mixture_demo.png   scatter grid: rows = samplers, columns = steps, true samples faint behind
    mixture_demo.json  the numbers (the benchmarks' result record), mixture_demo.md the table

    python benchmarks/mixture_demo.py --out demo [--samples 4000] [--steps 5 10 25]

The error uses all --samples points; the scatter shows the first 2000.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffusekit.core.app.results import fmt, make_record, markdown_table, write_results  # noqa: E402
from benchmarks.samplers import SlicedW2ToReference, exact_denoiser  # noqa: E402
from diffusekit.core import samplers, schedules  # noqa: E402
from diffusekit.core.analytic import GaussianMixture  # noqa: E402

#: sampler -> the time grid it is shown on (deterministic first, then the stochastic ones).
DEMO_SAMPLERS = {
    "ddim": "trailing",
    "euler": "karras",
    "heun": "karras",
    "dpmpp_2m": "log_snr",
    "dpmpp_3m": "log_snr",
    "ddpm": "trailing",
    "dpmpp_2m_sde": "log_snr",
}
DEMO_STEPS = (5, 10, 25)
PLOT_POINTS = 2000


def run_demo(n_samples: int = 4000, steps: tuple[int, ...] = DEMO_STEPS,
             sampler_grids: dict[str, str] | None = None, seed: int = 0) -> dict:
    """Sample the ring with each sampler at each step count.

    Returns {"true": [n, 2], "samples": {sampler: {steps: [n, 2]}}, "error": {sampler: {steps:
    sw}}, "nfe": {sampler: {steps: nfe}}, "noise_floor": sw, "grids": {...}}.
    """
    sampler_grids = {k: v for k, v in (sampler_grids or DEMO_SAMPLERS).items() if k in samplers.names()}
    schedule = schedules.get("vp_discrete")
    mixture = GaussianMixture.ring_2d()
    exact = exact_denoiser(mixture, schedule)  # = mixture.denoiser(schedule), one alpha(t) per batch
    true = mixture.sample(n_samples, torch.Generator().manual_seed(seed + 1))
    metric = SlicedW2ToReference(true, n_projections=256, seed=seed + 3)  # = core.analytic.sliced_wasserstein
    floor = metric(mixture.sample(n_samples, torch.Generator().manual_seed(seed + 2)))
    noise = torch.randn(n_samples, 2, generator=torch.Generator().manual_seed(seed))
    out = {"true": true, "samples": {}, "error": {}, "nfe": {}, "noise_floor": floor, "grids": sampler_grids}
    for name, grid in sampler_grids.items():
        for n in steps:
            calls = [0]

            def denoiser(x, t, **cond):
                calls[0] += 1
                return exact(x, t, **cond)

            ts = schedules.time_grid(schedule, n, kind=grid)
            with torch.no_grad():
                x0 = samplers.get(name)(denoiser, noise, ts, schedule, generator=torch.Generator().manual_seed(seed + 4))
            out["samples"].setdefault(name, {})[n] = x0
            out["nfe"].setdefault(name, {})[n] = calls[0]
            out["error"].setdefault(name, {})[n] = metric(x0)
    return out


def plot_grid(result: dict, path: Path) -> Path:
    """Scatter grid: one row per sampler, one column per step count, true samples in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["samples"])
    steps = list(next(iter(result["samples"].values())))
    fig, axes = plt.subplots(len(names), len(steps), figsize=(2.6 * len(steps) + 0.9, 2.6 * len(names)),
                             squeeze=False, sharex=True, sharey=True)
    true = result["true"][:PLOT_POINTS].numpy()
    for i, name in enumerate(names):
        for j, n in enumerate(steps):
            ax = axes[i, j]
            x = result["samples"][name][n][:PLOT_POINTS].float().numpy()
            ax.scatter(true[:, 0], true[:, 1], s=2, c="0.8", lw=0, rasterized=True)
            ax.scatter(x[:, 0], x[:, 1], s=2, c="tab:blue", lw=0, alpha=0.6, rasterized=True)
            ax.text(0.03, 0.97, f"SW {result['error'][name][n]:.3f}\nNFE {result['nfe'][name][n]}",
                    transform=ax.transAxes, va="top", fontsize=8, family="monospace")
            ax.set_xlim(-3.2, 3.2)
            ax.set_ylim(-3.2, 3.2)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"{n} steps", fontsize=11)
            if j == 0:
                ax.set_ylabel(f"{name}\n({result['grids'][name]} grid)", fontsize=10)
    fig.suptitle(f"2-D ring, exact denoiser, DDPM schedule (grey: true samples; "
                 f"noise floor SW {result['noise_floor']:.3f})", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo"), help="output folder (default ./demo)")
    parser.add_argument("--samples", type=int, default=4000, help="samples per sampler and step count")
    parser.add_argument("--steps", type=int, nargs="+", default=list(DEMO_STEPS), help="step counts")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    result = run_demo(args.samples, tuple(args.steps))
    steps = list(args.steps)
    rows = [[name, result["grids"][name], *[result["error"][name][n] for n in steps]] for name in result["error"]]
    table = markdown_table(["sampler", "grid", *[f"{n} steps" for n in steps]], rows)
    print(f"sliced W2 to true samples, 2-D ring ({args.samples} samples; noise floor {fmt(result['noise_floor'])})")
    print(table)
    metrics = {"mixture": "ring_2d", "samples": args.samples, "steps": steps, "grids": result["grids"],
               "noise_floor": result["noise_floor"], "sliced_w2": result["error"], "nfe": result["nfe"]}
    record = make_record("mixture_demo", metrics, {})
    body = (f"Sliced W2 to true samples ({args.samples} samples; noise floor {fmt(result['noise_floor'])}); "
            f"heun spends 2n - 1 NFE for n steps.\n\n{table}\n\n![samples](mixture_demo.png)\n")
    json_path, md_path = write_results(record, body, args.out, title="Engine demo: the 2-D ring mixture")
    png = plot_grid(result, args.out / "mixture_demo.png")
    print(f"wrote {png}, {json_path}, {md_path} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
