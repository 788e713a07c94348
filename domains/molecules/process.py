"""The molecule domain's diffusion process: how EDM trains and generates 3D molecules.

The process is the engine's `core.process.GaussianDiffusion` built from the `process:` section;
its `space: zero_com` is EDM's ZeroCoM space (Hoogeboom et al. 2022, Sec. 3.2; `core.spaces`):
the positions stay at zero centre of mass over each molecule's real atoms and the padding stays
exactly zero, so any engine sampler draws states [B, N, 3 + F] (positions, then the atom features
of `data.FeatureCodec`) that decode back into molecules.

    process = build_process(cfg)
    structures = generate_sized(network, process, sizes, sampler="ddim", steps=50)
    structures = decode(samples, mask, cfg)          # generated states -> Structures
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import Tensor

from diffusekit.core.layers import parameter_device
from diffusekit.core.process import GaussianDiffusion
from diffusekit.domains.molecules.structures import Structure


def build_process(cfg: DictConfig) -> GaussianDiffusion:
    """The `process:` section as a GaussianDiffusion (space zero_com: EDM's ZeroCoM)."""
    return GaussianDiffusion.from_config(cfg.process)


def atom_mask(samples: Tensor) -> Tensor:
    """[B, N] real atoms of generated states [B, N, 3 + F]: the ZeroCoM space keeps padding
    exactly zero in every channel, while a real atom always has non-zero features."""
    return (samples[..., 3:] != 0).any(-1)


def decode(samples: Tensor, mask: Tensor | None = None, cfg: DictConfig | None = None
           ) -> list[Structure]:
    """Generated states [B, N, 3 + F] -> Structures (types from the one-hot channels, formal
    charges from theirs when `cfg.data` has one)."""
    from diffusekit.domains.molecules.data import FeatureCodec

    codec = FeatureCodec() if cfg is None else FeatureCodec.from_config(cfg.data)
    return codec.decode(samples, atom_mask(samples) if mask is None else mask)


def generate_sized(network: torch.nn.Module, process: GaussianDiffusion, sizes: Tensor,
                   n_features: int | None = None, **options) -> list[Structure]:
    """Molecules with the given numbers of atoms [K]: one batch padded to max(sizes),
    noise in the ZeroCoM space, any engine sampler (options: sampler, steps, generator).
    n_features: F of the states (default: the network's). It runs on the device of the
    network's parameters; the molecules are decoded on the CPU."""
    n = int(sizes.max())
    device = parameter_device(network)
    mask = torch.arange(n, device=device)[None, :] < sizes.to(device)[:, None]
    n_features = int(n_features or getattr(network, "n_features", 6))
    x_like = torch.zeros(len(sizes), n, 3 + n_features, device=device)
    batch = {"x0": x_like, "mask": mask, "cond": {"node_mask": mask}}
    with torch.no_grad():
        samples = process.generate(network, batch, **options)
    return decode(samples.cpu(), mask.cpu())
