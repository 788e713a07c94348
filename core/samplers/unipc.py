"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
Diffusion Models"), data prediction, B(h) = e^{h} - 1 ("bh2"), in lambda = log(alpha / sigma).

Notation (data prediction): hh = -h with h = lambda_s - lambda_t, and the phi-sequence of
Zhao et al. 2023, eq. (4)-(6) / Alg. 3-4,

    g_1 = (e^{hh} - 1) / hh - 1,   g_{k+1} = g_k / hh - 1 / (k + 1)!,   b_k = g_k k! / B(h),

with B(h) = e^{hh} - 1. With m_0 the newest denoiser output and D1_k = (m_k - m_0) / r_k the
scaled differences to older outputs (r_k = (lambda_{-k} - lambda_0) / h < 0):

    UniP-p (predictor, Alg. 3):  x_s = (sigma_s / sigma_t) x_t - alpha_s (e^{hh} - 1) m_0
                                       - alpha_s B(h) sum_{k<p} rho^p_k D1_k,
                                 R_{p-1} rho^p = b_{1..p-1}  (rho^p = 1/2 for p = 2);
    UniC-p (corrector, Alg. 4):  the same step redone once D(x_s, s) =: m_s is known (it is
                                 needed by the next step anyway, so no extra NFE):
                                 ... - alpha_s B(h) (sum_{k<p} rho^c_k D1_k + rho^c_p (m_s - m_0)),
                                 R_p rho^c = b_{1..p}  (rho^c = 1/2 for p = 1),

where R_p[j, k] = r_k^j (j = 0..p-1) with r_p = 1. The corrected state replaces x_s; the model
output m_s stays the one evaluated at the uncorrected state (as in the paper). There is no
correction after the final step to t = 0 (no evaluation there). All weights are computed before
the loop from the grid alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from diffusekit.core.samplers.dpmsolver import step_orders
from diffusekit.core.samplers.grid_coefficients import (
    Callback,
    Grid,
    finite_or_zero,
    step_scalars,
)
from diffusekit.core.schedules import Schedule
from diffusekit.core.spaces import Euclidean


def _b_vector(h: float, order: int) -> list[float]:
    """b_1..b_order of UniPC-bh2 for a step of length h in lambda (data prediction)."""
    hh = -h
    b_h = math.expm1(hh)  # B(h) = e^{hh} - 1, "bh2"
    g = math.expm1(hh) / hh - 1.0
    out, factorial = [], 1
    for k in range(1, order + 1):
        out.append(g * factorial / b_h)
        factorial *= k + 1
        g = g / hh - 1.0 / factorial
    return out


def _rhos(rks: list[float], b: list[float]) -> list[float]:
    """Solve R rho = b with R[j, k] = rks[k]^j (a small Vandermonde system)."""
    size = len(rks)
    R = torch.tensor([[r**j for r in rks] for j in range(size)], dtype=torch.float64)
    return torch.linalg.solve(R, torch.tensor(b, dtype=torch.float64)).tolist()


def unipc_coefficients(grid: Grid, max_order: int) -> dict[str, Any]:
    """Per-step weights (Python floats in [n]-lists, then packed by the caller) of UniPC-bh2:

    predictor  x_{i+1} = p_x x_i + p_0 D_i + p_1 D_{i-1} + p_2 D_{i-2},
    corrector  x_i^c  = c_x x_{i-1}^c + c_new D_i + c_0 D_{i-1} + c_1 D_{i-2} + c_2 D_{i-3},

    plus the predictor orders and the steps that apply the corrector (i > 0; not right after a
    zero-SNR start, whose step is infinitely long in lambda). Grid preparation only (host floats).
    """
    lam, alpha, sigma = grid.lam.tolist(), grid.alpha.tolist(), grid.sigma.tolist()
    n, orders = grid.n, step_orders(grid, max_order)
    pred = {k: [0.0] * n for k in ("x", "0", "1", "2")}
    corr = {k: [0.0] * n for k in ("x", "new", "0", "1", "2")}
    use_corrector = [i > 0 and not (grid.zero_snr_start and i == 1) for i in range(n)]
    for i in range(n):
        # UniP from t_i to t_{i+1} with order p (Alg. 3)
        p, h, a_s = orders[i], lam[i + 1] - lam[i], alpha[i + 1]
        b_h = math.expm1(-h)
        pred["x"][i] = sigma[i + 1] / sigma[i]
        pred["0"][i] = -a_s * b_h  # - alpha_s (e^{hh} - 1) m_0
        if p >= 2:
            rks = [(lam[i - k] - lam[i]) / h for k in range(1, p)]
            rho = [0.5] if p == 2 else _rhos(rks, _b_vector(h, p)[: p - 1])
            for k, (r, rh) in enumerate(zip(rks, rho), start=1):
                pred["0"][i] += a_s * b_h * rh / r  # D1_k = (m_k - m_0) / r_k
                pred[str(k)][i] = -a_s * b_h * rh / r
        if not use_corrector[i]:
            continue
        # UniC redoing step i-1 (t_{i-1} -> t_i, the order its predictor used) with D_i (Alg. 4)
        p, h, a_s = orders[i - 1], lam[i] - lam[i - 1], alpha[i]
        b_h = math.expm1(-h)
        rks = [(lam[i - 1 - k] - lam[i - 1]) / h for k in range(1, p)]
        rho = [0.5] if p == 1 else _rhos(rks + [1.0], _b_vector(h, p))
        corr["x"][i] = sigma[i] / sigma[i - 1]
        corr["new"][i] = -a_s * b_h * rho[-1]  # rho^c_p (m_s - m_0)
        corr["0"][i] = -a_s * b_h + a_s * b_h * rho[-1]
        for k, (r, rh) in enumerate(zip(rks, rho[:-1]), start=1):
            corr["0"][i] += a_s * b_h * rh / r
            corr[str(k)][i] = -a_s * b_h * rh / r  # D_{i-1-k}: history slot k
    return {"orders": orders, "use_corrector": use_corrector, "pred": pred, "corr": corr}


def sample_unipc(
    denoiser: Callable[..., Tensor],
    noise: Tensor,
    ts: Tensor,
    schedule: Schedule,
    *,
    space: Any = Euclidean(),
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    cond: Mapping[str, Any] | None = None,
    order: int = 2,
) -> Tensor:
    """UniPC (Zhao et al. 2023): the UniP-`order` multistep predictor with the UniC corrector,
    B(h) = e^h - 1 (UniPC-B(h), "bh2"), data prediction, steps in lambda = log(alpha / sigma).
    The corrector reuses the next step's evaluation, so n steps cost n NFE; with order p the
    corrected scheme has order p + 1. Orders ramp up from 1 and down to 1 on the final step
    to t = 0. order in {1, 2, 3}. noise: [B, ...]; ts: [n + 1] descending, ts[-1] = 0.
    Returns x0: [B, ...].
    """
    if order not in (1, 2, 3):
        raise ValueError(f"unipc order must be 1, 2 or 3, got {order}")
    cond = dict(cond or {})
    grid = Grid.build(schedule, ts)
    co = unipc_coefficients(grid, order)
    columns = [co["pred"][k] for k in ("x", "0", "1", "2")] + [co["corr"][k] for k in ("x", "new", "0", "1", "2")]
    rows = step_scalars(noise, *(finite_or_zero(torch.tensor(c, dtype=torch.float64)) for c in columns))
    orders, use_corrector = co["orders"], co["use_corrector"]
    times, denoiser = grid.times_for(noise, denoiser)
    x = grid.start_state(noise, space)
    x_last = x
    h1 = h2 = h3 = x  # D_{i-1}, D_{i-2}, D_{i-3}: read only once they exist (weights 0 before)
    for i, (px, p0, p1, p2, cx, cnew, c0, c1, c2) in enumerate(rows):
        denoised = denoiser(x, times[i], **cond)
        if use_corrector[i]:  # UniC: x_i^c = c_x x_{i-1}^c + c_new D_i + c_0 D_{i-1} + ...
            corrected = cx * x_last + cnew * denoised + c0 * h1
            p_prev = orders[i - 1]
            if p_prev >= 2:
                corrected = corrected + c1 * h2
            if p_prev >= 3:
                corrected = corrected + c2 * h3
            x = space.project(corrected)
        x_last = x
        x = px * x + p0 * denoised  # UniP: (sigma_s / sigma_t) x_t - alpha_s (e^{hh} - 1) m_0 ...
        if orders[i] >= 2:
            x = x + p1 * h1  # ... - alpha_s B(h) rho_1 D1_1
        if orders[i] >= 3:
            x = x + p2 * h2  # ... - alpha_s B(h) rho_2 D1_2
        x = space.project(x)
        h3, h2, h1 = h2, h1, denoised
        if callback is not None:
            callback({"i": i, "t": times[i], "t_next": times[i + 1], "x": x, "denoised": denoised})
    return x


__all__ = ["sample_unipc", "unipc_coefficients"]
