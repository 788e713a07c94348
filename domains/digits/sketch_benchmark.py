"""Sketch -> digit, the second part of `toolkit benchmark --domain digits [--quick]` (issue 17,
part 4): ControlNets on the benchmark's base, against the base alone and SDEdit.

1. Two ControlNets on the trained base (`toolkit train --control-of BASE control.hint=edges`,
   and `control.hint=thumbnail`), `sketch_control_steps` steps each, through the toolkit's
   trainer (`train_for_benchmark`): `edges` follows a digit's Canny edge map, `thumbnail` its
   7 x 7 mean intensities (sketch.py).
2. `sketch_n` held-out test digits (a seeded random subset) give the hints: their edge maps and
   thumbnails. Every system draws one digit per hint, with the test digit's label, guidance
   `sketch_guidance`, `sketch_sampler` at `sketch_steps` steps, from the same noise:
       base            the base alone (the label, no hint)
       sdedit-edges    SDEdit (Meng et al. 2022) from the edge map drawn as a digit (white edges
                       on black, in [-1, 1]), perturbed to each t0 of `sketch_sdedit_t`, then the
                       same sampler over [0, t0]
       sdedit-thumbnail  SDEdit from the thumbnail upsampled to 28 x 28 (nearest)
       edges / thumbnail  one control at scale 1
       both            both controls at scale 1, their residuals summed (`add_controls`)
   Scores (sketch.py, metrics.py): edge F1 (1-pixel tolerance) of the samples' Canny edges
   against the hint's, and with no tolerance (`edge_f1_exact`: at 28 x 28 pixels a 1-pixel
   tolerance covers much of a digit, so two different test digits of one class already score
   about 0.8), thumbnail error (MAE of 7 x 7 thumbnails), label accuracy and classifier FD
   against the test set. The test digits themselves are the reference row.
3. Cost: a ControlNet training step against a base training step, timed in this run on the same
   batches, interleaved (`sketch_timing_steps` steps each, `sketch_timing_rounds` rounds; the
   median round), hint making included. The control runs' own wall time per step is recorded too.

Targets (issue 17): the edges control's edge F1 >= 0.75 and >= 3x the base's; both controls
together keep each single control's score within 10% (edge F1 >= 0.9 x the edges control's,
thumbnail error <= 1.1 x the thumbnail control's); a control step <= 1.5 x a base step.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from tqdm.auto import tqdm

from diffusekit.core.editing import sdedit_noise
from diffusekit.domains.digits.metrics import as_numpy_grid, sample_scores
from diffusekit.domains.digits.sketch import edge_f1, edge_hint, thumbnail_error, thumbnail_hint

CONTROLS = ("edges", "thumbnail")


def sketch_options(cfg: DictConfig, quick: bool) -> dict[str, Any]:
    """The sketch part's sizes from `benchmark.sketch_*` (`quick_sketch_*` with --quick)."""
    b = cfg.benchmark
    pick = (lambda k: b[f"quick_sketch_{k}"]) if quick else (lambda k: b[f"sketch_{k}"])
    return {"control_steps": int(pick("control_steps")), "n": int(pick("n")),
            "sampler": str(b.sketch_sampler), "steps": int(b.sketch_steps),
            "guidance": float(b.sketch_guidance),
            "sdedit_t": [float(t) for t in b.sketch_sdedit_t],
            "timing_steps": int(b.sketch_timing_steps),
            "timing_rounds": int(b.sketch_timing_rounds)}


def train_controls(domain: Any, cfg: DictConfig, base_run: Path, steps: int, work: Path,
                   recipe: list[str]) -> dict[str, Any]:
    """{hint name: TrainedModel} of a control per hint in `CONTROLS`, each `steps` steps on the
    frozen base `base_run`."""
    from diffusekit.core.app.training.fit import train_for_benchmark

    return {hint: train_for_benchmark(domain, cfg, steps, work, overrides=[
        *recipe, f"control.of={base_run}", f"control.hint={hint}"]) for hint in CONTROLS}


def step_time_ratio(domain: Any, cfg: DictConfig, base_run: Path, steps: int,
                    rounds: int) -> dict[str, Any]:
    """Seconds of an optimiser step of a ControlNet (hint making included) and of the base
    network trained in full, on the same batches, interleaved round by round; the medians over
    rounds and their ratio."""
    from diffusekit.core.app import controls
    from diffusekit.core.app.training.models import load_model

    datamodule = domain.build_datamodule(cfg)
    loader = iter(datamodule.train_dataloader())
    batches = [next(loader) for _ in range(steps)]
    base = load_model(base_run, domain=domain)
    full = domain.build_network(cfg)
    full.load_state_dict(base.network.state_dict())
    frozen = domain.build_network(cfg)
    frozen.load_state_dict(base.network.state_dict())
    frozen.requires_grad_(False)
    settings = controls.ControlSettings(of=str(base_run), blocks=None, hint=CONTROLS[0],
                                        width=int(cfg.control.width), scale=1.0)
    steered, maker = controls.build_control(frozen, settings, domain, batches[0])
    hinted = controls.HintedProcess(base.process, {controls.HINT_KEY: controls.MadeHints(maker)})
    systems = {"base": (full, base.process), "control": (steered, hinted)}
    optimisers = {name: torch.optim.AdamW([p for p in net.parameters() if p.requires_grad],
                                          lr=float(cfg.optim.lr))
                  for name, (net, _) in systems.items()}
    seconds: dict[str, list[float]] = {name: [] for name in systems}
    generator = torch.Generator().manual_seed(0)
    for _ in range(rounds + 1):  # the first round warms up and is dropped
        for name, (net, process) in systems.items():
            net.train()
            t0 = time.perf_counter()
            for batch in batches:
                loss = process.training_loss(net, batch, generator=generator).mean()
                optimisers[name].zero_grad(set_to_none=True)
                loss.backward()
                optimisers[name].step()
            seconds[name].append((time.perf_counter() - t0) / len(batches))
    base_s, control_s = (statistics.median(seconds[n][1:]) for n in ("base", "control"))
    trainable = sum(p.numel() for p in steered.parameters() if p.requires_grad)
    return {"base_step_seconds": round(base_s, 4), "control_step_seconds": round(control_s, 4),
            "control_over_base_step": round(control_s / base_s, 3),
            "timing_steps": steps, "timing_rounds": rounds,
            "control_trainable_parameters": trainable,
            "base_parameters": sum(p.numel() for p in full.parameters())}


def _guides(digits: torch.Tensor) -> dict[str, torch.Tensor]:
    """SDEdit's guides of the test digits [N, 1, S, S] in [-1, 1], in the same range: the edge
    map (edges +1, background -1) and the thumbnail upsampled to S x S (nearest)."""
    batch = {"x0": digits}
    edges = edge_hint(batch)
    thumbs = F.interpolate(thumbnail_hint(batch), size=digits.shape[-2:], mode="nearest")
    return {"edges": 2.0 * edges - 1.0, "thumbnail": 2.0 * thumbs - 1.0}


@torch.no_grad()
def _draw(process: Any, network: torch.nn.Module, digits: torch.Tensor, labels: torch.Tensor,
          opts: dict[str, Any], batch_size: int, seed: int, *, guide: torch.Tensor | None = None,
          t_start: float | None = None) -> torch.Tensor:
    """One sample per test digit [N, 1, S, S] in [-1, 1]: the digits go in as batch["x0"], so a
    control's hint maker makes each hint from its digit (generation only reads x0's shape);
    with `guide`, SDEdit from it at `t_start`."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(digits), batch_size):
        batch = {"x0": digits[i:i + batch_size], "cond": {"label": labels[i:i + batch_size]}}
        options: dict[str, Any] = {}
        if guide is not None:
            inner = getattr(process, "process", process)
            noise = sdedit_noise(guide[i:i + batch_size], t_start, inner.schedule,
                                 space=inner.space_for(batch), generator=generator)
            options = {"t_max": t_start, "noise": noise}
        out.append(process.generate(network, batch, sampler=opts["sampler"], steps=opts["steps"],
                                    generator=generator, **options).clamp(-1, 1))
    return torch.cat(out)


def sketch_rows(domain: Any, cfg: DictConfig, base_run: Path, control_runs: dict[str, Path],
                digits: torch.Tensor, labels: torch.Tensor, classifier: Any,
                reference: tuple[torch.Tensor, torch.Tensor], opts: dict[str, Any],
                seed: int) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """(the rows of scores, {system: samples}) of every system on the test digits."""
    from dataclasses import replace

    from diffusekit.core.app.controls import HintedProcess, add_controls
    from diffusekit.core.app.training.models import load_model

    def guided(model: Any) -> Any:  # the model's process at the sketch guidance
        process = model.process
        if isinstance(process, HintedProcess):
            return HintedProcess(replace(process.process, guidance=opts["guidance"]),
                                 process.sources)
        return replace(process, guidance=opts["guidance"])

    base = load_model(base_run, domain=domain)
    systems: list[tuple[str, Any, dict]] = [("base", base, {})]
    for hint, guide in _guides(digits).items():
        for t0 in opts["sdedit_t"]:
            systems.append((f"sdedit-{hint} t0={t0:g}", base, {"guide": guide, "t_start": t0}))
    for hint in CONTROLS:
        systems.append((hint, load_model(control_runs[hint], domain=domain), {}))
    both = add_controls(load_model(control_runs[CONTROLS[0]], domain=domain),
                        {control_runs[h]: 1.0 for h in CONTROLS[1:]})
    systems.append(("both", both, {}))
    batch = {"x0": digits}
    hint_edges, hint_thumbs = edge_hint(batch), thumbnail_hint(batch)

    def scores(samples: torch.Tensor) -> dict[str, float]:
        return {"edge_f1": edge_f1(samples, hint_edges),
                "edge_f1_exact": edge_f1(samples, hint_edges, tolerance=0),
                "thumbnail_error": thumbnail_error(samples, hint_thumbs),
                **sample_scores(classifier, samples, labels, reference)}

    rows, samples = [], {}
    for name, model, extra in tqdm(systems, desc="sketch -> digit", unit="system", file=sys.stderr):
        t0 = time.perf_counter()
        drawn = _draw(guided(model), model.network, digits, labels, opts,
                      int(cfg.sample.batch_size), seed, **extra)
        rows.append({"system": name, "seconds": round(time.perf_counter() - t0, 2),
                     **scores(drawn)})
        samples[name] = drawn
    rows.append({"system": "test digits", "seconds": None, **scores(digits)})
    return rows, samples


def sketch_targets(rows: list[dict], timing: dict[str, Any]) -> dict[str, Any]:
    """The ControlNet targets of issue 17 from the rows and the step timing."""
    by = {r["system"]: r for r in rows}
    edges, thumb, both, base = by["edges"], by["thumbnail"], by["both"], by["base"]
    return {
        "edge_f1_over_base": round(edges["edge_f1"] / max(base["edge_f1"], 1e-12), 3),
        "edge_f1_exact_over_base": round(edges["edge_f1_exact"] /
                                         max(base["edge_f1_exact"], 1e-12), 3),
        "target_edge_f1_0_75": edges["edge_f1"] >= 0.75,
        "target_edge_f1_3x_base": edges["edge_f1"] >= 3 * base["edge_f1"],
        "both_edge_f1_over_edges": round(both["edge_f1"] / max(edges["edge_f1"], 1e-12), 3),
        "both_thumbnail_error_over_thumbnail": round(
            both["thumbnail_error"] / max(thumb["thumbnail_error"], 1e-12), 3),
        "target_both_within_10_percent": (both["edge_f1"] >= 0.9 * edges["edge_f1"] and
                                          both["thumbnail_error"] <= 1.1 * thumb["thumbnail_error"]),
        "target_control_step_1_5x": timing["control_over_base_step"] <= 1.5,
    }


def sketch_figure(path: Path, digits: torch.Tensor, samples: dict[str, torch.Tensor],
                  rows: int, title: str) -> None:
    """The picture grid: one test digit a row; columns hint (edges), hint (thumbnail), each
    system's sample, the ground truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batch = {"x0": digits[:rows]}
    hints = {"hint: edges": 2.0 * edge_hint(batch) - 1.0,
             "hint: thumbnail": 2.0 * F.interpolate(thumbnail_hint(batch),
                                                    size=digits.shape[-2:]) - 1.0}
    columns = {**hints, **{name: s[:rows] for name, s in samples.items()},
               "ground truth": digits[:rows]}
    stacked = torch.stack(list(columns.values()), 1).flatten(0, 1)  # row-major: a digit a row
    mosaic = as_numpy_grid(stacked, len(columns))
    side = digits.shape[-1]
    fig, ax = plt.subplots(figsize=(1.1 * len(columns) + 1, 1.1 * rows + 1.2))
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=255)
    ax.set_xticks([side * (k + 0.5) for k in range(len(columns))],
                  [name.replace(" t0=", "\nt0=").replace(": ", ":\n") for name in columns],
                  fontsize=7)
    ax.set_yticks([])
    for k in (2, len(columns) - 1):
        ax.axvline(side * k - 0.5, color="red", lw=1)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
