"""Quality metrics of enhanced speech (waveforms at 16 kHz, float tensors or arrays):

    si_sdr(estimate, reference)   scale-invariant SDR in dB (Le Roux et al. 2019, "SDR - half-baked
                                  or well done?"):  a = <s_hat, s> / ||s||^2,
                                  SI-SDR = 10 log10(||a s||^2 / ||a s - s_hat||^2), both zero-mean
    pesq_wb(estimate, reference)  PESQ wide-band MOS-LQO (ITU-T P.862.2) via the `pesq` package
    estoi(estimate, reference)    extended STOI (Jensen & Taal 2016) via `pystoi`, extended=True
    logmel_l1(x_hat, x)           mean |x_hat - x| of normalised log-mels (feature-domain error)

`score_all` computes them all for a batch; PESQ that cannot score a clip (no utterance detected)
gives NaN for that clip, and averages skip NaNs. `score_systems` scores the model's estimate, the
noisy input and spectral subtraction side by side; `summarise` averages them into the domain's
metrics (model's under their names, the others prefixed noisy_ / baseline_, and si_sdr_gain).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor

from diffusekit.domains.audio.baselines import spectral_subtraction
from diffusekit.domains.audio.features import MelFeatures, reconstruct


def si_sdr(estimate: Tensor, reference: Tensor, eps: float = 1e-10) -> Tensor:
    """SI-SDR in dB of estimates [..., L] against references [..., L] -> [...].
    Both are made zero-mean; a = <s_hat, s> / ||s||^2; 10 log10(||a s||^2 / ||a s - s_hat||^2)."""
    est = estimate.double() - estimate.double().mean(dim=-1, keepdim=True)
    ref = reference.double() - reference.double().mean(dim=-1, keepdim=True)
    a = (est * ref).sum(-1, keepdim=True) / ((ref * ref).sum(-1, keepdim=True) + eps)
    target = a * ref
    error = target - est
    return 10.0 * torch.log10(((target ** 2).sum(-1) + eps) / ((error ** 2).sum(-1) + eps))


def pesq_wb(estimate: np.ndarray, reference: np.ndarray, sample_rate: int = 16000) -> float:
    """Wide-band PESQ (P.862.2) of one clip; NaN when PESQ cannot score it."""
    from pesq import pesq

    try:
        with np.errstate(invalid="ignore", divide="ignore"):  # an all-zero clip divides by 0
            return float(pesq(sample_rate, np.asarray(reference, dtype=np.float64),
                              np.asarray(estimate, dtype=np.float64), "wb"))
    except Exception:  # pesq raises NoUtterancesError / BufferTooShortError for silent clips
        return math.nan


def estoi(estimate: np.ndarray, reference: np.ndarray, sample_rate: int = 16000) -> float:
    """Extended STOI in [0, 1] of one clip (pystoi, extended=True)."""
    from pystoi import stoi

    return float(stoi(np.asarray(reference, dtype=np.float64),
                      np.asarray(estimate, dtype=np.float64), sample_rate, extended=True))


def logmel_l1(x_hat: Tensor, x: Tensor) -> Tensor:
    """Mean absolute error of normalised log-mels [B, ..., M, T] -> [B]."""
    return (x_hat - x).abs().flatten(1).mean(dim=1)


def score_all(estimate: Tensor, reference: Tensor, sample_rate: int = 16000,
              x_hat: Tensor | None = None, x: Tensor | None = None,
              lengths: Tensor | None = None) -> dict[str, list[float]]:
    """Per-clip metrics of a batch: estimates and references [B, L] (first `lengths[b]` samples
    of clip b count when given); log-mel L1 when the features are given. {name: [B] floats}."""
    out: dict[str, list[float]] = {"si_sdr": [], "pesq": [], "estoi": []}
    for b in range(estimate.shape[0]):
        n = int(lengths[b]) if lengths is not None else estimate.shape[-1]
        est, ref = estimate[b, :n].detach().cpu(), reference[b, :n].detach().cpu()
        out["si_sdr"].append(float(si_sdr(est, ref)))
        out["pesq"].append(pesq_wb(est.numpy(), ref.numpy(), sample_rate))
        out["estoi"].append(estoi(est.numpy(), ref.numpy(), sample_rate))
    if x_hat is not None and x is not None:
        out["logmel_l1"] = [float(v) for v in logmel_l1(x_hat.detach().cpu(), x.detach().cpu())]
    return out


def nanmean(values: list[float]) -> float:
    """Mean of the finite values (NaN when none is finite)."""
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


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
