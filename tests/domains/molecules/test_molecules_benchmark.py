"""The benchmark's pieces: molecule sizes from the training histogram and generation by size."""

from __future__ import annotations

import numpy as np
import torch

from diffusekit.core.process import GaussianDiffusion
from diffusekit.domains.molecules.benchmark import draw_sizes
from diffusekit.domains.molecules.domain import MoleculeDomain
from diffusekit.domains.molecules.network import MoleculeEGNN


def test_sizes_follow_the_histogram_sorted():
    histogram = np.zeros(30)
    histogram[[5, 19]] = [1, 3]
    sizes = draw_sizes(histogram, 4000, seed=0)
    assert sizes.tolist() == sorted(sizes.tolist()) and set(sizes.tolist()) == {5, 19}
    assert abs((sizes == 19).double().mean().item() - 0.75) < 0.03
    assert torch.equal(sizes, draw_sizes(histogram, 4000, seed=0))


def test_generate_sized_returns_molecules_of_the_requested_sizes():
    torch.manual_seed(0)
    network = MoleculeEGNN(hidden=16, n_layers=2).eval()
    sizes = torch.tensor([3, 5, 9])
    structures = MoleculeDomain.generate_sized(
        network, GaussianDiffusion(prediction="eps", space="zero_com"), sizes, sampler="ddpm",
        steps=5, generator=torch.Generator().manual_seed(0))
    assert [s.n_atoms for s in structures] == [3, 5, 9]
    for s in structures:
        assert set(s.elements) <= {"H", "C", "N", "O", "F"}
        np.testing.assert_allclose(s.positions.mean(0), 0.0, atol=1e-5)
