"""`toolkit benchmark --domain audio --repair [--quick]`: packet-loss concealment of held-out
clean speech, against linear interpolation of the log-mel and against zeros.

1. A base model, `repair.train_steps` steps (`quick_train_steps` with --quick) through the
   toolkit's trainer (`train_for_benchmark`) with `repair.train_overrides`: by default the
   domain's own model (StoRM) trained as a concealer, every training pair clean speech with lost
   stretches (`data.packet_loss`, noise.PacketLoss), so that it has seen gaps in its condition.
2. `n_test` held-out test utterances (held-out voices), clean, cut to `data.eval_frames` frames;
   each loses 1 to `max_gaps` stretches of `min_ms`..`max_ms` ms (seeded), zero-filled.
3. The systems, all given the same received signal (concealment.py):
       zeros          the received signal itself (the gaps silent; its log-mel at the floor)
       linear         each lost frame's log-mel linearly interpolated per band between the
                      nearest received frames (`concealment.interpolate_frames`)
       predictor      StoRM's one-step predictor alone (the regression inside the model), its
                      output kept on the lost frames only (1 NFE)
       replace-N (S), repaint-NxR-jJ (S)   the model's inpainting with sampler S
                      (`process.inpaint`, `sweep_settings`), NFE = 1 (the predictor) + the steps
   Every log-mel goes back to audio the same way: Griffin-Lim over the clip, spliced into the
   gaps only (`concealment.to_audio`); zeros stays silent.
   Two bounds, not concealers (they look at the clean log-mel): each gap's bands filled with the
   constant, and with the straight line, fitted to the truth (`concealment.truth_fitted_fill`):
   how close a fill of that shape could get at best.
4. Scores on the gaps: log-mel L1 over the lost frames (every frame whose STFT window touches a
   gap; the mean over all their bins, pooled over the clips), and SI-SDR of the concealed samples
   of each clip's gaps against the clean ones (the mean over clips; zeros has no signal there,
   so its SI-SDR is undefined and not given).

Target (issue 18): gap log-mel L1 at least 30% below linear interpolation's (`target_ratio`).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from omegaconf import DictConfig
from torch import Tensor

from diffusekit.core.app import results as results_io
from diffusekit.core.app.repair import (BenchmarkRun, generator_for, inpaint_batch, mean_of_draws,
                                        nfe_curves, sweep_settings)
from diffusekit.core.app.training.inference import sampling_device
from diffusekit.core.errors import ConfigError
from diffusekit.domains.audio.concealment import (fill_gaps, gapped, interpolate_frames,
                                                  to_audio, truth_fitted_fill, unknown_frames)
from diffusekit.domains.audio.features import MelFeatures
from diffusekit.domains.audio.metrics import si_sdr
from diffusekit.domains.audio.noise import PacketLoss, gap_spans
from diffusekit.domains.audio.process import mel_of


def damaged_clips(waves: list[np.ndarray], features: MelFeatures, frames: int, r: DictConfig,
               seed: int) -> dict[str, Any]:
    """The damaged clips: {"clean" [N, L], "received" [N, L], "spans" (per clip, samples),
    "mel_clean", "mel_received" [N, 1, M, T], "unknown" [N, T] bool}; frames is rounded up to a
    multiple of 8 (the UNet's levels)."""
    from diffusekit.domains.audio.data import fit_length

    frames = -(-frames // 8) * 8
    n = features.samples_for(frames)
    rng = np.random.default_rng(seed)
    clean, received, spans, unknown = [], [], [], []
    for wave in waves:
        clip, valid = fit_length(wave, n)
        count = int(rng.integers(1, int(r.max_gaps) + 1))
        clip_spans = gap_spans(valid, features.sample_rate, rng, count, float(r.min_ms),
                               float(r.max_ms))
        c = torch.from_numpy(clip)
        clean.append(c)
        received.append(gapped(c, clip_spans))
        spans.append(clip_spans)
        unknown.append(unknown_frames(clip_spans, frames, features.hop, features.n_fft))
    clean_t, received_t = torch.stack(clean), torch.stack(received)
    return {"clean": clean_t, "received": received_t, "spans": spans,
            "mel_clean": features.encode(clean_t)[:, None],
            "mel_received": features.encode(received_t)[:, None], "unknown": torch.stack(unknown)}


def gap_scores(mel: Tensor, waves: Tensor | None, cases: dict[str, Any]) -> dict[str, float]:
    """gap_logmel_l1: mean |mel - clean| over the lost frames' bins (pooled); gap_si_sdr: the
    mean over clips of SI-SDR of the gaps' samples (None without waveforms)."""
    lost = cases["unknown"][:, None, None, :].expand_as(mel)
    l1 = float((mel - cases["mel_clean"]).abs()[lost].double().mean())
    out: dict[str, Any] = {"gap_logmel_l1": l1, "gap_si_sdr": None}
    if waves is not None:
        values = []
        for wave, clean, spans in zip(waves, cases["clean"], cases["spans"]):
            idx = torch.cat([torch.arange(a, b) for a, b in spans])
            values.append(float(si_sdr(wave[idx], clean[idx])))
        out["gap_si_sdr"] = float(np.mean(values))
    return out


def concealed_waves(features: MelFeatures, mel: Tensor, cases: dict[str, Any],
                    iterations: int) -> Tensor:
    """[N, L]: each clip's repaired log-mel back to audio (Griffin-Lim spliced into the gaps)."""
    return torch.stack([to_audio(features, m[0], rec, spans, iterations)
                        for m, rec, spans in zip(mel, cases["received"], cases["spans"])])


def run_repair_benchmark(domain: Any, cfg: DictConfig) -> dict[str, Any]:
    """The benchmark of the module docstring; writes benchmarks/results/audio_repair[_quick].*
    (or `repair.results_dir`) and returns {"metrics", "baselines"}."""
    from diffusekit.core.app.training.fit import train_for_benchmark

    r = cfg.repair
    run = BenchmarkRun.start(cfg)
    quick, steps, n_test, seed = run.quick, run.train_steps, run.n_test, run.seed
    features = MelFeatures.from_config(cfg.features)
    iterations = int(cfg.reconstruct.griffin_lim_iters)
    overrides = [f"seed={seed}", *[str(o) for o in r.train_overrides]]
    with tempfile.TemporaryDirectory(prefix="diffusekit-audio-repair-") as scratch:
        work = Path(r.run_dir) if r.get("run_dir") else Path(scratch)
        trained = train_for_benchmark(domain, cfg, steps, work, overrides=overrides,
                                      own_section="repair")
    network, process, run_cfg = trained.network, trained.process, trained.cfg
    datamodule = domain.build_datamodule(cfg)
    test = datamodule.splits["test"]
    if not hasattr(test, "waves"):
        raise ConfigError("the audio repair benchmark damages clean held-out speech: it needs the "
                          "synthetic corpus, not data.folder's noisy pairs")
    waves = test.waves[:n_test]
    cases = damaged_clips(waves, features, int(cfg.data.eval_frames), r, seed)
    storm = run_cfg.model.objective == "storm"
    fill = PacketLoss.from_config(run_cfg.data.get("packet_loss")).fill  # as the base was trained
    condition = fill_gaps(cases["mel_received"], cases["unknown"], fill)
    batch = {"x0": cases["mel_received"], "cond": {"noisy": condition}}
    known = ~cases["unknown"][:, None, None, :]
    rows: list[dict[str, Any]] = []
    shown: dict[str, Tensor] = {}

    def score(name: str, mel: Tensor, nfe: int, started: float, **extra: Any) -> None:
        waves_out = concealed_waves(features, mel, cases, iterations)
        rows.append({"system": name, "nfe": nfe, **extra, **gap_scores(mel, waves_out, cases),
                     "seconds": round(time.perf_counter() - started, 1)})
        shown[name] = mel

    baselines: dict[str, Any] = {}
    started = time.perf_counter()
    baselines["zeros"] = {**gap_scores(cases["mel_received"], None, cases), "nfe": 0}
    shown["zeros"] = cases["mel_received"]
    linear = torch.stack([interpolate_frames(m, u) for m, u in zip(cases["mel_received"],
                                                                   cases["unknown"])])
    baselines["linear"] = {**gap_scores(linear, concealed_waves(features, linear, cases,
                                                                iterations), cases), "nfe": 0,
                           "seconds": round(time.perf_counter() - started, 1)}
    shown["linear"] = linear
    bounds = {shape: gap_scores(torch.stack([truth_fitted_fill(m, u, degree) for m, u in zip(
        cases["mel_clean"], cases["unknown"])]), None, cases)["gap_logmel_l1"]
        for shape, degree in (("constant", 0), ("line", 1))}
    generator_seed = seed + 1
    device = sampling_device(cfg)
    network.to(device)  # the sweeps run where sample.device says
    with torch.no_grad():
        if storm:
            started = time.perf_counter()
            estimate = process.inner.predict(network.predictor,
                                             move_data_to_device(batch, device)).cpu()
            score("predictor", torch.where(known, cases["mel_received"], estimate), 1, started,
                  method="regression", sampler=None, steps=0, resamplings=1)
        for setting in sweep_settings(r):
            started = time.perf_counter()
            mel = mean_of_draws(lambda s: mel_of(inpaint_batch(
                network, process, batch, known, method=setting.instance(), sampler=setting.sampler,
                steps=setting.steps, generator=generator_for(network, s))),
                setting.draws, generator_seed)
            fields = setting.fields()  # StoRM's predictor is called once per repair
            nfe = fields.pop("nfe") + int(storm) * setting.draws
            score(fields.pop("setting"), mel, nfe, started, **fields)
    metrics = {"rows": rows, "train_steps": steps, "train_seconds": trained.seconds,
               "objective": str(run_cfg.model.objective), "train_overrides": overrides[1:],
               "n_test": len(waves), "samplers": [str(x) for x in r.samplers], "quick": quick,
               "gaps": int(sum(len(s) for s in cases["spans"])),
               "lost_frame_share": float(cases["unknown"].double().mean()),
               "truth_fitted_gap_logmel_l1": bounds,
               **_targets(rows, baselines, float(r.target_ratio)),
               **run.clock()}
    _write(cfg, run, metrics, baselines, shown, cases, features)
    return {"metrics": metrics, "baselines": baselines}


def _targets(rows: list[dict], baselines: dict, ratio: float) -> dict[str, Any]:
    best = min(rows, key=lambda row: row["gap_logmel_l1"])
    linear = baselines["linear"]["gap_logmel_l1"]
    return {"best_system": best["system"], "best_gap_logmel_l1": best["gap_logmel_l1"],
            "best_over_linear": best["gap_logmel_l1"] / linear,
            "target_ratio": ratio, "target_met": best["gap_logmel_l1"] <= ratio * linear}


def _write(cfg: DictConfig, run: BenchmarkRun, metrics: dict, baselines: dict, shown: dict[str, Tensor],
           cases: dict[str, Any], features: MelFeatures) -> None:
    r = cfg.repair
    name, out_dir = run.record_place(cfg, "audio")
    title = (f"Audio repair (packet-loss concealment): {metrics['n_test']} held-out clips, "
             f"{metrics['gaps']} gaps of {r.min_ms:g}-{r.max_ms:g} ms, {metrics['objective']} "
             f"base of {metrics['train_steps']} steps")
    _figure(out_dir / f"{name}.png", metrics, baselines, shown, cases, features,
            int(r.figure_clips), title)
    headers = ["system", "NFE", "gap log-mel L1", "gap SI-SDR (dB)", "seconds"]
    table = [["zeros (the received signal)", 0, baselines["zeros"]["gap_logmel_l1"], None, "-"],
             ["linear interpolation of the log-mel", 0, baselines["linear"]["gap_logmel_l1"],
              baselines["linear"]["gap_si_sdr"], baselines["linear"]["seconds"]]]
    table += [[row["system"], row["nfe"], row["gap_logmel_l1"], row["gap_si_sdr"],
               row["seconds"]] for row in metrics["rows"]]
    lines = [title, "",
             f"Training: `{' '.join(metrics['train_overrides'])}`, the toolkit's trainer, "
             f"{metrics['train_seconds']} s. RePaint with {metrics['samplers'][0]}. Lost frames "
             "(an STFT "
             f"window touching a gap): {100 * metrics['lost_frame_share']:.1f}% of all frames. "
             "Every log-mel is turned into audio by Griffin-Lim over the clip spliced into the "
             "gaps (received samples untouched); SI-SDR is of the gaps' samples (zeros: "
             "undefined).", "",
             results_io.markdown_table(headers, table, digits=4), "",
             f"- best gap log-mel L1: {metrics['best_gap_logmel_l1']:.4f} "
             f"({metrics['best_system']}), {metrics['best_over_linear']:.3f} x linear "
             f"interpolation's; target <= {metrics['target_ratio']:g} x: "
             f"{'met' if metrics['target_met'] else 'not met'}."]
    predictor = [row for row in metrics["rows"] if row["system"] == "predictor"]
    if predictor:
        diffusion = [row for row in metrics["rows"] if row["system"] != "predictor"]
        best = min(diffusion, key=lambda row: row["gap_logmel_l1"])
        adds = best["gap_logmel_l1"] < predictor[0]["gap_logmel_l1"]
        lines.append(f"- the model's own one-step predictor: gap L1 "
                     f"{predictor[0]['gap_logmel_l1']:.4f}; the best diffusion setting "
                     f"({best['system']}) {best['gap_logmel_l1']:.4f}: the diffusion "
                     + ("improves on it." if adds else "adds nothing over it on this measure."))
    linear = baselines["linear"]["gap_logmel_l1"]
    fitted = metrics["truth_fitted_gap_logmel_l1"]
    lines.append(f"- bounds that look at the clean log-mel (no concealer can): each gap's bands "
                 f"filled with the constant fitted to the truth {fitted['constant']:.4f} "
                 f"({fitted['constant'] / linear:.3f} x linear interpolation's), with the "
                 f"least-squares line fitted to it {fitted['line']:.4f} "
                 f"({fitted['line'] / linear:.3f} x).")
    lines += ["", BenchmarkRun.timing_line(metrics, training=False), "",
              f"![spectrograms with gaps, gap L1 against NFE]({name}.png)"]
    record = results_io.make_record(name, metrics, baselines)
    results_io.write_results(record, "\n".join(lines), out_dir, title=f"Audio repair ({name})")


def _figure(path: Path, metrics: dict, baselines: dict, shown: dict[str, Tensor],
            cases: dict[str, Any], features: MelFeatures, clips: int, title: str) -> None:
    """Rows of clips: received | linear | the best setting | clean log-mels (gaps outlined);
    below, gap log-mel L1 against NFE."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    best = metrics["best_system"]
    columns = [("received", shown["zeros"]), ("linear", shown["linear"]),
               (best, shown[best]), ("clean", cases["mel_clean"])]
    clips = min(clips, cases["clean"].shape[0])
    fig = Figure(figsize=(13, 2.3 * clips + 3.2), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(clips + 1, len(columns), height_ratios=[1] * clips + [1.3])
    hop_s = features.hop / features.sample_rate
    for i in range(clips):
        for j, (label, mel) in enumerate(columns):
            ax = fig.add_subplot(grid[i, j])
            img = mel[i, 0].float().numpy()
            ax.imshow(img, origin="lower", aspect="auto", vmin=-2.0, vmax=3.0, cmap="magma",
                      extent=(0, img.shape[1] * hop_s, 0, img.shape[0]))
            for a, b in cases["spans"][i]:
                ax.axvspan(a / features.sample_rate, b / features.sample_rate, fill=False,
                           edgecolor="cyan", lw=0.8)
            ax.tick_params(labelsize=6)
            if i == 0:
                ax.set_title(label, fontsize=9)
    ax = fig.add_subplot(grid[clips, :])
    for curve, pts in nfe_curves(metrics["rows"], "gap_logmel_l1").items():
        ax.plot(*zip(*pts), "s--" if curve.startswith("repaint") else "o-", label=curve)
    for row in metrics["rows"]:
        if row.get("method") == "regression":
            ax.plot(row["nfe"], row["gap_logmel_l1"], "^", label="predictor alone")
    for key, style in (("linear", ":"), ("zeros", "-.")):
        ax.axhline(baselines[key]["gap_logmel_l1"], color="0.4", ls=style, label=key)
    for shape, value in metrics["truth_fitted_gap_logmel_l1"].items():
        ax.axhline(value, color="tab:green", ls=":" if shape == "constant" else "--", lw=0.8,
                   label=f"bound: {shape} fitted to the truth")
    ax.set(xscale="log", xlabel="NFE", ylabel="gap log-mel L1")
    ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
