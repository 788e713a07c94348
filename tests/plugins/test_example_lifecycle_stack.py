"""The lifecycle stack of docs/architecture.md (shared design: "a LoRA-customised model, steered by
a ControlNet, filling a hole, in 4 steps is a stack of wrappers, not a new class") on the example
plugin's network, built from the engine's public pieces only:

    network -> LoRA (peft, in place) -> Controlled(ControlNet) -> the process's denoiser
            -> DenoiserStudent (a consistency student) -> inpaint(..., consistency sampler, 4 steps)

Each layer is given weights as if trained (the zero-initialised parts nudged), and with its scale
at 0 reproduces the stack without it, bit for bit."""

from __future__ import annotations

import copy

import pytest
import torch

from diffusekit.core import samplers
from diffusekit.core.app.adapters import AdapterSettings, add_lora, resolve_targets, set_scale
from diffusekit.core.app.config import compose
from diffusekit.core.app.distill import student_grid
from diffusekit.core.control import ControlBinding, Controlled, ControlNet, probe_spec, resolve_blocks
from diffusekit.core.distillation import DenoiserStudent
from diffusekit.core.inpainting import Replace, inpaint

B = 16


@pytest.fixture(scope="module")
def parts(example_module):
    """(network with a LoRA adapter, the network without one, a ControlNet trained on the plain
    network, the process)."""
    from diffusekit_example.domain import ShapesDomain

    domain = ShapesDomain()
    cfg = compose(domain.default_config(), domain="example")
    cfg.network.hidden, cfg.network.depth = 32, 2
    torch.manual_seed(0)
    network = domain.build_network(cfg).eval().requires_grad_(False)
    process = domain.process(cfg)
    example = (torch.randn(B, 2), torch.rand(B), {"label": torch.zeros(B, dtype=torch.long)})
    blocks = resolve_blocks(network, ["blocks.*"])
    control = ControlNet(network, probe_spec(network, blocks, (2,), example, width=16))
    plain = copy.deepcopy(network)
    add_lora(network, AdapterSettings("lora", 4, 4.0, 0.0, None),
             resolve_targets(network, ("blocks.*.mlp.0", "blocks.*.mlp.2")), train_only_adapter=False)
    with torch.no_grad():  # as if trained: the zero-initialised parts (LoRA's B, the joins) moved
        moved = [p for n, p in network.named_parameters() if "lora_B" in n]
        moved += [p for p in control.parameters() if p.requires_grad and p.abs().max() == 0]
        assert moved
        for p in moved:
            p.add_(0.3 * torch.randn_like(p))
    return network, plain, control.eval().requires_grad_(False), process


def _repair(network, process, *, lora: float | None, control, control_scale: float = 1.0,
            method=Replace()) -> torch.Tensor:
    """The whole stack: inpaint the second coordinate of B points, 4 consistency steps (lora:
    the adapter's scale; None for a network without one)."""
    if lora is not None:
        set_scale(network, "default", lora)
    steered = network if control is None else Controlled(network, [ControlBinding(control, control_scale)])
    student = DenoiserStudent(process.denoiser(steered), process.schedule)
    known = torch.stack([torch.linspace(-1, 1, B), torch.full((B,), float("nan"))], 1)
    mask = torch.tensor([[True, False]] * B)
    cond = {"label": torch.arange(B) % 2}
    if control is not None:
        cond["hint"] = torch.stack([torch.ones(B), -torch.ones(B)], 1)
    ts = student_grid(process.schedule, 4, "uniform", 1.0)
    with torch.no_grad():
        return inpaint(samplers.get("consistency"), student, torch.randn(B, 2, generator=torch.Generator().manual_seed(1)),
                       ts, process.schedule, known, mask, generator=torch.Generator().manual_seed(2), cond=cond,
                       method=method)


def test_lora_control_student_and_inpainting_stack_and_each_scale_zero_is_the_layer_below(parts):
    network, plain, control, process = parts
    full = _repair(network, process, lora=1.0, control=control)
    assert full.shape == (B, 2) and torch.isfinite(full).all()
    assert torch.equal(full[:, 0], torch.linspace(-1, 1, B))  # the known coordinate, exactly
    no_lora = _repair(network, process, lora=0.0, control=control)
    no_control = _repair(network, process, lora=1.0, control=None)
    # each layer changes the repair ...
    assert not torch.allclose(full, no_lora) and not torch.allclose(full, no_control)
    # ... and at scale 0 is the layer below, bit for bit
    assert torch.equal(_repair(network, process, lora=1.0, control=control, control_scale=0.0), no_control)
    assert torch.equal(_repair(network, process, lora=0.0, control=control, control_scale=0.0),
                       _repair(plain, process, lora=None, control=None))
    assert torch.equal(no_lora, _repair(plain, process, lora=None, control=control))


def test_reconstruction_guidance_differentiates_through_the_whole_stack(parts):
    """Reconstruction guidance takes the gradient of the known part's reconstruction through the
    student, the ControlNet and the LoRA-adapted network (frozen weights, under no_grad): it
    changes the repair, keeps the known coordinate exact, leaves no graph behind, and at weight 0
    is the unguided stack bit for bit."""
    network, _, control, process = parts
    unguided = _repair(network, process, lora=1.0, control=control)
    guided = _repair(network, process, lora=1.0, control=control, method=Replace(reconstruction=3.0))
    assert torch.isfinite(guided).all() and guided.grad_fn is None
    assert torch.equal(guided[:, 0], torch.linspace(-1, 1, B))
    assert not torch.allclose(guided, unguided)
    assert torch.equal(_repair(network, process, lora=1.0, control=control, method=Replace(reconstruction=0.0)),
                       unguided)
