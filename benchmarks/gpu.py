"""Every domain on one GPU within one wall-clock budget, and EDM's molecules at full size, recorded.

    python benchmarks/gpu.py 10m                 # the machine with the GPU: the whole budget
    python benchmarks/gpu.py 2m --domains molecules,digits --results DIR --runs DIR \\
        --set molecules:data.source=DIR --set molecules:network.hidden=16 ...

1. Smoke: each domain trains from its `presets/gpu.yaml` (the published scale on one GPU; see
   docs/gpu.md) for an equal share of `--smoke-share` of the budget (`trainer.max_time`), and
   ends like a finished run (a last validation with samples, checkpoint, weights, metrics):
   steps, examples per second, losses, peak GPU memory, or the one-line error of a domain that
   failed (the others still run).
2. Main: the molecule domain at EDM's size (its gpu preset: a 9-layer, 256-wide EGNN, batch 64,
   EDM's polynomial noise schedule) for most of what is left, keeping `--eval-share` of the rest
   for step 3 (the smoke run of the same domain says how long its start-up and end take).
3. Evaluation of that run: `--eval-n` molecules (1,000) at 100 NFE with the engine's best sampler
   for it (`--sampler dpmpp_2m --steps 100`), then at EDM's own 1,000 ancestral steps (ddpm on
   the uniform grid) when the time left covers 1.2 times the first evaluation's time scaled to
   1,000 steps; EDM's stability metrics (atom and molecule stability, validity, uniqueness,
   novelty).

Records (`diffusekit.core.app.results`: command, commit, machine, date) go to `--results`
(default benchmarks/results): `smoke_<device>.{json,md}` and `molecules_edm_<device>.{json,md}`,
<device> being gpu when torch sees one and cpu otherwise: the same script runs unchanged on a
CPU with a small budget (the tests do, on tiny data). Runs go under `--runs` (default runs/gpu).
`--set DOMAIN:KEY=VALUE` overrides one domain's config after its preset (repeatable). Bad input
(`10x` as the budget, a `--set` without a domain) is one `error:` line and exit status 2.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from diffusekit.core.app import config as configuration
from diffusekit.core.app import results as results_io
from diffusekit.core.errors import DiffusekitError
from diffusekit.core.registry import UnknownNameError

DOMAINS = ("audio", "image", "text", "molecules", "digits")
MAIN = "molecules"
EDM_NFE_STEPS = 1000  # EDM samples with 1,000 ancestral steps (Hoogeboom et al. 2022)


class UsageError(Exception):
    """Bad arguments: printed as one `error:` line."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors raised as `UsageError` (one line, not usage + error)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see benchmarks/gpu.py --help)")


# ---------------------------------------------------------------------------------- arguments
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(prog="benchmarks/gpu.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("budget", help="total wall-clock budget: 10m, 600s, 1.5h, DD:HH:MM:SS")
    parser.add_argument("--domains", default=",".join(DOMAINS),
                        help="comma-separated domains of the smoke phase (default: all five)")
    parser.add_argument("--preset", default="gpu", help="each domain's preset (presets/NAME.yaml)")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        metavar="DOMAIN:KEY=VALUE", help="a config override of one domain")
    parser.add_argument("--results", type=Path, default=results_io.RESULTS_DIR,
                        help="folder of the records (default: benchmarks/results)")
    parser.add_argument("--runs", type=Path, default=Path("runs") / "gpu",
                        help="root of the run folders (default: runs/gpu)")
    parser.add_argument("--smoke-share", type=float, default=0.2,
                        help="share of the budget the smoke runs train, together (default 0.2)")
    parser.add_argument("--eval-share", type=float, default=0.25,
                        help="share of what is left after the smoke runs kept for evaluation")
    parser.add_argument("--eval-n", type=int, default=1000, help="molecules evaluated")
    parser.add_argument("--sampler", default="dpmpp_2m", help="the engine sampler evaluated")
    parser.add_argument("--steps", type=int, default=100, help="its steps (dpmpp_2m: NFE)")
    args = parser.parse_args(argv)
    try:
        args.budget_seconds = configuration.duration_seconds(args.budget, "the budget")
    except DiffusekitError as exc:
        raise UsageError(str(exc)) from None
    args.domains = [d.strip() for d in args.domains.split(",") if d.strip()]
    if not args.domains:
        raise UsageError("--domains names no domain")
    for name, value in (("--smoke-share", args.smoke_share), ("--eval-share", args.eval_share)):
        if not 0 < value < 1:
            raise UsageError(f"{name} must be between 0 and 1, got {value}")
    if args.eval_n < 1 or args.steps < 1:
        raise UsageError("--eval-n and --steps must be at least 1")
    args.overrides = domain_overrides(args.sets)
    return args


def domain_overrides(sets: list[str]) -> dict[str, list[str]]:
    """{domain: [key=value, ...]} of `--set DOMAIN:KEY=VALUE` arguments."""
    out: dict[str, list[str]] = {}
    for item in sets:
        name, sep, override = item.partition(":")
        if not sep or not name or "=" not in override:
            raise UsageError(f"--set {item!r} is not of the form DOMAIN:KEY=VALUE")
        out.setdefault(name, []).append(override)
    return out


# ----------------------------------------------------------------------------------- training
def device_kind() -> str:
    """"gpu" when torch sees a CUDA device, else "cpu" (the records' suffix)."""
    return "gpu" if torch.cuda.is_available() else "cpu"


def peak_memory_gb() -> float | None:
    """The peak GPU memory torch allocated since the last reset (None on a CPU)."""
    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def budgeted_config(name: str, preset: str, seconds: float, overrides: list[str], runs: Path):
    """(domain, config) of `name`: its defaults, its preset, the overrides, a time budget."""
    from diffusekit.core.app.training.models import installed_domain

    domain = installed_domain(name)
    cfg = configuration.compose(
        domain.default_config(), domain=name, files=[configuration.preset_file(domain, preset)],
        overrides=[f"run_dir={runs}", *overrides, f"trainer.max_time={max(seconds, 1.0):.1f}s"])
    return domain, cfg


def train_budgeted(name: str, preset: str, seconds: float, overrides: list[str],
                   runs: Path) -> dict[str, Any]:
    """Train domain `name` for `seconds` of wall-clock training (its preset, then the
    overrides); the run's summary, or its error as one line."""
    from diffusekit.core.app.training import train

    started = time.perf_counter()
    try:
        domain, cfg = budgeted_config(name, preset, seconds, overrides, runs)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        run = train(domain, cfg)
    except (DiffusekitError, UnknownNameError, ImportError, OSError, RuntimeError,
            ValueError) as exc:
        return {"status": f"error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}",
                "wall_seconds": round(time.perf_counter() - started, 1)}
    m = run.read_metrics()
    network = domain.build_network(cfg)
    return {
        "status": "ok", "run": str(run.path), "budget_seconds": round(seconds, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "train_seconds": m.get("train_seconds"), "step": m.get("step"),
        "stopped_by": m.get("stopped_by"), "samples_per_s": m.get("samples_per_s"),
        "train_loss": m.get("train_loss"), "val_loss": m.get("val_loss"),
        "precision": m.get("precision"), "batch_size": int(cfg.data.batch_size),
        "parameters_m": round(sum(p.numel() for p in network.parameters()) / 1e6, 2),
        "peak_gpu_memory_gb": peak_memory_gb(),
    }


def smoke(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Phase 1: every domain for an equal share of `smoke_share` of the budget."""
    seconds = args.smoke_share * args.budget_seconds / len(args.domains)
    out = {}
    for name in args.domains:
        print(f"[gpu.py] smoke: {name} for {seconds:.0f} s of training", flush=True)
        out[name] = train_budgeted(name, args.preset, seconds, args.overrides.get(name, []),
                                   args.runs / "smoke")
        print(f"[gpu.py] smoke: {name}: {summary_line(out[name])}", flush=True)
    return out


def summary_line(result: dict[str, Any]) -> str:
    if result["status"] != "ok":
        return result["status"]
    return (f"{result['step']} steps in {result['train_seconds']} s, "
            f"{results_io.fmt(result['samples_per_s'], 4)} examples/s, "
            f"train loss {results_io.fmt(result['train_loss'], 4)}")


# --------------------------------------------------------------------------------- evaluation
def evaluate(run_path: str, sampler: str, steps: int, n: int,
             overrides: list[str] | None = None) -> dict[str, Any]:
    """The molecule metrics of `n` molecules from the run (`toolkit evaluate`'s code)."""
    from diffusekit.core.app.training import evaluate_run
    from diffusekit.core.app.training.models import installed_domain
    from diffusekit.core.app.training.runs import RunDir

    started = time.perf_counter()
    result = evaluate_run(installed_domain(MAIN), RunDir(Path(run_path)), sampler=sampler,
                          steps=steps, n=n, progress=False, overrides=overrides or [])
    return {**result["metrics"], "n": result["n"], "sampler": sampler, "steps": steps,
            "seconds": round(time.perf_counter() - started, 1)}


def main_phase(args: argparse.Namespace, deadline: float, smoke_result: dict[str, Any] | None,
               save: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Phases 2 and 3: the molecule domain at EDM's size, then its evaluation; `save(result)`
    after the training and after each evaluation, so a run cut short still leaves its record."""
    left = deadline - time.monotonic()
    overhead = 0.0  # start-up and end of a run beyond its training budget, from the smoke run
    if smoke_result and smoke_result.get("status") == "ok":
        overhead = max(0.0, smoke_result["wall_seconds"] - smoke_result["budget_seconds"])
    seconds = max(1.0, left * (1 - args.eval_share) - overhead)
    print(f"[gpu.py] main: {MAIN} at EDM size for {seconds:.0f} s of training", flush=True)
    out: dict[str, Any] = {"train": train_budgeted(MAIN, args.preset, seconds,
                                                   args.overrides.get(MAIN, []), args.runs)}
    print(f"[gpu.py] main: {summary_line(out['train'])}", flush=True)
    out["evaluation"] = {}
    save(out)
    if out["train"]["status"] != "ok":
        return out
    run = out["train"]["run"]
    key = f"{args.sampler}_{args.steps}"
    print(f"[gpu.py] evaluation: {args.eval_n} molecules, {args.sampler} {args.steps} steps",
          flush=True)
    try:
        first = evaluate(run, args.sampler, args.steps, args.eval_n)
    except (DiffusekitError, UnknownNameError, ImportError, OSError, RuntimeError) as exc:
        out["evaluation"][key] = {"status": f"error: {' '.join(str(exc).split())[:300]}"}
        save(out)
        return out
    out["evaluation"][key] = first
    save(out)
    # EDM's 1,000 ancestral steps cost about 1000 / steps times the first evaluation
    estimate = 1.2 * first["seconds"] * EDM_NFE_STEPS / args.steps
    left = deadline - time.monotonic()
    edm_key = f"ddpm_{EDM_NFE_STEPS}"
    if estimate <= left:
        print(f"[gpu.py] evaluation: {args.eval_n} molecules, ddpm {EDM_NFE_STEPS} steps",
              flush=True)
        out["evaluation"][edm_key] = evaluate(run, "ddpm", EDM_NFE_STEPS, args.eval_n,
                                              ["process.grid=uniform"])
    else:
        out["evaluation"][edm_key] = {"status": f"skipped: about {estimate:.0f} s needed, "
                                                f"{max(left, 0):.0f} s left"}
    save(out)
    return out


# ------------------------------------------------------------------------------------ records
SMOKE_COLUMNS = [("status", "status"), ("step", "steps"), ("train_seconds", "train s"),
                 ("samples_per_s", "examples/s"), ("batch_size", "batch"),
                 ("parameters_m", "params (M)"), ("precision", "precision"),
                 ("train_loss", "train loss"), ("val_loss", "val loss"),
                 ("peak_gpu_memory_gb", "peak GPU GB")]
METRICS = ("atom_stability", "mol_stability", "validity", "valid_unique", "novelty")  # percent


def write_smoke(args: argparse.Namespace, results: dict[str, dict[str, Any]], kind: str,
                seconds: float) -> tuple[Path, Path]:
    metrics = {"budget_seconds": args.budget_seconds, "smoke_seconds": round(seconds, 1),
               "preset": args.preset, "domains": results}
    record = results_io.make_record(f"smoke_{kind}", metrics, {}, command=args.command)
    rows = [[name] + [r.get(key) for key, _ in SMOKE_COLUMNS] for name, r in results.items()]
    body = (f"Each domain's `presets/{args.preset}.yaml` trained for "
            f"{args.smoke_share * args.budget_seconds / len(results):.0f} s of a "
            f"{args.budget_seconds:.0f} s budget (`trainer.max_time`), then ended like a finished "
            f"run; {seconds:.0f} s in all. Examples per second leave out each start's first "
            "step and the validations.\n\n"
            + results_io.markdown_table(["domain"] + [h for _, h in SMOKE_COLUMNS], rows, 4))
    return results_io.write_results(record, body, args.results,
                                    title=f"Smoke runs of every domain ({kind})")


def write_main(args: argparse.Namespace, result: dict[str, Any], kind: str,
               seconds: float) -> tuple[Path, Path]:
    from diffusekit.domains.molecules.benchmark import BASELINES

    metrics = {"budget_seconds": args.budget_seconds, "total_seconds": round(seconds, 1),
               "preset": args.preset, **result}
    record = results_io.make_record(f"molecules_edm_{kind}", metrics, BASELINES,
                                    command=args.command)
    train = result["train"]
    lines = [f"The molecule domain's `presets/{args.preset}.yaml` (EDM's size) trained for "
             f"{train.get('budget_seconds', '-')} s: {summary_line(train)}; "
             f"{seconds:.0f} s of a {args.budget_seconds:.0f} s budget in all.", ""]
    rows = []
    for key, r in result["evaluation"].items():
        if "status" in r:
            rows.append([key, "-"] + [None] * len(METRICS) + [r["status"]])
        else:
            rows.append([r["sampler"], r["steps"]] + [r.get(m) for m in METRICS]
                        + [r["seconds"]])
    rows += [[f"{k} (published)", "1000" if k == "edm_1000" else "-"]
             + [v.get(m) for m in METRICS] + [None] for k, v in BASELINES.items()]
    lines.append(results_io.markdown_table(
        ["sampler", "steps", "atom stab. %", "mol stab. %", "valid %", "valid & unique %",
         "novel %", "seconds"], rows, 4))
    return results_io.write_results(record, "\n".join(lines), args.results,
                                    title=f"EDM-size molecules within a budget ({kind})")


# --------------------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    deadline = started + args.budget_seconds
    kind = device_kind()
    print(f"[gpu.py] {kind}, budget {args.budget_seconds:.0f} s, domains {args.domains}",
          flush=True)
    smoke_results = smoke(args)
    paths = list(write_smoke(args, smoke_results, kind, time.monotonic() - started))
    main_result = main_phase(
        args, deadline, smoke_results.get(MAIN),
        lambda result: paths.extend(write_main(args, result, kind, time.monotonic() - started)))
    for path in sorted(set(paths)):
        print(f"[gpu.py] wrote {path}", flush=True)
    return 0 if main_result["train"]["status"] == "ok" else 1


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse_args(given)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # the records name this script and its arguments, also when it is called in-process
    args.command = " ".join(["python", "benchmarks/gpu.py", *map(shlex.quote, given)])
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
