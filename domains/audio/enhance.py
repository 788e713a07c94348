"""Enhance whole recordings of any length with a trained run: `toolkit audio-enhance`.

    toolkit audio-enhance --run runs/audio/<ts> noisy.wav [more.wav ...] --out enhanced/

Each file is read with soundfile (any rate, mixed to mono, resampled), turned into a log-mel,
denoised in overlapping chunks of `reconstruct.chunk_frames` frames (cross-faded over
`reconstruct.overlap_frames`, see `features.enhance_in_chunks`) with the run's EMA weights and
sampler, and written back as a waveform by the configured reconstruction (mask by default).
Files that cannot be read are skipped and counted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from omegaconf import DictConfig
from torch import Tensor

from diffusekit.core.errors import DataError
from diffusekit.domains.audio.corpus import load_wav
from diffusekit.domains.audio.features import MelFeatures, enhance_in_chunks


def enhance_waveform(network: torch.nn.Module, process, cfg: DictConfig, wave: np.ndarray, *,
                     sampler: str | None = None, steps: int | None = None, seed: int = 0,
                     ) -> np.ndarray:
    """The enhanced version of one noisy waveform [L] (float32, at features.sample_rate)."""
    from diffusekit.domains.audio.domain import reconstruct

    f = MelFeatures.from_config(cfg.features)
    noisy = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    x_noisy = f.encode(noisy)[None]  # [1, M, T]
    generator = torch.Generator().manual_seed(seed)

    def denoise(chunks: Tensor) -> Tensor:  # [N, 1, M, chunk] -> same
        batch = {"x0": torch.zeros_like(chunks), "cond": {"noisy": chunks}}
        with torch.no_grad():
            out = process.generate(network, batch, sampler=sampler, steps=steps,
                                   generator=generator)
        return getattr(out, "mel", out)

    r = cfg.reconstruct
    x_hat = enhance_in_chunks(denoise, x_noisy, int(r.chunk_frames), int(r.overlap_frames))
    return reconstruct(cfg, x_hat[None], noisy[None])[0].numpy()


def enhance_files(run_path: str, inputs: list[str], out_dir: str, sampler: str | None,
                  steps: int | None) -> tuple[list[Path], int]:
    """Enhance every readable file of `inputs` into `out_dir` (same names); returns the written
    paths and how many inputs were skipped."""
    from diffusekit.core.training.inference import load_run
    from diffusekit.core.training.runs import RunDir
    from diffusekit.domains.audio.domain import AudioDomain

    run = RunDir.open(run_path)
    network, process, cfg = load_run(AudioDomain(), run)
    sr = int(cfg.features.sample_rate)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written, skipped = [], 0
    for name in inputs:
        try:
            wave = load_wav(Path(name), sr)
        except DataError as exc:
            print(f"skipped: {exc}")
            skipped += 1
            continue
        enhanced = enhance_waveform(network, process, cfg, wave, sampler=sampler,
                                    steps=steps or int(cfg.sample.steps))
        target = out / (Path(name).stem + ".wav")
        sf.write(str(target), enhanced, sr, subtype="FLOAT")
        written.append(target)
    if not written:
        raise DataError(f"none of the {len(inputs)} input file(s) could be read")
    return written, skipped


def register(cli) -> None:
    """Add `toolkit audio-enhance` to the command group `cli`."""
    import click

    @cli.command("audio-enhance")
    @click.option("--run", "run_path", required=True, help="A run folder of the audio domain.")
    @click.option("--out", "out_dir", default="enhanced", show_default=True,
                  help="Folder for the enhanced files.")
    @click.option("--sampler", default=None, help="Sampler (default: the run's).")
    @click.option("--steps", type=int, default=None, help="Sampler steps (default: the run's).")
    @click.argument("inputs", nargs=-1, required=True)
    def audio_enhance(run_path, out_dir, sampler, steps, inputs):
        """Denoise speech recordings of any length with a trained audio run."""
        written, skipped = enhance_files(run_path, list(inputs), out_dir, sampler, steps)
        note = f" ({skipped} unreadable file(s) skipped)" if skipped else ""
        click.echo(f"enhanced {len(written)} file(s) into {out_dir}{note}")
