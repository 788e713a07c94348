"""The customisation benchmark of any domain: `toolkit benchmark --domain D --finetune [--quick]`.

A base model is trained on the domain's default data. Then, on a small target set with a real
shift (the domain's `finetune_target`: at most 10% of the base's training data), four systems
are scored on the target's held-out test with the domain's own metrics, each trained the same
number of steps from where it starts:

    base        the base model alone, not trained on the target
    lora        a LoRA adapter on the frozen base (peft; `adapter.kind=lora`)
    full        every weight fine-tuned from the base (`--init-from`)
    scratch     the same network trained on the target from a random initialisation

Every run goes through `train_for_benchmark`, the trainer of `toolkit train`. The three target
runs warm their learning rate up for at most a tenth of their steps (min(optim.warmup_steps,
steps // 10)), so that a short fine-tuning run trains at its peak rate for most of its steps.

Each system is scored with the domain's `evaluate` metrics on `eval_n` held-out target examples
and with `test_loss`, its training objective on the same examples under the same noise draws
(for a likelihood-trained process, the test bound). The record gives the scores of each system,
LoRA's share of the trainable parameters and of the file size, the share of full fine-tuning's
gain over the base that LoRA recovers, (lora - base) / (full - base) on the domain's target
metric, and a figure: the scores side by side and the training losses of the target runs.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from diffusekit.core.app import results
from diffusekit.core.app.config import data_cache, override, typed
from diffusekit.core.app.training.fit import train_for_benchmark
from diffusekit.core.app.training.inference import evaluate_model, held_out_loss
from diffusekit.core.app.training.models import Model, export_model, load_model
from diffusekit.core.errors import ConfigError

SYSTEMS = ("base", "lora", "full", "scratch")


def run_finetune_benchmark(domain: Any, cfg: DictConfig) -> dict[str, Any]:
    """Train and score the four systems; write benchmarks/results/<domain>_finetune[_quick].*
    (or `finetune.results_dir`); return the record's metrics."""
    target = domain.finetune_target(cfg)
    metric, higher = str(target["metric"]), bool(target["higher_is_better"])
    quick = bool(cfg.quick)
    prefix = "finetune.quick_" if quick else "finetune."
    base_steps = typed(cfg, prefix + "base_steps", int)
    steps = typed(cfg, prefix + "steps", int)
    eval_n = typed(cfg, prefix + "eval_n", int)
    warmup = min(typed(cfg, "optim.warmup_steps", int), steps // 10)
    target_overrides = [str(o) for o in target["overrides"]]
    run_overrides = [*target_overrides, f"optim.warmup_steps={warmup}"]
    started = time.time()
    scores: dict[str, dict[str, float]] = {}
    info: dict[str, Any] = {}
    losses: dict[str, dict[int, float]] = {}
    with tempfile.TemporaryDirectory(prefix="diffusekit-finetune-") as scratch:
        work = Path(scratch)
        base_run = train_for_benchmark(domain, cfg, base_steps, work / "runs").run
        base_folder = work / "base"
        export_model(base_run, base_folder, domain=domain)
        target_cfg = override(cfg, overrides=target_overrides)
        scores["base"] = _score(load_model(base_folder, domain=domain), target_cfg, eval_n)
        variants = {
            "lora": [f"init_from={base_folder}", "adapter.kind=lora"],
            "full": [f"init_from={base_folder}"],
            "scratch": [],
        }
        for name, extra in variants.items():
            trained = train_for_benchmark(domain, cfg, steps, work / "runs",
                                          overrides=[*run_overrides, *extra])
            losses[name] = trained.losses
            scores[name] = _score(load_model(trained.run.path, domain=domain), target_cfg,
                                  eval_n)
            info[f"{name}_train_seconds"] = trained.seconds
            if name == "lora":
                info.update(_adapter_size(load_model(trained.run.path, domain=domain),
                                          base_folder))
    metrics = _summary(scores, metric, higher)
    cache = str(data_cache())  # the record names the data cache, not this machine's path
    recorded = [o.replace(cache, "$DIFFUSEKIT_DATA") for o in target_overrides]
    metrics.update(info, base_steps=base_steps, steps=steps, eval_n=eval_n, metric=metric,
                   higher_is_better=higher, target=recorded, target_warmup_steps=warmup,
                   quick=quick,
                   seconds=round(time.time() - started, 1))
    name = f"{domain.name}_finetune{'_quick' if quick else ''}"
    record = results.make_record(name, metrics, {"base": scores["base"]})
    out = Path(cfg.finetune.results_dir) if cfg.finetune.get("results_dir") else results.RESULTS_DIR
    title = f"{domain.name}: customisation (base, LoRA, fine-tuning, scratch)"
    _, markdown = results.write_results(record, _markdown(scores, metrics), out, title=title)
    figure = _plot(scores, metrics, losses, out / f"{name}.png", title)
    with markdown.open("a") as f:
        f.write(f"\n![{title}]({figure.name})\n")
    return metrics


def _score(model: Model, target_cfg: DictConfig, n: int) -> dict[str, float]:
    """The domain's metrics of `model` on the target's test split (its own weights, the
    target's data settings)."""
    on_target = Model(model.path, model.domain, _with_data(model.cfg, target_cfg),
                      model.network, model.process)
    scores = evaluate_model(on_target, n=n, progress=False)["metrics"]
    return {**scores, "test_loss": held_out_loss(on_target, n)}


def _with_data(cfg: DictConfig, target_cfg: DictConfig) -> DictConfig:
    """`cfg` with the target's `data` section (what to evaluate on), everything else its own."""
    from omegaconf import OmegaConf

    merged = OmegaConf.to_container(cfg, resolve=True)
    merged["data"] = OmegaConf.to_container(target_cfg.data, resolve=True)
    return OmegaConf.create(merged)


def _adapter_size(model: Model, base: Path) -> dict[str, float]:
    """LoRA's share of the parameters and of the weights file."""
    from diffusekit.core.app import adapters

    adapter = model.path / "adapter" / adapters.ADAPTER_WEIGHTS
    trainable = sum(p.numel() for n, p in model.network.named_parameters() if "lora_" in n)
    total = sum(p.numel() for n, p in model.network.named_parameters() if "lora_" not in n)
    return {"lora_parameter_share": trainable / total,
            "lora_file_share": adapter.stat().st_size / (base / "model.safetensors").stat().st_size}


def _summary(scores: dict[str, dict[str, float]], metric: str, higher: bool) -> dict[str, Any]:
    if any(metric not in s for s in scores.values()):
        raise ConfigError(f"the domain's finetune metric {metric!r} is not among its metrics "
                          f"{sorted(scores['base'])}")
    value = {name: scores[name][metric] for name in SYSTEMS}
    sign = 1.0 if higher else -1.0
    full_gain = sign * (value["full"] - value["base"])
    lora_gain = sign * (value["lora"] - value["base"])
    return {
        **{f"{name}_{metric}": v for name, v in value.items()},
        "lora_recovery": lora_gain / full_gain if full_gain > 0 else float("nan"),
        "full_beats_scratch": sign * (value["full"] - value["scratch"]) > 0,
        "scores": scores,
    }


def _markdown(scores: dict[str, dict[str, float]], m: dict[str, Any]) -> str:
    keys = sorted(scores["base"])
    rows = [[name, *(scores[name][k] for k in keys)] for name in SYSTEMS]
    return "\n".join([
        f"Base: {m['base_steps']} steps on the default data. Target: `{' '.join(m['target'])}`;"
        f" lora, full and scratch each {m['steps']} steps on it; scored on {m['eval_n']} "
        f"held-out target examples (`test_loss`: the training objective on them, 4 draws of "
        f"noise and time, the same for every system); target runs warm up for "
        f"{m['target_warmup_steps']} steps.", "",
        results.markdown_table(["system", *keys], rows, digits=4), "",
        f"- target metric `{m['metric']}` ({'higher' if m['higher_is_better'] else 'lower'} is "
        f"better); LoRA recovers **{results.fmt(m['lora_recovery'])}** of full fine-tuning's "
        f"gain over the base; full fine-tuning beats scratch: {m['full_beats_scratch']}",
        f"- LoRA trains {100 * m['lora_parameter_share']:.2f}% of the parameters; its adapter "
        f"file is {100 * m['lora_file_share']:.2f}% of the base's weights file",
    ])


def _plot(scores: dict[str, dict[str, float]], m: dict[str, Any],
          losses: dict[str, dict[int, float]], path: Path, title: str) -> Path:
    """Bars of the target metric and of test_loss per system, and the target runs' training
    loss curves."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = [m["metric"]] + (["test_loss"] if m["metric"] != "test_loss" else [])
    fig = Figure(figsize=(4.2 * (len(metrics) + 1), 3.8), dpi=100)
    FigureCanvasAgg(fig)
    colours = dict(zip(SYSTEMS, ("0.5", "C0", "C1", "C2")))
    for i, key in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics) + 1, i + 1)
        values = [scores[name][key] for name in SYSTEMS]
        ax.bar(SYSTEMS, values, color=[colours[name] for name in SYSTEMS])
        low, high = min(values), max(values)
        pad = 0.15 * (high - low) if high > low else 0.1 * abs(high) + 1e-9
        ax.set_ylim(low - pad, high + pad)
        better = "higher" if key == m["metric"] and m["higher_is_better"] else "lower"
        ax.set(title=f"{key} ({better} is better)")
    ax = fig.add_subplot(1, len(metrics) + 1, len(metrics) + 1)
    for name, curve in losses.items():
        if curve:
            steps = sorted(curve)
            ax.plot(steps, [curve[s] for s in steps], color=colours[name], label=name, lw=1)
    ax.set(xlabel="step on the target", ylabel="training loss",
           title=f"target runs ({m['steps']} steps each)")
    if ax.lines:
        ax.set_yscale("log")
        ax.legend()
    fig.suptitle(f"{title}: LoRA recovers {results.fmt(m['lora_recovery'])} of full "
                 "fine-tuning's gain")
    fig.tight_layout()
    fig.savefig(path)
    return path
