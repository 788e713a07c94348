"""`toolkit benchmark --domain text [--quick]`: the diffusion LM against its autoregressive
baseline, both trained by the toolkit's trainer on the same tokens for the same number of steps.

Measured (see `metrics`):
  - test bits per character: the MDLM bound (NELBO) and the baseline's exact NLL, and the gap in %
  - unconditional samples at each of `benchmark.steps`: generative perplexity under the baseline,
    token entropy, network calls; the same for the baseline's own samples and for real test text
  - sampling speed (tokens per second) at each step count with and without the sampler's cache,
    and the speed-up of the cache
  - prompted (prefix) and infilled samples, with the share of fixed tokens kept (must be 1.0)
Targets (quick budget): the bound within 15% of the baseline; the cache at least 2x faster at
256 steps. Results: benchmarks/results/text[_quick].{json,md,png} via diffusekit.core.app.results.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from diffusekit.core.app import config as configuration
from diffusekit.domains.text import metrics
from diffusekit.domains.text.generation import marked
from diffusekit.domains.text.network import parameter_count
from diffusekit.core.app import results as results_io

REPO_ROOT = Path(__file__).resolve().parents[2]
BOUND_TARGET_PERCENT = 15.0
CACHE_TARGET_SPEEDUP = 2.0


def train_pair(domain: Any, cfg: DictConfig, steps: int) -> dict[str, Any]:
    """Train `model.kind=mdlm` and `model.kind=ar` for `steps` steps each with the toolkit's
    trainer; return {kind: (network, process, run, seconds)} with the EMA networks."""
    from diffusekit.core.app.training.fit import train
    from diffusekit.core.app.training.inference import load_run

    trained = {}
    for kind in ("mdlm", "ar"):
        run_cfg = configuration.override(cfg, overrides=[
            f"model.kind={kind}", f"trainer.max_steps={steps}", f"run_dir={cfg.benchmark.run_dir}",
            f"val_every={steps}", f"checkpoint_every={steps}", "sample.val_n=0", "quick=false"])
        started = time.perf_counter()
        run = train(domain, run_cfg)
        seconds = time.perf_counter() - started
        network, process, _ = load_run(domain, run)
        trained[kind] = (network, process, run, seconds)
    return trained


def _test_batches(datamodule: Any, n: int) -> list[dict]:
    """`n` batches of test chunks spread evenly over the whole test stream (every held-out work
    contributes, not only the first one)."""
    from torch.utils.data import DataLoader, Subset

    datamodule.setup("test")
    chunks = datamodule.dataset("test")
    count = min(len(chunks), n * datamodule.batch_size)
    picks = torch.linspace(0, len(chunks) - 1, count).round().long().unique().tolist()
    return list(DataLoader(Subset(chunks, picks), batch_size=datamodule.batch_size))


@torch.no_grad()
def _sample_quality(mdlm: tuple, ar: tuple, batches: list[dict], b: DictConfig,
                    seed: int) -> dict[str, Any]:
    (net, proc), (ar_net, ar_proc) = mdlm, ar
    n, length = int(b.n_samples), batches[0]["x0"].shape[1]
    out: dict[str, Any] = {}
    shape_batch = {"x0": torch.zeros(n, length, dtype=torch.long)}
    nothing = torch.zeros(n, length, dtype=torch.bool)
    for steps in b.steps:
        calls = []
        hook = net.register_forward_hook(lambda *_: calls.append(1))
        samples = proc.generate(net, shape_batch, steps=int(steps), keep=nothing,
                                generator=torch.Generator().manual_seed(seed))
        hook.remove()
        out[f"gen_ppl_{steps}"] = metrics.generative_perplexity(ar_net, ar_proc, samples)
        out[f"entropy_{steps}"] = metrics.sample_entropy(samples)
        out[f"network_calls_{steps}"] = len(calls)
        out.setdefault("_samples", {})[f"mdlm, {steps} steps"] = samples[:2]
    block = max(1, length // 4)
    semi_ar = proc.generate(net, shape_batch, steps=int(b.steps[-1]) // 4, keep=nothing,
                            block_size=block, generator=torch.Generator().manual_seed(seed))
    out["gen_ppl_semi_ar"] = metrics.generative_perplexity(ar_net, ar_proc, semi_ar)
    out["entropy_semi_ar"] = metrics.sample_entropy(semi_ar)
    out["_samples"][f"mdlm semi-AR, blocks of {block}, {int(b.steps[-1]) // 4} steps each"] = semi_ar[:2]
    ar_samples = ar_proc.generate(ar_net, shape_batch, keep=nothing,
                                  generator=torch.Generator().manual_seed(seed))
    out["gen_ppl_ar_samples"] = metrics.generative_perplexity(ar_net, ar_proc, ar_samples)
    out["entropy_ar_samples"] = metrics.sample_entropy(ar_samples)
    out["_samples"]["autoregressive baseline"] = ar_samples[:2]
    data = torch.cat([x["x0"] for x in batches])[:n]
    out["gen_ppl_test_data"] = metrics.generative_perplexity(ar_net, ar_proc, data)
    out["entropy_test_data"] = metrics.sample_entropy(data)

    # prompted and infilled samples from real test text: what they keep must stay as given
    x0 = batches[0]["x0"][:4]
    for mode in ("prefix", "infill"):
        keep = dataclasses.replace(proc.generation, mode=mode).keep(x0)
        made = proc.generate(net, {"x0": x0}, steps=int(b.steps[1]), keep=keep,
                             generator=torch.Generator().manual_seed(seed))
        out[f"kept_{mode}"] = metrics.kept_fraction(made, x0, keep)
        out["_samples"][f"{mode} ({int(b.steps[1])} steps)"] = made[:2]
        out.setdefault("_masks", {})[f"{mode} ({int(b.steps[1])} steps)"] = keep[:2]
    return out


def _throughput(net: torch.nn.Module, proc: Any, length: int, b: DictConfig,
                seed: int) -> dict[str, Any]:
    """Tokens per second with and without the cache, measured in pairs (cached, then uncached,
    same seed) so that a change of machine load between them hits both alike; the speed-up is
    the median of the paired ratios."""
    out: dict[str, Any] = {}
    shape = (int(b.speed_batch), length)
    for steps in b.steps:
        pairs = [(metrics.sampling_throughput(proc, net, shape, int(steps), True, seed + r),
                  metrics.sampling_throughput(proc, net, shape, int(steps), False, seed + r))
                 for r in range(int(b.speed_repeats))]
        for i, tag in enumerate(("cached", "uncached")):
            out[f"tokens_per_s_{tag}_{steps}"] = statistics.median(p[i]["tokens_per_s"] for p in pairs)
            out[f"network_calls_{tag}_{steps}"] = statistics.median(p[i]["network_calls"] for p in pairs)
        out[f"cache_speedup_{steps}"] = statistics.median(
            p[0]["tokens_per_s"] / p[1]["tokens_per_s"] for p in pairs)
    return out


def run_benchmark(domain: Any, cfg: DictConfig) -> dict[str, Any]:
    """Train both models, measure everything listed in the module docstring, write the results
    files; return the metrics."""
    quick = bool(cfg.get("quick", False))
    if quick:
        q = cfg.benchmark.quick
        cfg = configuration.override(cfg, overrides=[
            f"benchmark.train_steps={int(q.train_steps)}", f"data.batch_size={int(q.batch_size)}",
            f"data.seq_len={int(q.seq_len)}", f"optim.warmup_steps={int(q.warmup_steps)}",
            f"benchmark.test_batches={int(q.test_batches)}",
            f"benchmark.speed_repeats={int(q.speed_repeats)}"])
    b, steps, seed = cfg.benchmark, int(cfg.benchmark.train_steps), int(cfg.seed)
    torch.manual_seed(seed)
    trained = train_pair(domain, cfg, steps)
    (net, proc, mdlm_run, mdlm_s), (ar_net, ar_proc, ar_run, ar_s) = trained["mdlm"], trained["ar"]
    datamodule = domain.build_datamodule(cfg)
    batches = _test_batches(datamodule, int(b.test_batches))
    started = time.perf_counter()
    bpc_mdlm = metrics.diffusion_bits_per_char(net, proc, batches, int(b.repeats), seed)
    bpc_ar = metrics.autoregressive_bits_per_char(ar_net, ar_proc, batches)
    m: dict[str, Any] = {
        "train_steps": steps, "test_chunks": sum(len(x["x0"]) for x in batches),
        "seq_len": int(cfg.data.seq_len), "tokenizer": str(cfg.tokenizer.kind),
        "mask_draws": proc.mask_draws, "denoiser": type(net.model).__name__,
        "baseline": type(ar_net.model).__name__, "lr": float(cfg.optim.lr),
        "warmup_steps": int(cfg.optim.warmup_steps), "batch_size": int(cfg.data.batch_size),
        "params_mdlm": parameter_count(net), "params_ar": parameter_count(ar_net),
        "train_seconds_mdlm": round(mdlm_s, 1), "train_seconds_ar": round(ar_s, 1),
        "bpc_mdlm_bound": bpc_mdlm, "bpc_ar": bpc_ar,
        "bound_gap_percent": metrics.bound_gap_percent(bpc_mdlm, bpc_ar),
    }
    quality = _sample_quality((net, proc), (ar_net, ar_proc), batches, b, seed)
    samples, masks = quality.pop("_samples"), quality.pop("_masks")
    m.update(quality)
    m.update(_throughput(net, proc, int(cfg.data.seq_len), b, seed))
    m["eval_seconds"] = round(time.perf_counter() - started, 1)
    last = int(b.steps[-1])
    m["bound_target_met"] = m["bound_gap_percent"] <= BOUND_TARGET_PERCENT
    m["cache_target_met"] = m[f"cache_speedup_{last}"] >= CACHE_TARGET_SPEEDUP
    m["runs"] = {"mdlm": str(mdlm_run.path), "ar": str(ar_run.path)}
    m["load_average"] = [round(x, 2) for x in os.getloadavg()]
    tokenizer = datamodule.tokenizer
    texts = {title: [tokenizer.decode(row.tolist()) if title not in masks else
                     marked(tokenizer, row, masks[title][i])
                     for i, row in enumerate(rows)] for title, rows in samples.items()}
    write_results(m, cfg, texts, quick)
    return m


def _plot(m: dict[str, Any], steps: list[int], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 3, 1)
    ax.bar(["MDLM bound", "AR baseline"], [m["bpc_mdlm_bound"], m["bpc_ar"]], color=["C0", "C1"])
    ax.set(ylabel="test bits per character",
           title=f"gap {m['bound_gap_percent']:.1f}% (target <= {BOUND_TARGET_PERCENT:.0f}%)")
    ax = fig.add_subplot(1, 3, 2)
    ax.plot(steps, [m[f"tokens_per_s_cached_{s}"] for s in steps], "o-", label="cached")
    ax.plot(steps, [m[f"tokens_per_s_uncached_{s}"] for s in steps], "s--", label="no cache")
    ax.set(xscale="log", yscale="log", xlabel="sampler steps", ylabel="tokens / s",
           title=f"cache speed-up at {steps[-1]} steps: {m[f'cache_speedup_{steps[-1]}']:.2f}x")
    ax.set_xticks(steps, [str(s) for s in steps], minor=False)
    ax.set_xticks([], minor=True)
    ax.legend()
    ax = fig.add_subplot(1, 3, 3)
    ax.plot(steps, [m[f"gen_ppl_{s}"] for s in steps], "o-", label="MDLM samples")
    ax.axhline(m["gen_ppl_ar_samples"], color="C1", ls="--", label="AR samples")
    ax.axhline(m["gen_ppl_test_data"], color="0.3", ls=":", label="test text")
    ax.set(xscale="log", xlabel="sampler steps", ylabel="perplexity under the AR baseline",
           title="generative perplexity (per token)")
    ax.set_xticks(steps, [str(s) for s in steps], minor=False)
    ax.set_xticks([], minor=True)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_results(m: dict[str, Any], cfg: DictConfig, texts: dict[str, list[str]],
                  quick: bool) -> list[Path]:
    """benchmarks/results/text[_quick].{json,md,png}; `texts`: {title: decoded samples}."""
    b = cfg.benchmark
    steps = [int(s) for s in b.steps]
    name = "text_quick" if quick else "text"
    out_dir = Path(b.results_dir) if b.results_dir else results_io.RESULTS_DIR
    baselines = {"bpc_ar": m["bpc_ar"], "gen_ppl_ar_samples": m["gen_ppl_ar_samples"],
                 "gen_ppl_test_data": m["gen_ppl_test_data"]}
    record = results_io.make_record(name, m, baselines)
    rows = [["test bits per character (bound / exact NLL)", m["bpc_mdlm_bound"], m["bpc_ar"]],
            ["parameters", m["params_mdlm"], m["params_ar"]],
            ["training seconds", m["train_seconds_mdlm"], m["train_seconds_ar"]],
            ["generative perplexity of own samples", m[f"gen_ppl_{steps[-1]}"],
             m["gen_ppl_ar_samples"]],
            ["sample entropy (bits)", m[f"entropy_{steps[-1]}"], m["entropy_ar_samples"]]]
    body = [f"{m['train_steps']} training steps each of {m['batch_size']} x {m['seq_len']}-token "
            f"chunks ({m['tokenizer']} tokenizer; AdamW lr {m['lr']:g}, {m['warmup_steps']} "
            f"warm-up steps, both), {m['test_chunks']} held-out test chunks "
            f"(works: {', '.join(cfg.data.test_works)}). Denoiser {m['denoiser']}, baseline "
            f"{m['baseline']}; the MDLM loss averages {m['mask_draws']} (t, z_t) draws per "
            "training sequence (same tokens and steps, that many times the network work).", "",
            results_io.markdown_table(["", "MDLM (diffusion)", "AR baseline"], rows, digits=4), "",
            f"Bound gap: **{m['bound_gap_percent']:.1f}%** (target <= {BOUND_TARGET_PERCENT:.0f}%: "
            f"{'met' if m['bound_target_met'] else 'not met'}).", "",
            results_io.markdown_table(
                ["steps", "gen. perplexity", "entropy", "net calls", "tok/s cached",
                 "tok/s no cache", "cache speed-up", "calls cached / uncached"],
                [[s, m[f"gen_ppl_{s}"], m[f"entropy_{s}"], m[f"network_calls_{s}"],
                  m[f"tokens_per_s_cached_{s}"], m[f"tokens_per_s_uncached_{s}"],
                  m[f"cache_speedup_{s}"],
                  f"{m[f'network_calls_cached_{s}']:.0f} / {m[f'network_calls_uncached_{s}']:.0f}"]
                 for s in steps]), "",
            f"Cache at {steps[-1]} steps: **{m[f'cache_speedup_{steps[-1]}']:.2f}x** "
            f"(target >= {CACHE_TARGET_SPEEDUP:.0f}x: {'met' if m['cache_target_met'] else 'not met'}); "
            f"throughput with {int(b.speed_batch)} sequence(s) per batch, median of "
            f"{int(b.speed_repeats)}. Real test text scores perplexity {m['gen_ppl_test_data']:.3g} "
            f"and entropy {m['entropy_test_data']:.3g} bits; semi-AR samples "
            f"{m['gen_ppl_semi_ar']:.3g} / {m['entropy_semi_ar']:.3g}. Prompted and infilled "
            f"samples kept {m['kept_prefix']:.0%} / {m['kept_infill']:.0%} of their fixed tokens.",
            f"Load average during the run (1/5/15 min): {m['load_average']}.",
            "", "![text benchmark](" + f"{name}.png)", "",
            "## Samples", "", "Generated stretches of prompted / infilled samples are in [[ ]].", ""]
    for title, items in texts.items():
        body += [f"### {title}", ""]
        for text in items:
            body += ["```text", text.replace("```", "'''"), "```", ""]
    json_path, md_path = results_io.write_results(record, "\n".join(body), out_dir,
                                           title="Text domain: MDLM vs autoregressive baseline")
    png = _plot(m, steps, out_dir / f"{name}.png")
    return [json_path, md_path, png]
