"""ControlNet in the engine (core/control.py): the invariants of Zhang, Rao & Agrawala 2023 on
the toy domain's network and on two real domain networks, built small (image LR, audio UNet).

At initialisation the controlled network equals the base exactly; scale 0 reproduces the base's
samples bit for bit; two controls compose; only the control trains; its state round-trips."""

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from diffusekit.core.control import (ControlBinding, Controlled, ControlNet, ControlSpec,
                                     default_blocks, probe_spec, resolve_blocks)
from diffusekit.core.errors import ConfigError, DataError
from diffusekit.core.process import GaussianDiffusion

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from toy_domain import PointNet  # noqa: E402


def _toy():
    torch.manual_seed(0)
    net = PointNet(16).eval().requires_grad_(False)
    x, c = torch.randn(6, 2), torch.rand(6)
    return net, default_blocks(net), (2,), (x, c, {}), torch.sign(torch.randn(6, 2))


def _image():
    from diffusekit.domains.image.network import LRSRNet

    torch.manual_seed(0)
    net = LRSRNet(channels=8, blocks=2, scale=2).eval().requires_grad_(False)
    for p in net.parameters():  # the blocks start as the identity; give them weights
        p.add_(0.1 * torch.randn_like(p))
    x, c = torch.randn(2, 3, 8, 8), torch.rand(2)
    cond = {"upsampled": torch.randn(2, 3, 8, 8)}
    return net, resolve_blocks(net, ["body.*"]), (1, 8, 8), (x, c, cond), torch.rand(2, 1, 8, 8)


def _audio():
    from diffusekit.domains.audio.network import MelUNet

    torch.manual_seed(0)
    net = MelUNet(channels=(8, 16), blocks=1, emb_dim=16).eval().requires_grad_(False)
    x, c = torch.randn(2, 1, 8, 8), torch.rand(2)
    cond = {"noisy": torch.randn(2, 1, 8, 8)}
    blocks = resolve_blocks(net, ["down.*.*", "mid"])
    return net, blocks, (1, 16, 16), (x, c, cond), torch.rand(2, 1, 16, 16)


NETWORKS = {"toy": _toy, "image": _image, "audio": _audio}


def _control(net, blocks, hint_shape, example, seed=1, nudge=0.0):
    torch.manual_seed(seed)
    control = ControlNet(net, probe_spec(net, blocks, hint_shape, example, width=8))
    if nudge:  # as if trained: every zero layer moved
        with torch.no_grad():
            for p in control.parameters():
                if p.requires_grad:
                    p.add_(nudge * torch.randn_like(p))
    return control


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_at_initialisation_the_controlled_network_equals_the_base_exactly(name):
    net, blocks, shape, (x, c, cond), hint = NETWORKS[name]()
    control = _control(net, blocks, shape, (x, c, cond))
    controlled = Controlled(net, [ControlBinding(control, 1.0, "hint")])
    with torch.no_grad():
        residuals = control(x, c, hint, **cond)
        assert set(residuals) == set(blocks)
        assert all(torch.equal(r, torch.zeros_like(r)) for r in residuals.values())
        assert torch.equal(controlled(x, c, hint=hint, **cond), net(x, c, **cond))
    nudged = Controlled(net, [ControlBinding(_control(net, blocks, shape, (x, c, cond),
                                                      nudge=0.1), 1.0)])
    with torch.no_grad():  # a trained control changes the output, through the same contract
        assert not torch.allclose(nudged(x, c, hint=hint, **cond), net(x, c, **cond))


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_the_spec_knows_the_blocks_their_channels_and_the_copy_that_runs(name):
    net, blocks, shape, example, _ = NETWORKS[name]()
    spec = probe_spec(net, blocks, shape, example)
    assert sorted(spec.blocks) == sorted(blocks) and len(spec.channels) == len(blocks)
    assert ControlSpec.from_dict(spec.to_dict()) == spec
    params = [n for n, _ in net.named_parameters()]
    assert spec.copy_params and set(spec.copy_params) < set(params)  # the tail is not copied
    control = ControlNet(net, spec)
    trainable = {f"copy.{n}" for n in spec.copy_params}
    assert {n for n, p in control.named_parameters() if p.requires_grad and
            n.startswith("copy.")} == trainable


def test_the_toy_networks_default_blocks_are_its_hidden_layers():
    net = PointNet(8)
    assert default_blocks(net) == ["net.0", "net.2"]
    assert resolve_blocks(net, ["net.*"]) == ["net.0", "net.1", "net.2", "net.3", "net.4"]
    with pytest.raises(ConfigError, match="'nosuch' matches no module.*net.0"):
        resolve_blocks(net, ["nosuch"])
    with pytest.raises(ConfigError, match="no list of blocks"):
        default_blocks(nn.Linear(2, 2))


def test_scale_zero_reproduces_the_base_samples_bit_for_bit():
    net, blocks, shape, example, hint = _toy()
    control = _control(net, blocks, shape, example, nudge=0.2)
    process = GaussianDiffusion(schedule="vp_cosine", sampler="ddim", steps=6)
    batch = {"x0": torch.zeros(6, 2)}

    def sample(network, **cond):
        generator = torch.Generator().manual_seed(7)
        with torch.no_grad():
            return process.generate(network, {**batch, "cond": cond} if cond else batch,
                                    generator=generator)

    base = sample(net)
    controlled = Controlled(net, [ControlBinding(control, 0.0)])
    assert torch.equal(sample(controlled, hint=hint), base)
    controlled.set_scale(0, 1.0)
    assert not torch.equal(sample(controlled, hint=hint), base)


def test_two_controls_compose_each_with_its_scale():
    net, blocks, shape, (x, c, cond), hint = _toy()
    first = _control(net, blocks, shape, (x, c, cond), seed=1, nudge=0.2)
    second = _control(net, ["net.2"], (3,), (x, c, cond), seed=2, nudge=0.2)
    other_hint = torch.randn(6, 3)

    def out(s1, s2):
        both = Controlled(net, [ControlBinding(first, s1, "hint"),
                                ControlBinding(second, s2, "sketch")])
        with torch.no_grad():
            return both(x, c, hint=hint, sketch=other_hint)

    with torch.no_grad():
        alone = Controlled(net, [ControlBinding(first, 0.7, "hint")])(x, c, hint=hint)
        base = net(x, c)
    assert torch.equal(out(0.7, 0.0), alone)
    assert torch.equal(out(0.0, 0.0), base)
    assert not torch.allclose(out(0.7, 0.5), alone) and not torch.allclose(out(0.7, 0.5), base)
    # at a block that feeds the output linearly the residuals add: control the last layer
    last = [_control(net, ["net.4"], (2,), (x, c, cond), seed=s, nudge=0.3) for s in (3, 4)]
    with torch.no_grad():
        one = [Controlled(net, [ControlBinding(k, s)])(x, c, hint=hint) - base
               for k, s in zip(last, (0.5, 2.0))]
        two = Controlled(net, [ControlBinding(last[0], 0.5), ControlBinding(last[1], 2.0)])
        assert torch.allclose(two(x, c, hint=hint) - base, one[0] + one[1], atol=1e-6)


def test_only_the_control_trains_and_the_base_is_frozen():
    net, blocks, shape, example, hint = _toy()
    net.requires_grad_(True)  # Controlled freezes it
    before = {k: v.clone() for k, v in net.state_dict().items()}
    control = _control(net, blocks, shape, example)
    controlled = Controlled(net, [ControlBinding(control, 1.0)])
    assert not any(p.requires_grad for p in net.parameters())
    trainable = [p for p in controlled.parameters() if p.requires_grad]
    assert trainable and all(any(p is q for q in control.parameters()) for p in trainable)
    start = {k: v.clone() for k, v in control.state_dict().items()}
    process = GaussianDiffusion(schedule="vp_cosine")
    optimiser = torch.optim.Adam(trainable, lr=1e-2)
    batch = {"x0": torch.randn(6, 2), "cond": {"hint": hint}}
    for step in range(3):
        optimiser.zero_grad()
        process.training_loss(controlled, batch, torch.Generator().manual_seed(step)).mean() \
            .backward()
        optimiser.step()
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    moved = {k for k, v in control.state_dict().items() if not torch.equal(start[k], v)}
    assert any(k.startswith("projections.") for k in moved)
    assert any(k.startswith("hint_encoder.") for k in moved)
    assert any(k.startswith("copy.net.0") for k in moved)
    assert not any(k.startswith("copy.net.4") for k in moved)  # after the last block: unused


def test_the_trainable_state_round_trips_into_a_fresh_control():
    net, blocks, shape, (x, c, cond), hint = _toy()
    trained = _control(net, blocks, shape, (x, c, cond), nudge=0.2)
    state = trained.trainable_state()
    assert not any(k.startswith("copy.net.4") for k in state)  # small: not the copy's tail
    fresh = ControlNet(net, ControlSpec.from_dict(trained.spec.to_dict()))
    fresh.load_trainable(state)
    with torch.no_grad():
        a = Controlled(net, [ControlBinding(trained)])(x, c, hint=hint)
        b = Controlled(net, [ControlBinding(fresh)])(x, c, hint=hint)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="missing"):
        fresh.load_trainable({k: v for k, v in state.items() if "projections" not in k})


def test_a_hint_of_the_wrong_size_or_channels_or_a_missing_hint_is_a_data_error():
    net, blocks, shape, (x, c, cond), hint = _image()
    controlled = Controlled(net, [ControlBinding(_control(net, blocks, shape, (x, c, cond)))])
    for bad in (torch.rand(2, 3, 8, 8), torch.rand(2, 1, 16, 16), torch.rand(3, 1, 8, 8)):
        with pytest.raises(DataError, match=r"this control takes \[2, 1, 8, 8\]"):
            controlled(x, c, hint=bad, **cond)
    with pytest.raises(DataError, match="keyword 'hint'"):
        controlled(x, c, **cond)
    with torch.no_grad():  # one hint for the whole batch is broadcast
        assert controlled(x, c, hint=hint[:1], **cond).shape == x.shape


def test_blocks_that_return_neither_a_tensor_nor_a_tuple_are_refused():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])

        def forward(self, x, c):
            return self.layers[0](x)  # layers.1 is never called

    class Dict(nn.Module):
        def forward(self, x):
            return {"h": x}

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Dict()

        def forward(self, x, c):
            return self.block(x)["h"]

    with pytest.raises(ConfigError, match="returns dict, neither a tensor nor a tuple"):
        probe_spec(Net(), ["block"], (2,), (torch.randn(3, 2), torch.rand(3), {}))
    with pytest.raises(ConfigError, match="never run"):
        probe_spec(Pair(), ["layers.1"], (2,), (torch.randn(3, 2), torch.rand(3), {}))


def test_a_vector_hint_steers_a_convolutional_network_broadcast_over_space():
    net, blocks, _, (x, c, cond), _ = _image()
    control = _control(net, blocks, (4,), (x, c, cond), nudge=0.1)
    controlled = Controlled(net, [ControlBinding(control, 1.0, "label")])
    with torch.no_grad():
        one = controlled(x, c, label=torch.tensor([[1.0, 0, 0, 0]]), **cond)
        other = controlled(x, c, label=torch.tensor([[0, 0, 0, 1.0]]), **cond)
    assert one.shape == x.shape and not torch.allclose(one, other)
    with pytest.raises(ConfigError, match="cannot be encoded"):  # a map into a vector input
        net, blocks, _, example, _ = _toy()
        ControlNet(net, probe_spec(net, blocks, (1, 8, 8), example))
