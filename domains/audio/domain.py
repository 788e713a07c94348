"""The audio domain: speech denoising in the log-mel domain with a conditional diffusion model.

`AudioDomain` builds each part from the resolved config (config.yaml beside this file):

    build_datamodule(cfg) -> data.AudioDataModule   batches {"x0", "cond": {"noisy"}, waves, length}
    build_network(cfg)    -> network.MelUNet        net(x_in, c_noise, noisy=...) -> [B, 1, M, T]
    process(cfg)          -> Enhancer(process)      diffusion.MelDiffusion (objective "diffusion"),
                                                    the one-step RegressionProcess ("regression")
                                                    or StoRM's StochasticRegeneration ("storm",
                                                    with a PredictorDenoiser network pair)
    evaluate(batch, samples, cfg)     SI-SDR, PESQ-WB, ESTOI, log-mel L1 of the enhanced speech, of
                                      the noisy input and of spectral subtraction, side by side
    write_samples(samples, out, cfg)  noisy / enhanced / clean WAVs, spectrograms.png, metrics.json
    benchmark(cfg)                    see benchmark.py

The process is wrapped by `Enhancer`, whose `generate` returns an `Enhanced` record (the clean
log-mel estimate together with the batch it was made for), so that the writers have the noisy
and clean references at hand.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import soundfile as sf
import torch
from omegaconf import DictConfig
from torch import Tensor
from tqdm.auto import tqdm

from diffusekit.core.errors import ConfigError
from diffusekit.core.regeneration import PredictorDenoiser
from diffusekit.core.registry import Registry
from diffusekit.domains.audio.baselines import RegressionProcess, spectral_subtraction
from diffusekit.domains.audio.diffusion import MelDiffusion, StochasticRegeneration
from diffusekit.domains.audio.features import MelFeatures
from diffusekit.domains.audio.metrics import nanmean, score_all
from diffusekit.domains.audio.network import MelUNet
from diffusekit.plugins import Domain


def diffusion_process(cfg: DictConfig) -> MelDiffusion:
    """The conditional mel diffusion (the engine's Gaussian process inside) from `process`."""
    return MelDiffusion.from_config(cfg.process)


def regeneration_process(cfg: DictConfig) -> StochasticRegeneration:
    """StoRM: the one-step regression in front of the mel diffusion (`model.predictor_weight`),
    whose sampling starts at `model.t_start` from the forward-noised estimate."""
    diffusion = dataclasses.replace(diffusion_process(cfg),
                                    t_start=float(cfg.model.get("t_start", 1.0)))
    return StochasticRegeneration(diffusion, RegressionProcess().predict,
                                  float(cfg.model.get("predictor_weight", 1.0)),
                                  see_mixture=bool(cfg.model.get("see_mixture", False)))


def mel_unet(cfg: DictConfig, conditions: tuple[str, ...] = ("noisy",)) -> MelUNet:
    """The denoiser network of the `network` section, conditioned on the log-mels `conditions`."""
    n = cfg.network
    return MelUNet(channels=tuple(int(c) for c in n.channels), blocks=int(n.blocks),
                   emb_dim=int(n.emb_dim), conditions=conditions)


def regeneration_pair(cfg: DictConfig) -> PredictorDenoiser:
    """StoRM's two UNets: the predictor sees the mixture, the denoiser its estimate (and, with
    `model.see_mixture`, the mixture too)."""
    seen = ("noisy", "mixture") if cfg.model.get("see_mixture", False) else ("noisy",)
    return PredictorDenoiser(mel_unet(cfg), mel_unet(cfg, seen))


# model.objective -> factory(cfg) -> process with training_loss / generate
OBJECTIVES: Registry[Callable[[DictConfig], Any]] = Registry("audio objective")
OBJECTIVES.register("diffusion", diffusion_process)
OBJECTIVES.register("regression", lambda cfg: RegressionProcess())
OBJECTIVES.register("storm", regeneration_process)

# model.objective -> factory(cfg) -> the network that objective's process trains
NETWORKS: Registry[Callable[[DictConfig], torch.nn.Module]] = Registry("audio network layout")
NETWORKS.register("diffusion", mel_unet)
NETWORKS.register("regression", mel_unet)
NETWORKS.register("storm", regeneration_pair)

# reconstruct.method -> fn(features, x_hat [B,1,M,T], noisy_wave [B,L], cfg) -> [B, L]
RECONSTRUCTIONS: Registry[Callable[..., Tensor]] = Registry("waveform reconstruction")
RECONSTRUCTIONS.register(
    "mask", lambda f, x_hat, noisy, cfg: f.mask_reconstruct(x_hat[:, 0], noisy))
RECONSTRUCTIONS.register(
    "griffin_lim", lambda f, x_hat, noisy, cfg: f.griffin_lim(
        x_hat[:, 0], noisy.shape[-1], int(cfg.reconstruct.griffin_lim_iters)))


@dataclass
class Enhanced:
    """A clean log-mel estimate `mel` [B, 1, M, T] and the batch it was generated for."""

    mel: Tensor
    batch: dict


@dataclass(frozen=True, eq=False)
class Enhancer:
    """A process whose `generate` returns `Enhanced` (training is the inner process's)."""

    inner: Any

    @property
    def sampler(self) -> str | None:
        return getattr(self.inner, "sampler", None)

    def training_loss(self, network, batch: dict, generator: torch.Generator | None = None,
                      ) -> Tensor:
        return self.inner.training_loss(network, batch, generator=generator)

    def generate(self, network, batch: dict, **options: Any) -> Enhanced:
        return Enhanced(self.inner.generate(network, batch, **options), batch)


def reconstruct(cfg: DictConfig, x_hat: Tensor, noisy_wave: Tensor) -> Tensor:
    """Waveforms [B, L] from log-mel estimates [B, 1, M, T] (method `reconstruct.method`)."""
    f = MelFeatures.from_config(cfg.features)
    with torch.no_grad():
        return RECONSTRUCTIONS.get(cfg.reconstruct.method)(f, x_hat.float().cpu(),
                                                           noisy_wave.float().cpu(), cfg)


def score_systems(batch: dict, mel: Tensor, cfg: DictConfig,
                  systems: tuple[str, ...] = ("model", "noisy", "baseline"),
                  ) -> dict[str, dict[str, list[float]]]:
    """Per-clip scores {system: {metric: [B]}} of the model ("model"), the noisy input ("noisy")
    and spectral subtraction ("baseline") against the clean waves of `batch` (those of
    `systems` only)."""
    f = MelFeatures.from_config(cfg.features)
    sr = f.sample_rate
    clean, noisy = batch["clean_wave"].cpu(), batch["noisy_wave"].cpu()
    lengths, x0 = batch.get("length"), batch["x0"].cpu()
    out = {}
    if "model" in systems:
        enhanced = reconstruct(cfg, mel, noisy)
        out["model"] = score_all(enhanced, clean, sr, mel.cpu(), x0, lengths)
    if "noisy" in systems:
        out["noisy"] = score_all(noisy, clean, sr, batch["cond"]["noisy"].cpu(), x0, lengths)
    if "baseline" in systems:
        base = spectral_subtraction(noisy, f)
        out["baseline"] = score_all(base, clean, sr, f.encode(base)[:, None], x0, lengths)
    return out


def summarise(scores: dict[str, dict[str, list[float]]]) -> dict[str, float]:
    """Means: the model's metrics under their names, the others as noisy_* and baseline_*, and
    si_sdr_gain = model SI-SDR - noisy SI-SDR."""
    out: dict[str, float] = {}
    for system, metrics in scores.items():
        prefix = "" if system == "model" else f"{system}_"
        for name, values in metrics.items():
            out[prefix + name] = nanmean(values)
    if "si_sdr" in out and "noisy_si_sdr" in out:
        out["si_sdr_gain"] = out["si_sdr"] - out["noisy_si_sdr"]
    return out


class AudioDomain(Domain):
    """Speech denoising on log-mel spectrograms, conditioned on the noisy log-mel."""

    name = "audio"
    description = "speech denoising: conditional diffusion over log-mel spectrograms"

    def build_datamodule(self, cfg: DictConfig) -> Any:
        """The data module, already set up (the corpus is synthesised first if missing): a bad
        folder or an unknown noise kind is one error line before any training starts."""
        from diffusekit.domains.audio.data import AudioDataModule  # Lightning: when needed

        datamodule = AudioDataModule.from_config(cfg)
        datamodule.setup()
        return datamodule

    def build_network(self, cfg: DictConfig) -> torch.nn.Module:
        """A MelUNet, or for `model.objective: storm` a PredictorDenoiser pair of them."""
        return NETWORKS.get(cfg.model.objective)(cfg)

    def process(self, cfg: DictConfig) -> Enhancer:
        return Enhancer(OBJECTIVES.get(cfg.model.objective)(cfg))

    def evaluate(self, batch: dict, samples: Enhanced, cfg: DictConfig) -> dict[str, float]:
        """Mean metrics over the batch (see `summarise`)."""
        return summarise(score_systems(batch, _mel(samples), cfg))

    def write_samples(self, samples: Enhanced, out_dir: Path, cfg: DictConfig) -> list[Path]:
        """For every clip of the batch (the number asked for: `toolkit sample -n`, sample.n,
        sample.val_n), or the first `outputs.write_n` when that is set: NN-noisy.wav,
        NN-enhanced.wav, NN-clean.wav; spectrograms.png (rows: the first 4 clips; columns:
        noisy | enhanced | clean); metrics.json (the batch's metrics, see `evaluate`). A cap
        that leaves clips unwritten is reported in one line on stderr."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        batch, mel = samples.batch, _mel(samples)
        sr = int(cfg.features.sample_rate)
        enhanced = reconstruct(cfg, mel, batch["noisy_wave"])
        n = written_clips(cfg, mel.shape[0])
        if n < mel.shape[0]:
            # tqdm.write: a sampling progress bar may be on the line
            tqdm.write(f"note: wrote {n} of the {mel.shape[0]} enhanced clips as WAV files "
                       f"(outputs.write_n is {n}; set it to null in the run's config.yaml to "
                       "write every clip)", file=sys.stderr)
        paths: list[Path] = []
        for i in range(n):
            length = int(batch["length"][i]) if "length" in batch else enhanced.shape[-1]
            for tag, wave in (("noisy", batch["noisy_wave"]), ("enhanced", enhanced),
                              ("clean", batch["clean_wave"])):
                path = out_dir / f"{i:02d}-{tag}.wav"
                sf.write(str(path), wave[i, :length].detach().cpu().numpy(), sr, subtype="FLOAT")
                paths.append(path)
        paths.append(spectrogram_figure(batch["cond"]["noisy"][:4], mel[:4], batch["x0"][:4],
                                        out_dir / "spectrograms.png", cfg))
        metrics = summarise(score_systems(batch, mel, cfg))
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        paths.append(out_dir / "metrics.json")
        return paths

    def benchmark(self, cfg: DictConfig) -> dict[str, Any]:
        from diffusekit.domains.audio.benchmark import run_benchmark

        return run_benchmark(self, cfg)


def written_clips(cfg: DictConfig, generated: int) -> int:
    """How many of `generated` clips `write_samples` writes: all of them, or `outputs.write_n`
    when that is a number (a `ConfigError` naming the key when it is not a whole number >= 0)."""
    cap = cfg.outputs.get("write_n")
    if cap is None:
        return generated
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
        raise ConfigError(f"config key 'outputs.write_n' must be null or a whole number >= 0, "
                          f"got {cap!r}")
    return min(cap, generated)


def _mel(samples: Any) -> Tensor:
    return samples.mel if isinstance(samples, Enhanced) else samples


def spectrogram_figure(noisy: Tensor, enhanced: Tensor, clean: Tensor, png: Path,
                       cfg: DictConfig) -> Path:
    """A grid of log-mel images: one row per clip, columns noisy | enhanced | clean."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = noisy.shape[0]
    fig = Figure(figsize=(11, 2.2 * rows), dpi=100)
    FigureCanvasAgg(fig)
    hop_s = int(cfg.features.hop) / int(cfg.features.sample_rate)
    for r in range(rows):
        for c, (title, x) in enumerate((("noisy", noisy), ("enhanced", enhanced),
                                        ("clean", clean))):
            ax = fig.add_subplot(rows, 3, 3 * r + c + 1)
            img = x[r, 0].detach().cpu().float().numpy()
            ax.imshow(img, origin="lower", aspect="auto", vmin=-2.0, vmax=3.0, cmap="magma",
                      extent=(0, img.shape[1] * hop_s, 0, img.shape[0]))
            if r == 0:
                ax.set_title(title)
            ax.set_xlabel("s" if r == rows - 1 else "")
            ax.set_ylabel("mel bin" if c == 0 else "")
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(png)
    return png

