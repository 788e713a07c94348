"""The EGNN denoiser: E(3)-equivariance, translation and permutation behaviour (float64, 1e-5), and
the centre of mass staying zero through sampling with the engine's samplers."""

from __future__ import annotations

import pytest
import torch

from diffusekit.core.process import GaussianDiffusion
from diffusekit.domains.molecules.network import MoleculeEGNN

B, N, F = 3, 7, 6


def _inputs(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random states [B, N, 3 + F] (float64) with 7, 5 and 3 real atoms, padding zero."""
    mask = torch.arange(N)[None, :] < torch.tensor([7, 5, 3])[:, None]
    x = torch.randn(B, N, 3 + F, generator=generator, dtype=torch.float64) * mask[..., None]
    return x, torch.rand(B, generator=generator, dtype=torch.float64), mask


def _orthogonal(generator: torch.Generator, reflect: bool) -> torch.Tensor:
    """A random 3x3 rotation (det +1) or rotation-reflection (det -1), float64."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if (torch.det(q) < 0) != reflect:
        q[:, 0] = -q[:, 0]
    return q


@pytest.fixture(scope="module")
def net() -> MoleculeEGNN:
    torch.manual_seed(0)
    network = MoleculeEGNN(n_features=F, hidden=32, n_layers=3).double().eval()
    # the position head starts near zero (gain 1e-3); make it matter so the test has teeth
    for layer in network.layers:
        torch.nn.init.normal_(layer.phi_x[-1].weight, std=0.3)
    return network


@pytest.mark.parametrize("reflect", [False, True])
def test_positions_equivariant_features_invariant_under_rotations_and_reflections(net, reflect):
    g = torch.Generator().manual_seed(1 + reflect)
    x, t, mask = _inputs(g)
    q = _orthogonal(g, reflect)
    out = net(x, t, node_mask=mask)
    x_rot = torch.cat([x[..., :3] @ q.T, x[..., 3:]], -1)
    out_rot = net(x_rot, t, node_mask=mask)
    assert out[..., :3].abs().max() > 1e-2  # positions really move
    torch.testing.assert_close(out_rot[..., :3], out[..., :3] @ q.T, atol=1e-5, rtol=0)
    torch.testing.assert_close(out_rot[..., 3:], out[..., 3:], atol=1e-5, rtol=0)


def test_outputs_invariant_under_translations(net):
    g = torch.Generator().manual_seed(3)
    x, t, mask = _inputs(g)
    shift = torch.randn(B, 1, 3, generator=g, dtype=torch.float64) * 5.0
    x_moved = torch.cat([(x[..., :3] + shift) * mask[..., None], x[..., 3:]], -1)
    torch.testing.assert_close(net(x_moved, t, node_mask=mask), net(x, t, node_mask=mask),
                               atol=1e-5, rtol=0)


def test_outputs_permute_with_the_atoms_and_padding_is_ignored(net):
    g = torch.Generator().manual_seed(4)
    x, t, mask = _inputs(g)
    perm = torch.randperm(N, generator=g)  # also moves padding slots between real atoms
    out = net(x, t, node_mask=mask)
    torch.testing.assert_close(net(x[:, perm], t, node_mask=mask[:, perm]), out[:, perm],
                               atol=1e-5, rtol=0)
    assert (out[~mask] == 0).all()
    junk = x + 100.0 * (~mask)[..., None]  # garbage in padding slots changes nothing real
    torch.testing.assert_close(net(junk, t, node_mask=mask)[mask], out[mask], atol=1e-5, rtol=0)
    com = (out[..., :3] * mask[..., None]).sum(1)
    torch.testing.assert_close(com, torch.zeros_like(com), atol=1e-10, rtol=0)


@pytest.mark.parametrize("sampler, steps", [("ddpm", 12), ("dpmpp_2m", 6), ("heun", 4)])
def test_centre_of_mass_stays_zero_through_sampling(net, sampler, steps):
    g = torch.Generator().manual_seed(5)
    _, _, mask = _inputs(g)
    seen = []

    def recording_net(x_in, c_noise, node_mask):
        seen.append((x_in[..., :3] * node_mask[..., None]).sum(1).abs().max())
        return net(x_in, c_noise, node_mask=node_mask)

    process = GaussianDiffusion(prediction="eps", space="zero_com")
    batch = {"x0": torch.zeros(B, N, 3 + F, dtype=torch.float64), "mask": mask,
             "cond": {"node_mask": mask}}
    states = []
    out = process.generate(recording_net, batch, sampler=sampler, steps=steps, generator=g,
                           callback=lambda info: states.append(info["x"]))
    assert len(seen) >= steps and len(states) == steps
    assert max(seen) < 1e-10  # every network input lies in the zero-CoM subspace
    for x in states + [out]:
        com = (x[..., :3] * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        assert com.abs().max() < 1e-10
        assert (x[~mask] == 0).all()
    assert out[mask].abs().max() > 0.1
