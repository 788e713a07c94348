"""The EGNN denoiser (Satorras, Hoogeboom & Welling 2021, "E(n) Equivariant Graph Neural
Networks"), as EDM uses it (Hoogeboom et al. 2022, Sec. 3.3), over the fully connected graph of
each molecule.

The graph is dense: a batch is [B, N] atoms with a node mask, and every pair of real, distinct
atoms is an edge (edge mask m_i m_j (1 - delta_ij)); no radius graph, so no pyg-lib. One layer:

    m_ij  = phi_e(h_i, h_j, ||x_i - x_j||^2, a_ij)                 (EGNN eq. 3; a_ij: the input's
                                                                    squared distance, EDM)
    e_ij  = sigmoid(phi_inf(m_ij))                                  (EGNN Sec. 3.3, edge gating)
    x_i'  = x_i + sum_j (x_i - x_j) / (||x_i - x_j|| + 1)
                      * r tanh(phi_x(m_ij)) / Z                      (EGNN eq. 4; EDM's normalised
                                                                    difference, range r = 15)
    h_i'  = h_i + phi_h(h_i, sum_j e_ij m_ij / Z)                   (EGNN eqs. 5-6, residual)

with Z the aggregation normaliser (EDM: 1, a plain sum). Distances are invariant and differences
equivariant under rotations and reflections, and only differences move positions, so positions
are E(3)-equivariant, features invariant, and everything permutation-equivariant. The network
predicts eps: for positions eps_x = x_L - x_0 with its centre of mass removed (EDM: the output
lives in the zero-CoM subspace, translation invariant), for features a linear read-out of h_L.
The noise level c_noise (t in [0, 1]) is an extra input feature of every atom, as in EDM.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _mlp(n_in: int, hidden: int, n_out: int, act_last: bool = True) -> nn.Sequential:
    layers = [nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, n_out)]
    return nn.Sequential(*layers, nn.SiLU()) if act_last else nn.Sequential(*layers)


def remove_mean(x: Tensor, mask: Tensor) -> Tensor:
    """x [B, N, D] minus its mean over each molecule's real atoms (mask [B, N]); padding 0."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x - (x * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)) * m


class EGNNLayer(nn.Module):
    """One equivariant message-passing layer on dense, fully connected molecules (see module)."""

    def __init__(self, hidden: int, coords_range: float = 15.0, norm_factor: float = 1.0) -> None:
        super().__init__()
        self.edge_in = nn.Linear(2 * hidden + 2, hidden)  # phi_e's first layer, applied split
        self.phi_e = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.phi_inf = nn.Sequential(nn.Linear(hidden, 1), nn.Sigmoid())
        self.phi_h = _mlp(2 * hidden, hidden, hidden, act_last=False)
        last = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=1e-3)  # start near the identity map (EGNN code)
        self.phi_x = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), last)
        self.coords_range, self.norm_factor = coords_range, norm_factor

    def forward(self, h: Tensor, x: Tensor, edge_mask: Tensor, d0: Tensor) -> tuple[Tensor, Tensor]:
        """h [B, N, H], x [B, N, 3], edge_mask [B, N, N, 1], d0 [B, N, N, 1] -> (h', x')."""
        hidden = h.shape[-1]
        diff = x[:, :, None, :] - x[:, None, :, :]                     # [B, N, N, 3] x_i - x_j
        d2 = diff.pow(2).sum(-1, keepdim=True)                          # [B, N, N, 1]
        # eq. 3; the first linear layer of phi_e on [h_i, h_j, d2, a_ij] is W_i h_i + W_j h_j +
        # w_d d2 + w_a a_ij + b: computed per atom, then broadcast over pairs (the same map,
        # N times fewer multiplications than on the concatenated [B, N, N, 2H + 2] tensor)
        w, b = self.edge_in.weight, self.edge_in.bias
        hi, hj = h @ w[:, :hidden].T, h @ w[:, hidden: 2 * hidden].T
        pre = hi[:, :, None, :] + hj[:, None, :, :] + d2 * w[:, 2 * hidden] \
            + d0 * w[:, 2 * hidden + 1] + b
        m = self.phi_e(pre) * edge_mask
        # eq. 4 (normalised differences, bounded step r tanh(.))
        step = self.coords_range * torch.tanh(self.phi_x(m))
        x = x + (diff / (d2.clamp(min=0).add(1e-8).sqrt() + 1.0) * step * edge_mask).sum(2) \
            / self.norm_factor
        agg = (self.phi_inf(m) * m).sum(2) / self.norm_factor          # gated sum, eq. 5
        h = h + self.phi_h(torch.cat([h, agg], -1))                     # eq. 6 (residual)
        return h, x


class MoleculeEGNN(nn.Module):
    """net(x_in [B, N, 3 + F], c_noise [B] or [], node_mask [B, N]) -> eps_hat [B, N, 3 + F].

    n_features: F (one-hot types + charge); hidden: width; n_layers: EGNN layers;
    coords_range / norm_factor: as in `EGNNLayer`.
    """

    def __init__(self, n_features: int = 6, hidden: int = 128, n_layers: int = 6,
                 coords_range: float = 15.0, norm_factor: float = 1.0) -> None:
        super().__init__()
        self.n_features = n_features
        self.embed = nn.Linear(n_features + 1, hidden)
        self.layers = nn.ModuleList(EGNNLayer(hidden, coords_range, norm_factor)
                                    for _ in range(n_layers))
        self.readout = nn.Linear(hidden, n_features)

    def forward(self, x_in: Tensor, c_noise: Tensor, node_mask: Tensor) -> Tensor:
        b, n, _ = x_in.shape
        mask = node_mask.to(x_in.dtype)
        m = mask.unsqueeze(-1)                                          # [B, N, 1]
        edge_mask = (m[:, :, None, :] * m[:, None, :, :]
                     * (1 - torch.eye(n, dtype=x_in.dtype, device=x_in.device))[None, :, :, None])
        pos0 = x_in[..., :3] * m
        t = torch.as_tensor(c_noise, dtype=x_in.dtype, device=x_in.device).reshape(-1)
        t = t.expand(b) if t.numel() == 1 else t
        h = self.embed(torch.cat([x_in[..., 3:], t[:, None, None].expand(b, n, 1)], -1)) * m
        d0 = (pos0[:, :, None, :] - pos0[:, None, :, :]).pow(2).sum(-1, keepdim=True)
        x = pos0
        for layer in self.layers:
            h, x = layer(h, x, edge_mask, d0)
            h = h * m
        eps_pos = remove_mean(x - pos0, node_mask)                      # zero-CoM output (EDM)
        eps_feat = self.readout(h) * m
        return torch.cat([eps_pos, eps_feat], -1)
