"""Enhance whole recordings of any length with a trained run (the work behind the command
`toolkit audio-enhance`, which commands.py adds):

    toolkit audio-enhance --run runs/audio/<ts> noisy.wav [more.wav ...] --out enhanced/

Each file is read with soundfile (any rate; several channels are mixed down to mono), resampled
to `features.sample_rate`, turned into a log-mel and denoised in overlapping chunks of
`reconstruct.chunk_frames` frames (cross-faded over `reconstruct.overlap_frames`, see
`features.enhance_in_chunks`) with the run's EMA weights and sampler.

Memory: the chunks go through the network `reconstruct.chunk_batch` at a time (default 8;
`--batch-size`), and the STFT analysis and the mask reconstruction run SEGMENT_FRAMES frames
(33 s) at a time (griffin_lim: the whole file at once), so only a file's waveforms and log-mels
grow with its length (about 17 MB per minute). Peak resident memory for a 10-minute file
(/usr/bin/time -v; the default widths, StoRM's two UNets, --steps 1: the steps add none; 2 CPU
threads): 0.97 GB at 16 kHz mono, 1.0 GB at 44.1 kHz stereo; with all 391 chunks in one batch
(the former behaviour, `--batch-size 400`) 7.2 GB. The output does not
depend on the batch size: the sampler's starting noise is drawn chunk after chunk from one
generator (a stochastic sampler's later noise, e.g. ddpm's, does depend on it).

The estimate is written back as a waveform by the configured reconstruction (mask by default),
resampled to the input file's own rate, as a mono 32-bit float WAV of the input's length and
name in the output folder (written to a temporary file first, then renamed).

A file that cannot be enhanced (unreadable, empty, shorter than one STFT window, non-finite
samples, or whose output would overwrite an input or an earlier output) is skipped with one
`warning:` line naming it, and the summary counts the skipped files. The exit status is 0 when at
least one file was enhanced, non-zero (one `error:` line) when none was.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor

from diffusekit.core.errors import ConfigError, DataError, RunDirError
from diffusekit.domains.audio.corpus import load_wav
from diffusekit.domains.audio.features import (MelFeatures, encode_in_segments, enhance_in_chunks,
                                              reconstruct, reconstruct_in_segments)
from diffusekit.domains.audio.torchaudio_cpu import torchaudio

# chunks per network batch when a run's config predates `reconstruct.chunk_batch`
DEFAULT_CHUNK_BATCH = 8
# frames (8 ms each at the defaults) of a segment of the STFT analysis and of the reconstruction
SEGMENT_FRAMES = 4096
# reconstructions whose every frame depends on that frame alone: done a segment at a time
FRAME_LOCAL = ("mask",)


def enhance_waveform(network: torch.nn.Module, process, cfg: DictConfig, wave: np.ndarray, *,
                     sampler: str | None = None, steps: int | None = None, seed: int = 0,
                     batch_size: int = DEFAULT_CHUNK_BATCH) -> np.ndarray:
    """The enhanced version of one noisy waveform [L] (float32, at features.sample_rate); its
    chunks go through the network `batch_size` at a time. `DataError` for a waveform shorter
    than one STFT window (n_fft samples)."""
    f = MelFeatures.from_config(cfg.features)
    if len(wave) < f.n_fft:  # the centred STFT's reflection padding needs more samples
        raise DataError(f"{len(wave) / f.sample_rate:.3f} s is shorter than one STFT window "
                        f"({f.n_fft / f.sample_rate * 1000:.0f} ms)")
    noisy = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    x_noisy = encode_in_segments(f, noisy, SEGMENT_FRAMES)[None]  # [1, M, T]
    generator = torch.Generator().manual_seed(seed)

    def denoise(chunks: Tensor) -> Tensor:  # [N, 1, M, chunk] -> same
        # torch draws a normal tensor of n values (on CPU) as consecutive ones of n1 + n2 when
        # n1 is a multiple of 16: batches of such sizes draw each chunk the same noise whatever
        # the batch size (M x chunk is one already at chunk_frames = 256, the default)
        size = _aligned(batch_size, chunks[0].numel())
        outs = []
        for start in range(0, chunks.shape[0], size):
            part = chunks[start:start + size]
            batch = {"x0": torch.zeros_like(part), "cond": {"noisy": part}}
            with torch.no_grad():
                out = process.generate(network, batch, sampler=sampler, steps=steps,
                                       generator=generator)
            outs.append(getattr(out, "mel", out))
        return torch.cat(outs)

    r = cfg.reconstruct
    x_hat = enhance_in_chunks(denoise, x_noisy, int(r.chunk_frames), int(r.overlap_frames))
    if r.method not in FRAME_LOCAL:
        return reconstruct(cfg, x_hat[None], noisy[None])[0].numpy()
    return reconstruct_in_segments(lambda x, w: reconstruct(cfg, x[None], w[None])[0], x_hat,
                                   noisy, f.hop, f.n_fft, SEGMENT_FRAMES).numpy()


def _aligned(batch_size: int, chunk_values: int) -> int:
    """`batch_size` rounded up so that a batch holds a multiple of 16 values."""
    step = 16 // math.gcd(chunk_values, 16)
    return -(-batch_size // step) * step


def open_run(run_path: str) -> tuple[torch.nn.Module, object, DictConfig]:
    """The network, process and config of an audio run; one-line errors for a folder that is
    not a run, a run of another domain, or a config that does not fit the audio domain."""
    from diffusekit.core.app.training.inference import load_run
    from diffusekit.core.app.training.runs import RunDir
    from diffusekit.domains.audio.domain import AudioDomain

    run = RunDir.open(run_path)
    domain = run.load_config().get("domain")
    if domain != "audio":
        raise RunDirError(f"run {run_path!r} is of domain {domain!r}, not 'audio': "
                          "audio-enhance needs a run trained with --domain audio")
    try:
        network, process, cfg = load_run(AudioDomain(), run)
        MelFeatures.from_config(cfg.features)
        int(cfg.reconstruct.chunk_frames), int(cfg.reconstruct.overlap_frames)
    except (OmegaConfBaseException, ValueError, TypeError) as exc:
        message = " ".join(str(exc).split()).split(" full_key:")[0]
        raise ConfigError(f"run {run_path!r}: its config does not fit the audio domain: "
                          f"{message}") from None
    return network, process, cfg


def enhance_files(run_path: str, inputs: list[str], out_dir: str, sampler: str | None = None,
                  steps: int | None = None, batch_size: int | None = None,
                  ) -> tuple[list[Path], int]:
    """Enhance the files `inputs` into `out_dir` (same stems, .wav, each at its input's rate);
    returns the written paths and how many inputs were skipped (each with a `warning:` line on
    stderr). `DataError` when none could be enhanced; a single input that cannot be enhanced is
    that error itself."""
    if steps is not None and steps < 1:
        raise ConfigError(f"steps must be at least 1, got {steps}")
    if sampler is not None:
        from diffusekit import plugins  # noqa: F401  (plugins' samplers join the registry)
        from diffusekit.core import samplers

        samplers.get(sampler)  # UnknownNameError naming the known samplers
    network, process, cfg = open_run(run_path)
    if batch_size is None:
        batch_size = cfg.reconstruct.get("chunk_batch", DEFAULT_CHUNK_BATCH)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"config key 'reconstruct.chunk_batch' of run {run_path!r} must "
                              f"be a whole number >= 1, got {batch_size!r}")
    elif batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    sr = int(cfg.features.sample_rate)
    out = Path(out_dir)
    sources = {Path(name).resolve() for name in inputs}
    written: list[Path] = []
    skipped = 0
    for name in inputs:
        target = out / (Path(name).stem + ".wav")
        try:
            if target.resolve() in sources:
                raise DataError(f"its output {str(target)!r} would overwrite an input file")
            if target in written:
                raise DataError(f"its output {str(target)!r} is an earlier input's output")
            wave = load_wav(Path(name), sr)
            if not np.isfinite(wave).all():
                raise DataError("it holds non-finite samples (NaN or infinity)")
            info = sf.info(str(name))  # the rate and length the output is written back at
            enhanced = enhance_waveform(network, process, cfg, wave, sampler=sampler,
                                        steps=steps or int(cfg.sample.steps),
                                        batch_size=batch_size)
        except DataError as exc:
            if len(inputs) == 1:
                raise DataError(f"cannot enhance {name}: {exc}") from None
            print(f"warning: skipped {name}: {exc}", file=sys.stderr)
            skipped += 1
            continue
        out.mkdir(parents=True, exist_ok=True)  # only once there is something to write
        write_wav(target, to_rate(enhanced, sr, info.samplerate, info.frames), info.samplerate)
        written.append(target)
    if not written:
        raise DataError(f"none of the {len(inputs)} input files could be enhanced "
                        "(see the warnings above)")
    return written, skipped


def to_rate(wave: np.ndarray, rate: int, target_rate: int, length: int) -> np.ndarray:
    """`wave` resampled from `rate` to `target_rate`, cut or zero-padded to `length` samples
    (the input's own length: resampling there and back may differ by a sample)."""
    if rate != target_rate:
        wave = torchaudio.functional.resample(torch.from_numpy(wave), rate, target_rate).numpy()
    if len(wave) < length:
        wave = np.pad(wave, (0, length - len(wave)))
    return np.ascontiguousarray(wave[:length], dtype=np.float32)


def write_wav(path: Path, wave: np.ndarray, rate: int) -> None:
    """A mono 32-bit float WAV, written beside `path` first and renamed: an interrupted write
    leaves no half-written file under the final name."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        sf.write(str(tmp), wave, rate, subtype="FLOAT", format="WAV")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

