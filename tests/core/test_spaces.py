"""Noise spaces: masks respected, ZeroCoM centred and rotation-equivariant."""

import torch

from diffusekit.core.spaces import Euclidean, Masked, ZeroCoM


def _mask():
    m = torch.ones(3, 6)
    m[1, 4:] = 0
    m[2, 2:] = 0
    return m


def test_euclidean_is_plain_gaussian():
    x = torch.zeros(20000, 2)
    n = Euclidean().randn_like(x, torch.Generator().manual_seed(0))
    assert abs(n.mean().item()) < 0.02 and abs(n.std().item() - 1) < 0.02
    assert Euclidean().project(n) is n
    assert Euclidean().n_dof(x)[0].item() == 2


def test_same_generator_same_noise():
    x = torch.zeros(4, 5)
    a = Euclidean().randn_like(x, torch.Generator().manual_seed(3))
    b = Euclidean().randn_like(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_masked_zeroes_padding():
    m = _mask()
    space = Masked(m)
    n = space.randn_like(torch.zeros(3, 6, 4))
    assert torch.all(n[1, 4:] == 0) and torch.all(n[2, 2:] == 0) and torch.all(n[0] != 0)
    assert torch.equal(space.n_dof(n), torch.tensor([24.0, 16.0, 8.0]))


def test_zero_com_noise_is_centred_and_padding_zero():
    m = _mask()
    space = ZeroCoM(m)
    x = space.randn_like(torch.zeros(3, 6, 3 + 5), torch.Generator().manual_seed(0))
    assert space.centre_of_mass(x).abs().max() < 1e-6
    assert torch.all(x[1, 4:] == 0) and torch.all(x[2, 2:] == 0)
    # features are not centred
    assert (x[..., 3:] * m[..., None]).sum(1).abs().max() > 1e-3
    assert torch.equal(space.n_dof(x), torch.tensor([5 * 3 + 6 * 5, 3 * 3 + 4 * 5, 1 * 3 + 2 * 5.0]))


def test_zero_com_project_is_idempotent_and_translation_invariant():
    m = _mask()
    space = ZeroCoM(m)
    x = torch.randn(3, 6, 7)
    p = space.project(x)
    assert torch.allclose(space.project(p), p, atol=1e-6)
    shifted = x.clone()
    shifted[..., :3] += torch.tensor([1.0, -2.0, 3.0])
    assert torch.allclose(space.project(shifted), p, atol=1e-5)


def test_zero_com_commutes_with_rotation():
    m = _mask()
    space = ZeroCoM(m)
    q, _ = torch.linalg.qr(torch.randn(3, 3))
    x = torch.randn(3, 6, 3)
    assert torch.allclose(space.project(x @ q.T), space.project(x) @ q.T, atol=1e-5)
