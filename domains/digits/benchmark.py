"""`toolkit benchmark --domain digits [--quick]`: samplers x steps x guidance, scored by a digit
classifier against the test set.

0. The MNIST digits (fetched like `toolkit prepare --domain digits` when not yet in the data
   cache; `data.folder` instead when set, with one sub-folder per class).
1. The digit classifier (metrics.py): trained on the train split once and cached by hash; the
   record states its test accuracy. Its penultimate features of the test set give the reference
   statistics (mu, S) of classifier FD.
2. The reference values: the test set's own label accuracy (= the classifier's test accuracy)
   and the classifier FD between `n` training digits and the test set (what real digits score).
3. The diffusion model: `benchmark.train_steps` steps through the toolkit's trainer
   (`train_for_benchmark`: `toolkit train --domain digits trainer.max_steps=N
   optim.decay=<benchmark.lr_decay> seed=<benchmark.seed>`, EMA weights).
4. For each setting (sampler, steps, guidance w) - every combination (`benchmark.grid=product`)
   or a steps sweep at w = `cross_guidance` plus a guidance sweep at `cross_steps` steps
   (`cross`) - generate `n_samples` digits with labels 0..9 in turn from the same noise, and
   score their classifier FD against the test set and their label accuracy. Samplers are the
   engine's registered ones (`diffusekit.core.samplers`), run through `GuidedDiffusion.generate`.

Targets (issue 17): label accuracy >= 97% at some w <= 3 within 20 steps; classifier FD at 20
steps within 1.2x of its value at 100 steps (the sampler with the lowest FD at 20 steps, at
`cross_guidance`). Results go to benchmarks/results/digits[_quick].{json,md,png}; the PNG holds
FD against steps, label accuracy against guidance and a grid of digits per class and guidance.
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
from tqdm.auto import tqdm

from diffusekit.core.app import results as results_io
from diffusekit.core.app.training.fit import train_for_benchmark
from diffusekit.domains.digits.metrics import (as_numpy_grid, balanced_labels, classify,
                                               feature_fd, feature_statistics, sample_scores)
from diffusekit.domains.digits.sketch_benchmark import (sketch_figure, sketch_options, sketch_rows,
                                                        sketch_targets, step_time_ratio,
                                                        train_controls)


def _options(cfg: DictConfig, quick: bool) -> dict[str, Any]:
    """The benchmark's sizes, the quick_* ones with --quick."""
    b = cfg.benchmark
    pick = (lambda k: b[f"quick_{k}"]) if quick else (lambda k: b[k])
    return {"train_steps": int(pick("train_steps")), "n_samples": int(pick("n_samples")),
            "samplers": [str(s) for s in pick("samplers")],
            "steps": [int(s) for s in pick("steps")],
            "guidance": [float(w) for w in pick("guidance")], "grid": str(pick("grid"))}


def settings_of(opts: dict[str, Any], cross_guidance: float,
                cross_steps: int) -> list[tuple[str, int, float]]:
    """The (sampler, steps, guidance) settings of the benchmark grid (see the module docstring),
    without repeats, in a stable order."""
    if opts["grid"] == "product":
        out = [(s, n, w) for s in opts["samplers"] for n in opts["steps"] for w in opts["guidance"]]
    elif opts["grid"] == "cross":
        out = [(s, n, cross_guidance) for s in opts["samplers"] for n in opts["steps"]]
        out += [(s, cross_steps, w) for s in opts["samplers"] for w in opts["guidance"]]
    else:
        from diffusekit.core.errors import ConfigError

        raise ConfigError(f"benchmark.grid must be product or cross, not {opts['grid']!r}")
    return list(dict.fromkeys(out))


@torch.no_grad()
def generate_digits(process: Any, network: torch.nn.Module, labels: torch.Tensor, *, sampler: str,
                    steps: int, batch_size: int, seed: int, shape: tuple[int, ...],
                    device: str) -> torch.Tensor:
    """Digits [N, *shape] in [-1, 1] for labels [N], in batches; the noise comes from a generator
    seeded with `seed`, so every setting starts from the same noise."""
    generator = torch.Generator(device=device).manual_seed(seed)
    out = []
    for chunk in labels.split(batch_size):
        chunk = chunk.to(device)
        batch = {"x0": torch.zeros(len(chunk), *shape, device=device), "cond": {"label": chunk}}
        out.append(process.generate(network, batch, sampler=sampler, steps=steps,
                                    generator=generator).clamp(-1, 1).cpu())
    return torch.cat(out)


def _targets(rows: list[dict], cross_guidance: float) -> dict[str, Any]:
    """The two targets of issue 17, from the rows."""
    eligible = [r for r in rows if r["guidance"] <= 3 and r["steps"] <= 20]
    # the highest label accuracy; among equals, the lowest classifier FD
    best_acc = max(eligible, key=lambda r: (r["label_accuracy"], -r["classifier_fd"]),
                   default=None)
    out: dict[str, Any] = {"best_label_accuracy_w_le_3_steps_le_20": best_acc}
    out["target_label_accuracy_97"] = bool(best_acc and best_acc["label_accuracy"] >= 0.97)
    at = {(r["sampler"], r["steps"]): r["classifier_fd"] for r in rows
          if r["guidance"] == cross_guidance}
    ratios = {s: at[(s, 20)] / max(at[(s, 100)], 1e-12) for (s, n) in at
              if n == 20 and (s, 100) in at}
    out["fd_20_over_100"] = ratios
    if ratios:
        best = min(ratios, key=lambda s: at[(s, 20)])
        out["fd_ratio_sampler"] = best
        out["target_fd_20_within_1_2x_of_100"] = ratios[best] <= 1.2
    return out


def run_benchmark(domain: Any, cfg: DictConfig) -> dict[str, Any]:
    """The benchmark (see the module docstring); returns {"metrics", "baselines"}."""
    b = cfg.benchmark
    quick = bool(cfg.get("quick", False))
    opts = _options(cfg, quick)
    device = str(b.get("device") or "cpu")
    if b.get("threads"):
        torch.set_num_threads(int(b.threads))
    if not cfg.data.get("folder"):
        from diffusekit.domains.digits.data import fetch_mnist

        fetch_mnist(cfg.data)
    started = begun = time.perf_counter()
    classifier, record = domain.classifier(cfg)
    classifier = classifier.to(device)
    datamodule = domain.build_datamodule(cfg)
    test_x, test_y = datamodule.split_tensors("test")
    train_x, _ = datamodule.split_tensors("train")
    n_classes = len(datamodule.classes)
    test_features, _ = classify(classifier, test_x)
    reference = feature_statistics(test_features)
    n_real = min(opts["n_samples"], len(train_x))  # a seeded random subset: the split is
    pick = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(int(b.seed)))
    real_features, _ = classify(classifier, train_x[pick[:n_real]])  # ordered by class
    baselines = {"test_set": {"label_accuracy": record["test_accuracy"],
                              "classifier_fd_train_vs_test": feature_fd(real_features,
                                                                        test_features),
                              "n_train_digits": n_real, "n_test": len(test_x)}}
    classifier_seconds = round(time.perf_counter() - started, 1)

    recipe = [f"seed={int(b.seed)}", f"optim.decay={b.lr_decay}", "sample.guidance=0"]
    with tempfile.TemporaryDirectory(prefix="diffusekit-digits-") as scratch:
        work = Path(b.run_dir) if b.get("run_dir") else Path(scratch)
        trained = train_for_benchmark(domain, cfg, opts["train_steps"], work, overrides=recipe)
        metrics, rows, grids = _sampler_sweep(trained, classifier, test_x, reference, opts, cfg,
                                              device, n_classes)
        sketch, sketch_samples, sketch_digits = _sketch(domain, cfg, quick, trained.run.path,
                                                        work, recipe, classifier, test_x, test_y,
                                                        reference)
    metrics.update(classifier=record, classifier_seconds=classifier_seconds, sketch=sketch,
                   total_seconds=round(time.perf_counter() - begun, 1))
    _write(cfg, quick, metrics, baselines, rows, grids, n_classes, sketch_samples, sketch_digits)
    return {"metrics": metrics, "baselines": baselines}


def _sketch(domain: Any, cfg: DictConfig, quick: bool, base_run: Path, work: Path,
            recipe: list[str], classifier: Any, test_x: torch.Tensor, test_y: torch.Tensor,
            reference: tuple) -> tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor]:
    """The sketch -> digit part (sketch_benchmark.py): controls trained on `base_run`, every
    system scored on a seeded subset of the test digits; (its metrics, samples, test digits)."""
    opts = sketch_options(cfg, quick)
    seed = int(cfg.benchmark.seed)
    timing = step_time_ratio(domain, cfg, base_run, opts["timing_steps"], opts["timing_rounds"])
    trained = train_controls(domain, cfg, base_run, opts["control_steps"], work, recipe)
    pick = torch.randperm(len(test_x), generator=torch.Generator().manual_seed(seed))[:opts["n"]]
    digits, labels = test_x[pick], test_y[pick]
    rows, samples = sketch_rows(domain, cfg, base_run, {h: t.run.path for h, t in trained.items()},
                                digits, labels, classifier, reference, opts, seed)
    runs = {h: {"train_seconds": t.seconds, "train_loss": t.final_loss(),
                "seconds_per_step": round(t.seconds / opts["control_steps"], 3)}
            for h, t in trained.items()}
    out = {**opts, "rows": rows, "timing": timing, "controls": runs,
           **sketch_targets(rows, timing)}
    return out, samples, digits


def _sampler_sweep(trained: Any, classifier: Any, test_x: torch.Tensor, reference: tuple,
                   opts: dict[str, Any], cfg: DictConfig, device: str,
                   n_classes: int) -> tuple[dict[str, Any], list[dict], dict]:
    """Part one: every (sampler, steps, guidance) setting on the trained base; (its metrics,
    rows, the digits of the figure's grid)."""
    b = cfg.benchmark
    network = trained.network.to(device)
    labels = balanced_labels(opts["n_samples"], n_classes)
    cross_guidance, cross_steps = float(b.cross_guidance), int(b.cross_steps)
    rows, grids = [], {}
    for sampler, steps, w in tqdm(settings_of(opts, cross_guidance, cross_steps),
                                  desc="sampling", unit="setting", file=sys.stderr):
        process = replace(trained.process, guidance=w)
        t0 = time.perf_counter()
        digits = generate_digits(process, network, labels, sampler=sampler, steps=steps,
                                 batch_size=int(cfg.sample.batch_size), seed=int(b.seed),
                                 shape=tuple(test_x.shape[1:]), device=device)
        seconds = time.perf_counter() - t0
        scores = sample_scores(classifier, digits, labels, reference)
        # network calls per digit: heun's last step is an Euler step (EDM Algorithm 2)
        nfe = (2 * steps - 1 if sampler == "heun" else steps) * (1 if w == 0 else 2)
        rows.append({"sampler": sampler, "steps": steps, "guidance": w, "nfe_per_digit": nfe,
                     "seconds": round(seconds, 2), **scores})
        if steps == cross_steps and sampler == opts["samplers"][0]:
            grids[w] = digits
    metrics: dict[str, Any] = {
        "train_steps": opts["train_steps"], "train_seconds": trained.seconds,
        "train_loss": trained.final_loss(), "n_samples": opts["n_samples"],
        "grid": opts["grid"], "device": device, "torch_threads": torch.get_num_threads(),
        "network": OmegaConf.to_container(cfg.network),
        "process": OmegaConf.to_container(OmegaConf.masked_copy(cfg.process, [
            "schedule", "prediction", "weighting", "t_sampler", "grid"])),
        "batch_size": int(cfg.data.batch_size), "lr": float(cfg.optim.lr),
        "ema_decay": float(cfg.ema.decay), "rows": rows,
        **_targets(rows, cross_guidance)}
    return metrics, rows, grids


def _figure(path: Path, rows: list[dict], baselines: dict, grids: dict[float, torch.Tensor],
            n_classes: int, per_class: int, cross_guidance: float, title: str) -> None:
    """FD against steps (at cross_guidance), label accuracy against guidance, and the digits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 6.5), gridspec_kw={"width_ratios": [1, 1, 0.8]})
    samplers = list(dict.fromkeys(r["sampler"] for r in rows))
    for s in samplers:
        pts = sorted((r["steps"], r["classifier_fd"]) for r in rows
                     if r["sampler"] == s and r["guidance"] == cross_guidance)
        if pts:
            axes[0].plot(*zip(*pts), marker="o", label=s)
        steps = sorted({r["steps"] for r in rows if r["sampler"] == s})
        best_steps = max(n for n in steps if n <= 20) if any(n <= 20 for n in steps) else steps[0]
        pts = sorted((r["guidance"], r["label_accuracy"]) for r in rows
                     if r["sampler"] == s and r["steps"] == best_steps)
        if pts:
            axes[1].plot(*zip(*pts), marker="o", label=f"{s}, {best_steps} steps")
    test = baselines["test_set"]
    axes[0].axhline(test["classifier_fd_train_vs_test"], color="k", ls="--", label="train digits")
    axes[0].set(xscale="log", yscale="log", xlabel="sampler steps", ylabel="classifier FD",
                title=f"classifier FD vs steps (w = {cross_guidance:g})")
    axes[1].axhline(test["label_accuracy"], color="k", ls="--", label="test digits")
    axes[1].set(xlabel="guidance w", ylabel="label accuracy", title="label accuracy vs guidance")
    for ax in axes[:2]:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    ws = sorted(grids)
    if ws:
        picks = []  # rows: per_class rows of digits for each w; columns: the classes
        for w in ws:
            labels = balanced_labels(len(grids[w]), n_classes)
            per = torch.stack([grids[w][labels == k][:per_class] for k in range(n_classes)], 1)
            picks.append(per.flatten(0, 1))  # [per_class * n_classes, 1, S, S], row-major
        mosaic = as_numpy_grid(torch.cat(picks), n_classes)
        axes[2].imshow(mosaic, cmap="gray", vmin=0, vmax=255)
        side = grids[ws[0]].shape[-1]
        axes[2].set_yticks([side * per_class * (i + 0.5) for i in range(len(ws))],
                           [f"w={w:g}" for w in ws])
        for i in range(1, len(ws)):
            axes[2].axhline(side * per_class * i - 0.5, color="red", lw=1)
        axes[2].set_xticks([side * (k + 0.5) for k in range(n_classes)],
                           [str(k) for k in range(n_classes)])
        axes[2].set_title("digits per class (columns) and guidance (rows)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _sketch_lines(sketch: dict[str, Any], figure: str) -> list[str]:
    """The sketch -> digit section of the record's markdown."""
    headers = ["system", "edge F1", "edge F1, exact", "thumbnail error", "label accuracy",
               "classifier FD", "seconds"]
    table = [[r["system"], r["edge_f1"], r["edge_f1_exact"], r["thumbnail_error"],
              r["label_accuracy"],
              r["classifier_fd"], "-" if r["seconds"] is None else r["seconds"]]
             for r in sketch["rows"]]
    timing = sketch["timing"]
    met = lambda key: "met" if sketch[key] else "not met"  # noqa: E731
    runs = ", ".join(f"{h}: {v['train_seconds']} s ({v['seconds_per_step']} s a step)"
                     for h, v in sketch["controls"].items())
    return [
        "", "## Sketch -> digit: ControlNets against the base and SDEdit", "",
        f"Two ControlNets on the base above, {sketch['control_steps']} steps each (`toolkit train "
        "--control-of BASE control.hint=edges`, `control.hint=thumbnail`); `both` sums their "
        f"residuals. {sketch['n']} held-out test digits give the hints; every system draws one "
        f"digit per hint with the test digit's label, guidance w = {sketch['guidance']:g}, "
        f"{sketch['sampler']} at {sketch['steps']} steps (SDEdit: {sketch['steps']} steps over "
        "[0, t0], from the hint drawn as a digit). Edge F1: Canny edges of the samples against "
        "the hint's, 1-pixel tolerance (exact: none); thumbnail error: MAE of 7 x 7 thumbnails "
        "in [0, 1].", "",
        results_io.markdown_table(headers, table, digits=4), "",
        f"- edges control: edge F1 >= 0.75: {met('target_edge_f1_0_75')}; >= 3x the base's: "
        f"{met('target_edge_f1_3x_base')} ({sketch['edge_f1_over_base']}x; with no "
        f"tolerance {sketch['edge_f1_exact_over_base']}x)",
        f"- both controls keep each single control's score within 10%: "
        f"{met('target_both_within_10_percent')} (edge F1 {sketch['both_edge_f1_over_edges']}x "
        f"the edges control's, thumbnail error {sketch['both_thumbnail_error_over_thumbnail']}x "
        "the thumbnail control's)",
        f"- a ControlNet training step (hint making included) costs "
        f"{timing['control_over_base_step']}x a base training step "
        f"({timing['control_step_seconds']} s against {timing['base_step_seconds']} s, the "
        f"median of {timing['timing_rounds']} interleaved rounds of {timing['timing_steps']} "
        f"steps on the same batches): target <= 1.5x {met('target_control_step_1_5x')}. The "
        f"control trains {timing['control_trainable_parameters']} parameters (the base has "
        f"{timing['base_parameters']}). Control runs: {runs}.",
        "", f"![hint, samples and ground truth]({figure})"]


def _write(cfg: DictConfig, quick: bool, metrics: dict, baselines: dict, rows: list[dict],
           grids: dict[float, torch.Tensor], n_classes: int,
           sketch_samples: dict[str, torch.Tensor], sketch_digits: torch.Tensor) -> None:
    name = "digits_quick" if quick else "digits"
    b = cfg.benchmark
    out_dir = Path(b.results_dir) if b.get("results_dir") else results_io.RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    title = (f"class-conditional MNIST digits: {metrics['train_steps']} training steps, "
             f"{metrics['n_samples']} digits per setting")
    _figure(out_dir / f"{name}.png", rows, baselines, grids, n_classes,
            int(b.grid_per_class), float(b.cross_guidance), title)
    headers = ["sampler", "steps", "guidance w", "NFE / digit", "classifier FD", "label accuracy",
               "seconds"]
    table = [[r["sampler"], r["steps"], r["guidance"], r["nfe_per_digit"], r["classifier_fd"],
              r["label_accuracy"], r["seconds"]] for r in rows]
    test = baselines["test_set"]
    table.append(["test set", "-", "-", "-", test["classifier_fd_train_vs_test"],
                  test["label_accuracy"], "-"])
    best = metrics["best_label_accuracy_w_le_3_steps_le_20"]
    lines = [
        title, "",
        f"Digit classifier (metrics.py): {metrics['classifier']['n_train']} training digits, "
        f"test accuracy {metrics['classifier']['test_accuracy']:.4f} on "
        f"{metrics['classifier']['n_test']} test digits. Classifier FD = |mu1 - mu2|^2 + tr S1 "
        "+ tr S2 - 2 tr (S1^1/2 S2 S1^1/2)^1/2 of its penultimate features against the test "
        "set; the test set row gives FD of as many training digits and the test accuracy.", "",
        results_io.markdown_table(headers, table, digits=4), "",
        f"Label accuracy >= 0.97 at w <= 3 within 20 steps: "
        f"{'met' if metrics['target_label_accuracy_97'] else 'not met'} (best: "
        f"{best and {k: best[k] for k in ('sampler', 'steps', 'guidance', 'label_accuracy')}}).",
        f"Classifier FD at 20 steps / at 100 steps (w = {float(b.cross_guidance):g}): "
        f"{ {s: round(v, 3) for s, v in metrics['fd_20_over_100'].items()} }; target <= 1.2 for "
        f"the sampler with the lowest FD at 20 steps ({metrics.get('fd_ratio_sampler')}): "
        f"{'met' if metrics.get('target_fd_20_within_1_2x_of_100') else 'not met'}.",
        f"Training: the toolkit's trainer, {metrics['train_steps']} steps in "
        f"{metrics['train_seconds']} s (EMA {metrics['ema_decay']}); device {metrics['device']}; "
        f"the whole benchmark {metrics['total_seconds']} s.",
        "", f"![FD, accuracy and digits]({name}.png)"]
    sketch_png = f"{name}_sketch.png"
    sketch_figure(out_dir / sketch_png, sketch_digits, sketch_samples, int(b.sketch_grid_rows),
                  f"sketch -> digit: hints | samples | ground truth "
                  f"({metrics['sketch']['control_steps']} control steps)")
    lines += _sketch_lines(metrics["sketch"], sketch_png)
    record = results_io.make_record(name, metrics, baselines)
    results_io.write_results(record, "\n".join(lines), out_dir,
                             title=f"Digits domain benchmark ({name})")
