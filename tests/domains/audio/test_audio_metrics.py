"""Metric functions against cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import torch

from diffusekit.domains.audio.metrics import (estoi, logmel_l1, nanmean, pesq_wb, score_all,
                                              si_sdr)


def test_si_sdr_hand_cases():
    ref = torch.tensor([1.0, -1.0, 1.0, -1.0])
    noise = torch.tensor([1.0, 1.0, -1.0, -1.0])  # zero mean, orthogonal to ref
    # estimate = ref + 0.5 noise: target power 4, error power 4 * 0.25 = 1 -> 10 log10(4) dB
    assert math.isclose(float(si_sdr(ref + 0.5 * noise, ref)), 10 * math.log10(4.0), abs_tol=1e-6)
    # scale invariance: 3 (ref + 0.5 noise) scores the same
    assert math.isclose(float(si_sdr(3 * (ref + 0.5 * noise), ref)), 10 * math.log10(4.0),
                        abs_tol=1e-6)
    # a DC offset is removed first
    assert math.isclose(float(si_sdr(ref + 0.5 * noise + 7.0, ref)), 10 * math.log10(4.0),
                        abs_tol=1e-6)
    # equal powers: 0 dB; a perfect estimate: very high
    assert abs(float(si_sdr(ref + noise, ref))) < 1e-6
    assert float(si_sdr(2 * ref, ref)) > 80.0
    # batched: [2, L] -> [2]
    both = si_sdr(torch.stack([ref + noise, ref + 0.5 * noise]), torch.stack([ref, ref]))
    assert both.shape == (2,) and torch.allclose(both, torch.tensor([0.0, 10 * math.log10(4.0)],
                                                                    dtype=both.dtype), atol=1e-6)


def test_logmel_l1_hand_case():
    a = torch.zeros(2, 1, 2, 2)
    b = torch.tensor([[[[1.0, -1.0], [0.0, 2.0]]], [[[0.5, 0.5], [0.5, 0.5]]]])
    assert torch.allclose(logmel_l1(a, b), torch.tensor([1.0, 0.5]))


def test_pesq_and_estoi_order_clean_above_noisy(speech):
    rng = np.random.default_rng(0)
    noisy = speech + 0.05 * rng.standard_normal(len(speech)).astype(np.float32)
    assert pesq_wb(speech, speech) > 4.4            # the ceiling of P.862.2 is about 4.64
    assert estoi(speech, speech) > 0.99
    assert 1.0 <= pesq_wb(noisy, speech) < 3.0
    assert estoi(noisy, speech) < 0.9
    # a silent clip cannot be scored by PESQ: NaN, skipped by nanmean
    assert math.isnan(pesq_wb(np.zeros(16000), np.zeros(16000)))
    assert nanmean([1.0, math.nan, 3.0]) == 2.0 and math.isnan(nanmean([math.nan]))


def test_score_all_uses_valid_lengths(speech):
    ref = torch.from_numpy(speech[:32000]).repeat(2, 1)
    est = ref.clone()
    est[1, 24000:] = 1.0  # garbage after the valid part of clip 1 does not count
    out = score_all(est, ref, lengths=torch.tensor([32000, 24000]))
    assert set(out) == {"si_sdr", "pesq", "estoi"}
    assert min(out["si_sdr"]) > 80.0
    assert min(out["estoi"]) > 0.99 and min(out["pesq"]) > 4.4
