"""The students a trained model is distilled into (core/distillation.py): `DenoiserStudent`, CM's
skip form around the teacher's own parameterisation, and `GuidanceInput`, LCM's w embedding
added to a named noise-level embedding of any network."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from diffusekit.core import samplers, schedules
from diffusekit.core.distillation import DenoiserStudent, GuidanceInput, consistency_loss
from diffusekit.core.parameterization import Denoiser


class EmbeddingNet(nn.Module):
    """net(x_in [B, 2], c_noise [B], label=None) -> [B, 2] with a noise embedding `embed`."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(1, 16), nn.SiLU(), nn.Linear(16, 16))
        self.body = nn.Sequential(nn.Linear(2 + 16, 32), nn.SiLU(), nn.Linear(32, 2))

    def forward(self, x_in, c_noise, label=None):
        return self.body(torch.cat([x_in, self.embed(c_noise[:, None].float())], 1))


@pytest.mark.parametrize("name", ["vp_cosine", "edm", "flow"])
def test_the_denoiser_student_keeps_the_boundary_and_blends_toward_the_denoiser(name):
    schedule = schedules.get(name)
    student = DenoiserStudent(lambda x, t: torch.full_like(x, 1e30), schedule)
    x = torch.randn(8, 2, dtype=torch.float64)
    t_min = torch.full((8,), student.t_min, dtype=torch.float64)
    alpha = schedule.alpha(t_min)[:, None]
    torch.testing.assert_close(student(x, t_min), x / alpha, rtol=1e-15, atol=0)  # f(x, t_min) = x~
    d = torch.randn(8, 2, dtype=torch.float64)  # at high noise f is the denoiser's estimate
    high = DenoiserStudent(lambda x, t: d, schedule)(x, torch.full((8,), 0.999, dtype=torch.float64))
    c_skip, c_denoised = student.blend(torch.tensor([0.999], dtype=torch.float64))
    torch.testing.assert_close(high, c_skip * x + c_denoised * d)
    assert float(c_denoised) > 0.9


@pytest.mark.parametrize("name", ["vp_cosine", "edm", "flow"])
def test_the_denoiser_student_is_a_convex_blend_so_it_never_overshoots(name):
    """A state on the noiseless path of c (x = alpha c) and a denoiser that returns c: f = c at
    every t (CM's c_out / sd weight would give up to 1.2 c); away from the boundary f is D."""
    schedule = schedules.get(name)
    c = torch.randn(1, 3, dtype=torch.float64)
    student = DenoiserStudent(lambda x, t: c.expand_as(x), schedule)
    t = torch.linspace(0.0, 1.0, 41, dtype=torch.float64)[:-1] * float(schedule.t_max)
    x = schedule.alpha(t)[:, None] * c
    torch.testing.assert_close(student(x, t), c.expand(len(t), -1), rtol=1e-12, atol=1e-12)
    c_skip, c_denoised = student.blend(t)
    torch.testing.assert_close(c_skip * schedule.alpha(t) + c_denoised, torch.ones_like(t))
    s = schedule.sigma(t) / schedule.alpha(t)
    assert bool((c_denoised[s >= 10 * student.s_min] > 0.98).all())  # width s_min: D beyond 10 s_min
    wide = DenoiserStudent(lambda x, t: c.expand_as(x), schedule, boundary_width=0.5)
    at = schedule.t_of_log_snr(-2 * torch.log(torch.tensor([0.16], dtype=torch.float64)))
    assert float(wide.blend(at)[1]) < 0.1  # CM's sd = 0.5: f is mostly x~ (noise included) at s = 0.16
    with pytest.raises(ValueError, match="boundary width"):
        DenoiserStudent(lambda x, t: x, schedule, boundary_width=0.0)


def test_a_denoiser_student_trains_and_samples_like_any_denoiser():
    schedule = schedules.get("vp_cosine")
    net = EmbeddingNet()
    student = DenoiserStudent(Denoiser(net, schedule, "v"), schedule)
    teacher = Denoiser(copy.deepcopy(net).requires_grad_(False), schedule, "v")
    x0 = torch.randn(32, 2)
    loss = consistency_loss(student, None, teacher, x0, schedule, n_steps=6, generator=torch.Generator().manual_seed(0))
    loss.mean().backward()
    assert loss.shape == (32,) and all(p.grad is not None for p in net.parameters())
    with torch.no_grad():
        out = samplers.get("consistency")(student, torch.randn(4, 2), schedules.time_grid(schedule, 2), schedule)
    assert out.shape == (4, 2) and torch.isfinite(out).all()


def test_the_guidance_input_starts_as_the_network_for_every_w_and_then_follows_w():
    net = EmbeddingNet()
    wrapped = GuidanceInput(copy.deepcopy(net), "embed")
    x, c = torch.randn(5, 2), torch.rand(5)
    for w in (None, 0.0, 3.5, torch.linspace(0, 4, 5)):
        torch.testing.assert_close(wrapped(x, c, guidance=w), net(x, c), rtol=0, atol=0)
    nn.init.normal_(wrapped.guidance[-1].weight)
    a, b = wrapped(x, c, guidance=1.0), wrapped(x, c, guidance=torch.full((5,), 3.0))
    assert (a - b).abs().max() > 1e-4 and torch.equal(wrapped(x, c), net(x, c))  # None: no embedding
    assert [k for k in wrapped.state_dict() if k.startswith("net.")] == [f"net.{k}" for k in net.state_dict()]
    copied = copy.deepcopy(wrapped)  # the EMA copy: its hook reads its own w and its own embedding
    nn.init.zeros_(copied.guidance[-1].weight)
    nn.init.zeros_(copied.guidance[-1].bias)
    torch.testing.assert_close(copied(x, c, guidance=1.0), net(x, c))
    torch.testing.assert_close(wrapped(x, c, guidance=1.0), a)


def test_the_guidance_input_needs_a_module_with_a_linear_layer():
    with pytest.raises(ValueError, match="no module 'missing'"):
        GuidanceInput(EmbeddingNet(), "missing")
    with pytest.raises(ValueError, match="no Linear layer"):
        GuidanceInput(EmbeddingNet(), "embed.1")
