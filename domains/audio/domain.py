"""The audio domain: speech denoising in the log-mel domain with a conditional diffusion model.

`AudioDomain` builds each part from the resolved config (config.yaml beside this file):

    build_datamodule(cfg) -> data.AudioDataModule   batches {"x0", "cond": {"noisy"}, waves, length}
    build_network(cfg)    -> network.NETWORKS       a MelUNet: net(x_in, c_noise, noisy=...) ->
                                                    [B, 1, M, T] (StoRM: a PredictorDenoiser pair)
    process(cfg)          -> process.Enhancer(process.OBJECTIVES[model.objective]): MelDiffusion
                                                    ("diffusion"), the one-step RegressionProcess
                                                    ("regression") or StoRM's
                                                    StochasticRegeneration ("storm")
    evaluate(batch, samples, cfg)     SI-SDR, PESQ-WB, ESTOI, log-mel L1 of the enhanced speech, of
                                      the noisy input and of spectral subtraction, side by side
                                      (metrics.score_systems)
    write_samples(samples, out, cfg)  noisy / enhanced / clean WAVs, spectrograms.png, metrics.json
                                      (outputs.py)
    finetune_target(cfg)              siren noise on a tenth of the training speech,
                                      `benchmark --finetune`'s target
    read_damaged / write_repaired     `toolkit inpaint`: packet-loss concealment of a WAV, the lost
                                      time ranges given by --span (concealment.py)
    benchmark(cfg)                    see benchmark.py
    repair_benchmark(cfg)             `--repair`: concealment against interpolation (repair.py)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import soundfile as sf
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from diffusekit.core.errors import ConfigError
from diffusekit.domains.audio.features import reconstruct
from diffusekit.domains.audio.metrics import score_systems, summarise
from diffusekit.domains.audio.network import NETWORKS
from diffusekit.domains.audio.outputs import spectrogram_figure, written_clips
from diffusekit.domains.audio.process import OBJECTIVES, Enhanced, Enhancer, mel_of
from diffusekit.plugins import Damaged, Domain, Region


# the customisation target's noise kind (noise.NOISES), absent from the default data.noise_kinds
TARGET_NOISE = "siren"


class AudioDomain(Domain):
    """Speech denoising on log-mel spectrograms, conditioned on the noisy log-mel."""

    name = "audio"
    description = "speech denoising: conditional diffusion over log-mel spectrograms"
    # LoRA's default targets (adapter.targets): the UNets' block convolutions
    adapter_targets = ("*.conv1", "*.conv2")
    control_blocks = ("down.*.*", "mid")  # a ControlNet joins the UNets' encoders and middles
    inpaint_regions = ("span",)  # toolkit inpaint: the lost time ranges, in seconds

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
        return summarise(score_systems(batch, mel_of(samples), cfg))

    def write_samples(self, samples: Enhanced, out_dir: Path, cfg: DictConfig) -> list[Path]:
        """For every clip of the batch (the number asked for: `toolkit sample -n`, sample.n,
        sample.val_n), or the first `outputs.write_n` when that is set: NN-noisy.wav,
        NN-enhanced.wav, NN-clean.wav; spectrograms.png (rows: the first 4 clips; columns:
        noisy | enhanced | clean); metrics.json (the batch's metrics, see `evaluate`). A cap
        that leaves clips unwritten is reported in one line on stderr."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        batch, mel = samples.batch, mel_of(samples)
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

    def finetune_target(self, cfg: DictConfig) -> dict[str, Any]:
        """The customisation benchmark's target: the base's speech under a noise it never heard,
        `siren` (noise.py: narrow-band, its pitch sweeping through the speech band), on the first
        tenth of the base's training utterances (`data.train_limit`: the same corpus folder, so
        nothing is synthesised or overwritten, and the test split keeps its held-out sentences,
        voices and `data.test_snr`). Scored by SI-SDR (dB) of the enhanced test clips."""
        from diffusekit.domains.audio.data import train_limit  # Lightning: when needed

        d = cfg.data
        if d.folder:
            raise ConfigError(f"data.folder={d.folder}: the audio customisation target mixes a new "
                              "noise kind into the synthetic corpus; a folder's pairs bring "
                              "their own noise")
        if TARGET_NOISE in d.noise_kinds:
            raise ConfigError(f"data.noise_kinds holds {TARGET_NOISE!r}, the customisation "
                              "target's noise: the base would already know it")
        limit = min(int(d.n_train), train_limit(d) or int(d.n_train)) // 10  # at most 10%
        if limit < 1:
            raise ConfigError(f"data.n_train={d.n_train}: too few training utterances for a "
                              "target of at most a tenth of them (at least 10 needed)")
        return {"overrides": [f"data.noise_kinds=[{TARGET_NOISE}]", f"data.train_limit={limit}"],
                "metric": "si_sdr", "higher_is_better": True}

    def benchmark(self, cfg: DictConfig) -> dict[str, Any]:
        from diffusekit.domains.audio.benchmark import run_benchmark

        return run_benchmark(self, cfg)

    def read_damaged(self, path: Path, region: Region, cfg: DictConfig) -> Damaged:
        """A WAV and its lost time ranges: the condition is the gapped log-mel, the known part
        its frames that no gap touches (concealment.py)."""
        from diffusekit.domains.audio.concealment import read_damaged

        return read_damaged(path, region, cfg)

    def repair_mean(self) -> Callable[[list[Enhanced]], Enhanced]:
        """`toolkit inpaint --average K`: the K repaired log-mels averaged (then turned into audio
        once, as one repair is)."""
        return lambda draws: Enhanced(torch.stack([mel_of(d) for d in draws]).mean(0),
                                      getattr(draws[0], "batch", {}))

    def write_repaired(self, samples: Enhanced, damaged: Damaged, out_dir: Path,
                       cfg: DictConfig) -> list[Path]:
        """<name>-repaired[-k].wav (received samples as read, the gaps synthesised) and
        <name>-spectrograms.png (concealment.py)."""
        from diffusekit.domains.audio.concealment import write_repaired

        return write_repaired(samples, damaged, out_dir, cfg)

    def repair_benchmark(self, cfg: DictConfig) -> dict[str, Any]:
        """Gaps of 20-200 ms in held-out speech: log-mel L1 and SI-SDR on the gaps against
        linear interpolation and zeros (repair.py)."""
        from diffusekit.domains.audio.repair import run_repair_benchmark

        return run_repair_benchmark(self, cfg)
