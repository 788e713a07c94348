"""The distillation benchmark of any domain: `toolkit benchmark --domain D --distill [--quick]`.

Quality against the number of network evaluations (NFE) per sample, for a consistency student
and for the teacher it was distilled from:

1. a teacher: `distill.benchmark.teacher_steps` steps of the domain's own training
   (`train_for_benchmark`, the trainer of `toolkit train`, with `teacher_overrides`), exported
   as a model folder;
2. its student: `toolkit distill` of that folder (`distill_config`: the run's `distill` settings,
   `distill.steps` = `target_nfe`) for `student_steps` steps, through the same trainer;
3. the systems, each generating for the same `n` examples of the domain's data (its predict or
   test split) from the same seed: the student with the `consistency` sampler at every NFE of
   `nfe`, on the grid of each `renoise_max` value (`distill.renoise_max`); the teacher with every
   sampler of `samplers` on every time grid of `grids`, at the most steps that fit each budget of
   `nfe` and `reference_nfe` (each system at its best grid and sampler counts; the NFE of a setting is counted by wrapping the network, so
   heun's 2n - 1 and classifier-free guidance's two evaluations a step are counted, not assumed);
4. scores: the domain's `evaluate` metrics of all of a system's samples at once, and the wall
   time per sample of the generation (one process, the torch threads of the run).

The record `<domain>_distill[_quick].{json,md,png}` gives every row, the student against the
teacher's best sampler at each NFE and against the teacher at `reference_nfe` on the headline
`metric`, and the targets the domain's config sets (`target_vs_reference`: student at
`target_nfe` <= that x the teacher at `reference_nfe`; `target_vs_same_nfe`: <= that x the
teacher's best at `target_nfe`; `within`: metrics the student keeps within a tolerance of the
teacher's at `reference_nfe`; lower is better unless `higher_is_better`).
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from diffusekit.core.app import results
from diffusekit.core.app.config import typed
from diffusekit.core.app.distill import StudentProcess, distill_config
from diffusekit.core.app.training.fit import train_for_benchmark
from diffusekit.core.app.training.inference import example_batches
from diffusekit.core.app.training.models import Model, export_model, load_model
from diffusekit.core.app.training.module import batch_size, concat_batches, slice_batch
from diffusekit.core.errors import ConfigError

SHOWN = 8  # samples per setting in the record's figure (image domains)


class CountingNetwork(torch.nn.Module):
    """The network with a count of its calls (the NFE of a generation, over its batch)."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network, self.calls = network, 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.network(*args, **kwargs)


def options(cfg: DictConfig) -> dict[str, Any]:
    """The benchmark's settings from `distill.benchmark` (the quick_* sizes with --quick)."""
    b = cfg.distill.benchmark
    quick = bool(cfg.get("quick", False))
    pick = (lambda k: f"distill.benchmark.quick_{k}") if quick else (lambda k: f"distill.benchmark.{k}")
    out = {"teacher_steps": typed(cfg, pick("teacher_steps"), int),
           "student_steps": typed(cfg, pick("student_steps"), int), "n": typed(cfg, pick("n"), int),
           "nfe": [int(v) for v in b.nfe], "reference_nfe": typed(cfg, "distill.benchmark.reference_nfe", int),
           "samplers": [str(s) for s in b.samplers], "grids": [str(g) for g in b.grids], "renoise_max": [float(v) for v in b.renoise_max],
           "target_nfe": typed(cfg, "distill.benchmark.target_nfe", int),
           "teacher_overrides": [str(o) for o in b.teacher_overrides], "quick": quick,
           "metric": None if b.get("metric") is None else str(b.metric),
           "higher_is_better": bool(b.higher_is_better),
           "target_vs_reference": b.get("target_vs_reference"), "target_vs_same_nfe": b.get("target_vs_same_nfe"),
           "within": {str(k): float(v) for k, v in (b.get("within") or {}).items()}}
    if out["target_nfe"] not in out["nfe"] or min(out["nfe"]) <= 0:
        raise ConfigError(f"distill.benchmark.nfe must be positive and hold target_nfe={out['target_nfe']}, "
                          f"got {out['nfe']}")
    return out


def run_distill_benchmark(domain: Any, cfg: DictConfig) -> dict[str, Any]:
    """Train the teacher and its student, score every system (module docstring); write the record
    (`distill.benchmark.results_dir`, else benchmarks/results/) and return its metrics."""
    opts = options(cfg)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="diffusekit-distill-") as scratch:
        work = Path(cfg.distill.benchmark.run_dir) if cfg.distill.benchmark.get("run_dir") else Path(scratch)
        teacher_run = train_for_benchmark(domain, cfg, opts["teacher_steps"], work / "runs",
                                          overrides=opts["teacher_overrides"])
        teacher_folder = work / "teacher"
        export_model(teacher_run.run, teacher_folder, domain=domain)
        _, student_cfg = distill_config(teacher_folder, overrides=(f"distill.steps={opts['target_nfe']}",),
                                        domain=domain)
        student_run = train_for_benchmark(domain, student_cfg, opts["student_steps"], work / "runs")
        teacher = load_model(teacher_folder, domain=domain)
        student = load_model(student_run.run.path, domain=domain)
        examples = list(example_batches(domain.build_datamodule(teacher.cfg), opts["n"]))
        shown: dict[int, torch.Tensor] = {}
        rows = score_systems(domain, teacher, student, examples, opts, seed=int(cfg.seed), log=_log,
                             shown=shown)
    metrics = summary(rows, opts)
    metrics.update(teacher_train_seconds=teacher_run.seconds, student_train_seconds=student_run.seconds,
                   teacher_train_loss=teacher_run.final_loss(), student_train_loss=student_run.final_loss(),
                   teacher_steps=opts["teacher_steps"], student_steps=opts["student_steps"], n=opts["n"],
                   quick=opts["quick"], rows=rows, torch_threads=torch.get_num_threads(),
                   distill={k: v for k, v in OmegaConf.to_container(student_cfg.distill, resolve=True).items()
                            if k not in ("benchmark", "teacher")},  # teacher: a path on this machine
                   seconds=round(time.time() - started, 1))
    name = f"{domain.name}_distill{'_quick' if opts['quick'] else ''}"
    record = results.make_record(name, metrics, {})
    b = cfg.distill.benchmark
    out = Path(b.results_dir) if b.get("results_dir") else results.RESULTS_DIR
    title = f"{domain.name}: a consistency student against its teacher, quality vs NFE"
    _, markdown = results.write_results(record, _markdown(metrics, opts), out, title=title)
    _plot(metrics, opts, out / f"{name}.png", title, shown)
    with markdown.open("a") as f:
        f.write(f"\n![quality against NFE]({name}.png)\n")
    return metrics


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cost(sampler: str, steps: int, per_call: int) -> int:
    """NFE of `steps` steps of `sampler` when one denoiser call costs `per_call` network calls
    (2 with classifier-free guidance): heun's last step is an Euler step (EDM Algorithm 2)."""
    return per_call * (2 * steps - 1 if sampler == "heun" else steps)


def steps_within(sampler: str, budget: int, per_call: int) -> int:
    """The most steps of `sampler` whose NFE fits `budget` (0: none fits)."""
    steps = 0
    while cost(sampler, steps + 1, per_call) <= budget:
        steps += 1
    return steps


@torch.no_grad()
def generate(model: Model, examples: list[dict], *, sampler: str, steps: int, seed: int,
             grid: str | None = None) -> tuple[dict, torch.Tensor, float, float]:
    """(all examples as one batch, all samples, NFE per sample, seconds per sample) of `model`
    on `examples` with `sampler` at `steps` steps (on the time grid `grid`; None: the process's),
    the noise from a generator seeded with `seed`."""
    network = CountingNetwork(model.network)
    generator = torch.Generator().manual_seed(seed)
    samples, n, started = [], 0, time.perf_counter()
    options = {} if grid is None else {"grid": grid}
    for batch in examples:
        samples.append(model.process.generate(network, batch, sampler=sampler, steps=steps, generator=generator,
                                              **options))
        n += batch_size(batch)
    seconds = time.perf_counter() - started
    batch = examples[0]
    for more in examples[1:]:
        batch = concat_batches(batch, more)
    return batch, torch.cat(samples), network.calls / len(examples), seconds / n


def score_systems(domain: Any, teacher: Model, student: Model, examples: list[dict],
                  opts: dict[str, Any], *, seed: int, log: Any = None,
                  shown: dict[int, Any] | None = None) -> list[dict[str, Any]]:
    """One row per setting: {system, sampler, steps, nfe, seconds_per_sample, **metrics}; with
    `shown`, the first SHOWN samples of row i go to shown[i] when they are images ([B, C, H, W])."""
    rows = []

    def row(system: str, model: Model, sampler: str, steps: int, grid: str | None = None) -> None:
        batch, samples, nfe, seconds = generate(model, examples, sampler=sampler, steps=steps, seed=seed, grid=grid)
        metrics = {k: float(v) for k, v in domain.evaluate(batch, samples, model.cfg).items()}
        if shown is not None and isinstance(samples, torch.Tensor) and samples.dim() == 4:
            shown[len(rows)] = samples[:SHOWN].float().cpu()
        rows.append({"system": system, "sampler": sampler, "grid": grid or "student_grid", "steps": steps,
                     "nfe": nfe, "seconds_per_sample": seconds, **metrics})
        if log is not None:
            log(f"{system}, {sampler} x {steps} ({grid or 'student grid'}): {nfe:g} NFE, " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))

    for i, renoise in enumerate(opts["renoise_max"]):  # the student's grids: each distill.renoise_max
        process = StudentProcess(student.process.process, replace(student.process.settings, renoise_max=renoise))
        for nfe in opts["nfe"]:
            if nfe > 1 or i == 0:  # one step never re-noises: one grid is enough
                row(f"student, renoise_max {renoise:g}", replace(student, process=process), "consistency", nfe)
    probe = slice_batch(examples[0], 1)
    _, _, per_call, _ = generate(teacher, [probe], sampler="ddim", steps=1, seed=seed)  # 1 or 2 calls a step
    for budget in sorted({*opts["nfe"], opts["reference_nfe"]}):
        for sampler in opts["samplers"]:
            steps = steps_within(sampler, budget, int(per_call))
            for i, grid in enumerate(opts["grids"] if steps else []):
                if steps > 1 or i == 0:  # one step is [t_max, 0] on every grid
                    row("teacher", teacher, sampler, steps, grid)
    return rows


def _headline(rows: list[dict], opts: dict[str, Any]) -> str:
    metric = opts["metric"]
    known = [k for k in rows[0] if k not in ("system", "sampler", "grid", "steps", "nfe", "seconds_per_sample")]
    if metric is None:
        return known[0]
    if metric not in known:
        raise ConfigError(f"distill.benchmark.metric={metric!r} is not among the domain's metrics {known}")
    return metric


def summary(rows: list[dict], opts: dict[str, Any]) -> dict[str, Any]:
    """The student against the teacher's best sampler at each budget, against the teacher at
    reference_nfe, and the targets."""
    metric = _headline(rows, opts)
    sign = -1.0 if opts["higher_is_better"] else 1.0

    def best(candidates: list[dict]) -> dict | None:
        return min(candidates, key=lambda r: sign * r[metric], default=None)

    teacher = [r for r in rows if r["system"] == "teacher"]
    student = {}  # NFE -> the student's best row (over its grids)
    for r in rows:
        if r["system"].startswith("student") and (r["steps"] not in student
                                                  or sign * r[metric] < sign * student[r["steps"]][metric]):
            student[r["steps"]] = r
    per_nfe = {}
    for nfe in sorted({*opts["nfe"], opts["reference_nfe"]}):
        top = best([r for r in teacher if r["nfe"] <= nfe and r["nfe"] > nfe / 2])
        per_nfe[nfe] = {"student": student[nfe][metric] if nfe in student else None,
                        "student_grid": student[nfe]["system"] if nfe in student else None,
                        "teacher_best": None if top is None else top[metric],
                        "teacher_sampler": None if top is None else f"{top['sampler']} x {top['steps']}, {top['grid']}"}
    reference = per_nfe[opts["reference_nfe"]]["teacher_best"]
    at = student[opts["target_nfe"]]
    same = per_nfe[opts["target_nfe"]]["teacher_best"]
    out: dict[str, Any] = {"metric": metric, "higher_is_better": opts["higher_is_better"], "per_nfe": per_nfe,
                           "student_over_reference": None if not reference else at[metric] / reference,
                           "student_over_same_nfe": None if not same else at[metric] / same}
    targets = {}
    if opts["target_vs_reference"] is not None and out["student_over_reference"] is not None:
        targets["vs_reference"] = sign * (at[metric] - float(opts["target_vs_reference"]) * reference) <= 0
    if opts["target_vs_same_nfe"] is not None and out["student_over_same_nfe"] is not None:
        targets["vs_same_nfe"] = sign * (at[metric] - float(opts["target_vs_same_nfe"]) * same) <= 0
    reference_row = best([r for r in teacher if r["nfe"] <= opts["reference_nfe"]
                          and r["nfe"] > opts["reference_nfe"] / 2])
    for key, tolerance in opts["within"].items():
        if reference_row is not None and key in at:
            out[f"{key}_student"], out[f"{key}_teacher_reference"] = at[key], reference_row[key]
            targets[f"{key}_within_{tolerance:g}"] = abs(at[key] - reference_row[key]) <= tolerance
    out["targets"] = targets
    return out


def _markdown(m: dict[str, Any], opts: dict[str, Any]) -> str:
    metric = m["metric"]
    keys = [k for k in m["rows"][0] if k not in ("system", "sampler", "grid", "steps", "nfe", "seconds_per_sample")]
    table = [[r["system"], r["sampler"], r["grid"], r["steps"], r["nfe"], *(r[k] for k in keys),
              1000 * r["seconds_per_sample"]] for r in m["rows"]]
    head = [[nfe, v["student"], (v["student_grid"] or "-").replace("student, ", ""), v["teacher_best"],
             v["teacher_sampler"] or "-"] for nfe, v in m["per_nfe"].items()]
    verdicts = [f"- {name}: **{'met' if ok else 'not met'}**" for name, ok in m["targets"].items()]
    better = "higher" if m["higher_is_better"] else "lower"
    lines = [
        f"Teacher: {m['teacher_steps']} training steps ({m['teacher_train_seconds']} s); student: "
        f"{m['distill']['kind']} consistency distillation of it, {m['student_steps']} steps "
        f"({m['student_train_seconds']} s; {m['distill']['grid_steps']} ODE intervals, the teacher's "
        f"{m['distill']['solver']} step, {m['distill']['metric']} metric, guidance {m['distill']['guidance']}). "
        f"Every setting generates for the same {m['n']} examples from the same seed; NFE are counted "
        f"network calls per sample; ms / sample is the wall time of generation ({m['torch_threads']} "
        "torch threads).", "",
        f"Headline metric `{metric}` ({better} is better): the student at each NFE against the teacher's "
        "best sampler at that budget (NFE in (budget / 2, budget]):", "",
        results.markdown_table(["NFE", "student", "student's grid", "teacher's best", "teacher's sampler x steps, grid"],
                               head, digits=4), "",
        f"- the student at {opts['target_nfe']} NFE is {results.fmt(m['student_over_reference'])}x the teacher "
        f"at {opts['reference_nfe']} NFE and {results.fmt(m['student_over_same_nfe'])}x the teacher's best at "
        f"{opts['target_nfe']} NFE",
        *verdicts, "", "Every setting:", "",
        results.markdown_table(["system", "sampler", "grid", "steps", "NFE", *keys, "ms / sample"], table, digits=4)]
    return "\n".join(lines)


def _shown_rows(m: dict[str, Any], shown: dict[int, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """(label, images) of the settings the figure shows: the student's best grid at each NFE and
    the teacher's best setting at each budget (the record's per-NFE table), where kept."""
    rows, picked = m["rows"], []
    for nfe, entry in m["per_nfe"].items():
        for who, key in (("student", "student_grid"), ("teacher", "teacher_sampler")):
            want = entry[key]
            for i, r in enumerate(rows):
                label = r["system"] if who == "student" else f"{r['sampler']} x {r['steps']}, {r['grid']}"
                if want is not None and label == want and r["system"].startswith(who) and \
                        (r["steps"] == int(nfe) if who == "student" else int(nfe) / 2 < r["nfe"] <= int(nfe)) \
                        and i in shown:
                    picked.append((f"{who} {r['nfe']:g} NFE\n{r[m['metric']]:.3g}", shown[i]))
                    break
    return picked


def _plot(m: dict[str, Any], opts: dict[str, Any], path: Path, title: str,
          shown: dict[int, torch.Tensor] | None = None) -> Path:
    """The headline metric and the seconds per sample against NFE (the student on each of its
    grids, the teacher's best grid per sampler); below, for image samples, the first SHOWN
    samples of the student and of the teacher's best setting at each NFE."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metric, sign = m["metric"], -1.0 if m["higher_is_better"] else 1.0
    pictures = _shown_rows(m, shown or {})
    fig = Figure(figsize=(12, 4.5 + (3.0 if pictures else 0)), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2 if pictures else 1, max(2, len(pictures)),
                            height_ratios=[1.5, 1] if pictures else [1])
    half = max(2, len(pictures)) // 2
    for i, (key, ylabel) in enumerate(((metric, metric), ("seconds_per_sample", "seconds per sample"))):
        ax = fig.add_subplot(grid[0, :half] if i == 0 else grid[0, half:])
        lines: dict[str, dict[float, float]] = {}
        for r in m["rows"]:  # the student per grid; the teacher per sampler, its best grid at each NFE
            name = r["system"] if r["system"] != "teacher" else f"teacher, {r['sampler']}"
            best = lines.setdefault(name, {})
            score = r[metric]
            if r["nfe"] not in best or sign * score < sign * lines[name][r["nfe"]][0]:
                best[r["nfe"]] = (score, r[key])
        for name, by_nfe in lines.items():
            pts = sorted((nfe, value) for nfe, (_, value) in by_nfe.items())
            ax.plot(*zip(*pts), "s-" if name.startswith("student") else "o--", label=name)
        values = [r[key] for r in m["rows"]]
        log_y = key == "seconds_per_sample" or (sign > 0 and min(values) > 0)
        ax.set(xscale="log", xlabel="NFE per sample", ylabel=ylabel, yscale="log" if log_y else "linear")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    for j, (label, images) in enumerate(pictures):
        ax = fig.add_subplot(grid[1, j])
        ax.imshow(_tile(images), cmap="gray", vmin=0.0, vmax=1.0)
        ax.set_title(label, fontsize=7)
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _tile(images: torch.Tensor, columns: int = 2) -> Any:
    """[N, C, H, W] in [-1, 1] -> an [rows * H, columns * W(, 3)] array in [0, 1]."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    canvas = torch.zeros(c, rows * h, columns * w)
    for k in range(n):
        canvas[:, (k // columns) * h:(k // columns + 1) * h, (k % columns) * w:(k % columns + 1) * w] = images[k]
    canvas = ((canvas.clamp(-1, 1) + 1) / 2).permute(1, 2, 0)
    return (canvas[..., 0] if c == 1 else canvas[..., :3]).numpy()
