"""ControlNet on any trained network whose blocks are named modules (torch only).

ControlNet (Zhang, Rao & Agrawala 2023, "Adding Conditional Control to Text-to-Image Diffusion
Models") steers a trained, frozen network F(.; Theta) with a hint c (a sketch, an edge map, a
pose, ...). For a chosen block it keeps F frozen and learns a trainable copy F(.; Theta_c) of it,
joined by zero-initialised layers Z (eq. 2 of the paper):

    y_c = F(x; Theta) + Z(F(x + Z(c; Theta_z1); Theta_c); Theta_z2)

Here, for a whole network and several blocks at once:

- the trainable copy is a deep copy of the base network;
- the hint encoder E (a small conv net / MLP, the paper's c_f = E(c_i), sec. 3.2) maps the hint
  to the input of the copy's first chosen block, through a last layer initialised to zero:
  h_0^copy <- h_0^copy + Z_1(E(c));
- each chosen block k of the copy gives its output h_k^copy to a zero-initialised projection
  Z_k (a 1x1 convolution: a linear map over the channel axis), added to the output of the same
  block of the frozen base: h_k <- h_k + s * Z_k(h_k^copy), s the control's scale.

With Z_k = 0 at initialisation every residual is exactly zero, so the controlled network equals
the base exactly, and scale 0 skips the control: the base's outputs, bit for bit. Several
controls add their scaled residuals (the paper's "multiple conditions", sec. 4.4).

    spec = probe_spec(base, resolve_blocks(base, ["body.*"]), hint_shape=(1, 28, 28),
                      example=(x_in, c_noise, cond))
    control = ControlNet(base, spec)                      # only its parameters train
    net = Controlled(base, [ControlBinding(control, scale=1.0, key="hint")])
    out = net(x_in, c_noise, hint=hint, **cond)           # the network contract, unchanged

A block may return a tensor or a tuple whose first element is its hidden state (a transformer
layer's `(hidden, ...)`, an EGNN layer's `(h, x)`): the control joins that first element and
leaves the rest (an EGNN's coordinates) as the base made them. A hint is a vector [D] (an MLP,
broadcast), a map [C, *spatial] for a channels-first block input (convolutions, pooled to the
block's size), or one row per element [*elements, D] for a channels-last input [*elements, C]
(atoms, tokens: the same MLP on every element).

The hint travels in the network's keyword arguments (`cond[key]`), so every sampler and the
denoiser contract D(x, t, **cond) -> x0_hat work unchanged; `Controlled` takes it out before the
base sees `cond`. The copy stops once its last chosen block has run (its later layers are not
needed), and the copy's parameters that never run stay frozen and are not part of the control.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusekit.core.errors import ConfigError, DataError

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
          nn.ConvTranspose3d)


# ------------------------------------------------------------------------------ blocks
def resolve_blocks(network: nn.Module, patterns: Sequence[str]) -> list[str]:
    """The module names of `network` that match any of `patterns`, in module order. A pattern is
    matched segment by segment over the dotted name (`body.*` matches `body.3`, not
    `body.3.conv1`; `down.*.*` matches `down.0.1`), at the name's end (`mid` matches `mid` and
    `denoiser.mid`). `ConfigError` for a pattern that matches no module, naming some that
    exist."""
    names = [name for name, _ in network.named_modules() if name]
    chosen: list[str] = []
    for pattern in patterns:
        parts = str(pattern).split(".")
        hits = [n for n in names if len(n.split(".")) >= len(parts) and all(
            fnmatch.fnmatchcase(a, b) for a, b in zip(n.split(".")[-len(parts):], parts))]
        if not hits:
            listed = ", ".join(names[:30]) + (f", ... ({len(names)} in all)"
                                              if len(names) > 30 else "")
            raise ConfigError(f"control block {pattern!r} matches no module of the network; "
                              f"its modules: {listed}")
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def default_blocks(network: nn.Module) -> list[str]:
    """The blocks a control joins when neither the user nor the domain names them: the elements
    that hold parameters of the network's largest `nn.ModuleList` / `nn.Sequential` (by
    parameter count), but the last of them (most often the output layer). `ConfigError` when
    the network has no such container."""
    best: tuple[int, list[str]] = (0, [])
    for name, module in network.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)):
            continue
        elements = [(f"{name}.{i}" if name else str(i), m) for i, m in
                    enumerate(module) if any(True for _ in m.parameters())]
        size = sum(p.numel() for p in module.parameters())
        if len(elements) >= 2 and size > best[0]:
            best = (size, [n for n, _ in elements[:-1]])
    if not best[1]:
        raise ConfigError("the network has no list of blocks to control; name them with "
                          "control.blocks (module names or patterns such as 'blocks.*')")
    return best[1]


def main_output(out: Any) -> Tensor | None:
    """The tensor of a block's output that a control joins: the output itself, or the first
    element of a tuple / list output (the hidden state: a transformer layer's `(hidden, ...)`, an
    EGNN layer's `(h, x)`, whose coordinates stay untouched); None for anything else."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    return None


def with_residual(out: Any, residual: Tensor) -> Any:
    """`out` with `residual` added to its main output (`main_output`), same type and length."""
    if isinstance(out, Tensor):
        return out + residual
    return type(out)([out[0] + residual, *out[1:]])


def channel_axis(block: nn.Module) -> int:
    """The channel axis of a block's input and output tensors: 1 ([B, C, ...]) when the block
    holds a convolution, else -1 ([B, ..., C], Linear layers and transformers)."""
    return 1 if any(isinstance(m, _CONVS) for m in block.modules()) else -1


# -------------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class ControlSpec:
    """What a ControlNet is built from besides its base (saved beside its weights as JSON).

    blocks:         the chosen blocks' module names, in the order the network runs them.
    hint_shape:     one example's hint shape: (D,) for a vector, (C, *spatial) for a map.
    entry_channels: channels of the first block's input (where the encoded hint is added).
    entry_axis:     its channel axis (1 or -1); entry_ndim its number of dims per example.
    channels, axes: each block's output channels and channel axis (its projection's size).
    width:          the hint encoder's width.
    copy_params:    the copy's parameters that run before its last chosen block (they train;
                    the rest stay the base's and frozen).
    """

    blocks: tuple[str, ...]
    hint_shape: tuple[int, ...]
    entry_channels: int
    entry_axis: int
    entry_ndim: int
    channels: tuple[int, ...]
    axes: tuple[int, ...]
    width: int = 32
    copy_params: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ControlSpec":
        """A spec from `to_dict`'s output; `ConfigError` when keys are missing or wrong."""
        try:
            return cls(blocks=tuple(str(b) for b in data["blocks"]),
                       hint_shape=tuple(int(s) for s in data["hint_shape"]),
                       entry_channels=int(data["entry_channels"]),
                       entry_axis=int(data["entry_axis"]), entry_ndim=int(data["entry_ndim"]),
                       channels=tuple(int(c) for c in data["channels"]),
                       axes=tuple(int(a) for a in data["axes"]), width=int(data["width"]),
                       copy_params=tuple(str(p) for p in data["copy_params"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"control spec is incomplete or malformed: {exc!r}") from None


def probe_spec(base: nn.Module, blocks: Sequence[str], hint_shape: Sequence[int],
               example: tuple[Tensor, Tensor, Mapping[str, Any]], width: int = 32) -> ControlSpec:
    """Run `base` once on `example` = (x_in [B, ...], c_noise [B] or [], cond) and record what a
    ControlNet on `blocks` needs: the shape of the first block's input, each block's output
    channels, the order the blocks run in and the modules that run before the last of them.
    `ConfigError` when a block does not run, returns no single tensor, or takes no positional
    input."""
    if not blocks:
        raise ConfigError("a control needs at least one block")
    modules = {name: base.get_submodule(name) for name in blocks}
    order: list[str] = []
    outputs: dict[str, Tensor] = {}
    entry: list[Tensor] = []
    used: set[str] = set()
    names = {id(m): n for n, m in base.named_modules()}

    def mark(module: nn.Module, args: tuple) -> None:
        if len(order) < len(modules):
            used.add(names[id(module)])

    def before(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            if not entry:
                if not args or not isinstance(args[0], Tensor):
                    raise ConfigError(f"control block {name!r} takes no tensor as its first "
                                      "positional input; choose other blocks")
                entry.append(args[0])
        return hook

    def after(name: str):
        def hook(module: nn.Module, args: tuple, out: Any) -> None:
            main = main_output(out)
            if main is None:
                raise ConfigError(f"control block {name!r} returns {type(out).__name__}, "
                                  "neither a tensor nor a tuple starting with one; choose "
                                  "other blocks")
            if name not in outputs:
                order.append(name)
                outputs[name] = main
        return hook

    handles = [m.register_forward_pre_hook(mark) for m in base.modules()]
    for name, module in modules.items():
        handles.append(module.register_forward_pre_hook(before(name)))
        handles.append(module.register_forward_hook(after(name)))
    x_in, c_noise, cond = example
    try:
        with torch.no_grad():
            base(x_in, c_noise, **dict(cond))
    finally:
        for handle in handles:
            handle.remove()
    missing = [n for n in blocks if n not in outputs]
    if missing:
        raise ConfigError(f"control blocks {missing} never run in the network's forward pass")
    axes = tuple(channel_axis(modules[n]) for n in order)
    first = entry[0]
    entry_axis = channel_axis(modules[order[0]])
    copy_params = tuple(n for n, _ in base.named_parameters()
                        if n.rpartition(".")[0] in used)
    return ControlSpec(blocks=tuple(order), hint_shape=tuple(int(s) for s in hint_shape),
                       entry_channels=int(first.shape[entry_axis]), entry_axis=entry_axis,
                       entry_ndim=first.dim() - 1,
                       channels=tuple(int(outputs[n].shape[a]) for n, a in zip(order, axes)),
                       axes=axes, width=int(width), copy_params=copy_params)


# ------------------------------------------------------------------------------ layers
class ZeroProjection(nn.Module):
    """Z(h) = W h + b over the channel axis `axis` of h (a 1x1 convolution for [B, C, ...], a
    Linear for [B, ..., C]); W and b start at zero, the paper's "zero convolution"."""

    def __init__(self, channels_in: int, channels_out: int, axis: int) -> None:
        super().__init__()
        self.axis = int(axis)
        self.weight = nn.Parameter(torch.zeros(channels_out, channels_in))
        self.bias = nn.Parameter(torch.zeros(channels_out))

    def forward(self, h: Tensor) -> Tensor:
        """[B, ..., C_in, ...] -> the same with C_out channels at `axis`."""
        return torch.movedim(F.linear(torch.movedim(h, self.axis, -1), self.weight, self.bias),
                             -1, self.axis)


class HintEncoder(nn.Module):
    """E then Z_1 of the paper (sec. 3.2): the hint [B, *hint_shape] -> features added to the
    input of the copy's first block, [B, *entry] with `entry_channels` at `entry_axis`.

    A map hint (C_h, *spatial) goes through two 3x3 convolutions (SiLU), an adaptive average pool
    to the entry's spatial size and a zero-initialised 1x1 convolution; a vector hint (D,)
    through a two-layer MLP and a zero-initialised Linear, broadcast over the entry's other
    axes. `ConfigError` when the hint cannot reach the entry (a map hint into a vector input)."""

    def __init__(self, spec: ControlSpec) -> None:
        super().__init__()
        shape, w = spec.hint_shape, spec.width
        self.entry_axis, self.entry_ndim = spec.entry_axis, spec.entry_ndim
        self.spatial = len(shape) - 1
        self.per_element = False
        if len(shape) == 1:
            self.body = nn.Sequential(nn.Linear(shape[0], w), nn.SiLU(), nn.Linear(w, w),
                                      nn.SiLU())
            self.zero = ZeroProjection(w, spec.entry_channels, -1)
        elif spec.entry_axis == -1 and spec.entry_ndim == len(shape) >= 2:
            # a per-element hint [*elements, D] for a channels-last entry [*elements, C] (atoms,
            # tokens): the same MLP on every element, no pooling
            self.spatial = 0
            self.body = nn.Sequential(nn.Linear(shape[-1], w), nn.SiLU(), nn.Linear(w, w),
                                      nn.SiLU())
            self.zero = ZeroProjection(w, spec.entry_channels, -1)
            self.per_element = True
        elif 1 <= self.spatial <= 3 and spec.entry_axis == 1 \
                and spec.entry_ndim == len(shape):
            conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[self.spatial - 1]
            self.body = nn.Sequential(conv(shape[0], w, 3, padding=1), nn.SiLU(),
                                      conv(w, w, 3, padding=1), nn.SiLU())
            self.zero = ZeroProjection(w, spec.entry_channels, 1)
        else:
            raise ConfigError(f"a hint of shape {list(shape)} cannot be encoded into the input "
                              f"of block {spec.blocks[0]!r} ({spec.entry_ndim} dims per "
                              f"example, channels on axis {spec.entry_axis})")

    def forward(self, hint: Tensor, like: Tensor) -> Tensor:
        """hint [B, *hint_shape] -> features broadcastable to `like` [B, *entry]."""
        h = self.body(hint)
        if self.per_element:  # [B, *elements, C]: one feature vector per element
            if h.shape[1:-1] != like.shape[1:-1]:
                raise DataError(f"a per-element hint of shape {list(hint.shape)} does not fit "
                                f"the block input {list(like.shape)}: give one row per element")
            return self.zero(h)
        if self.spatial:  # Z_1(E(c)) at the entry's spatial size
            return self.zero(_POOLS[self.spatial](h, tuple(like.shape[2:])))
        h = self.zero(h)  # [B, C]
        view = [h.shape[0]] + [1] * self.entry_ndim
        view[self.entry_axis] = h.shape[1]
        return h.reshape(view)


_POOLS = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}


class _CopyDone(Exception):
    """Raised inside the copy once its last chosen block has run (the rest is not needed)."""


# ---------------------------------------------------------------------------- ControlNet
class ControlNet(nn.Module):
    """A trainable copy of `base` with a hint encoder and one zero projection per chosen block.

    `forward(x_in, c_noise, hint, **cond)` runs the copy on the base's inputs with the encoded
    hint added to its first block's input, and returns {block name: Z_k(h_k^copy)}, the
    residuals to add to the base's blocks (all zero at initialisation). The copy's parameters
    named in `spec.copy_params`, the encoder and the projections train; `base` itself is not
    held (nor changed)."""

    def __init__(self, base: nn.Module, spec: ControlSpec) -> None:
        super().__init__()
        self.spec = spec
        self.copy = copy.deepcopy(base).train(base.training)
        trained = set(spec.copy_params)
        for name, param in self.copy.named_parameters():
            param.requires_grad_(name in trained)
        self.hint_encoder = HintEncoder(spec)
        self.projections = nn.ModuleList([ZeroProjection(c, c, a) for c, a in
                                          zip(spec.channels, spec.axes)])

    def check_hint(self, hint: Tensor, batch: int) -> None:
        """`DataError` unless `hint` is [batch or 1, *spec.hint_shape]."""
        expected = tuple(self.spec.hint_shape)
        if tuple(hint.shape[1:]) != expected or hint.shape[0] not in (1, batch):
            raise DataError(f"the hint has shape {list(hint.shape)}; this control takes "
                            f"[{batch}, {', '.join(map(str, expected))}] (the channels and "
                            "size it was trained with)")

    def forward(self, x_in: Tensor, c_noise: Tensor, hint: Tensor,
                **cond: Any) -> dict[str, Tensor]:
        """x_in [B, ...], c_noise [B] or [], hint [B or 1, *hint_shape] -> {block: residual
        shaped like that block's output}."""
        self.check_hint(hint, x_in.shape[0])
        hint = hint.to(device=x_in.device, dtype=x_in.dtype).expand(x_in.shape[0], *hint.shape[1:])
        blocks = self.spec.blocks
        outputs: dict[str, Tensor] = {}

        def add_hint(module: nn.Module, args: tuple) -> tuple:
            # x + Z_1(E(c)): the encoded hint joins the input of the copy's first block
            return (args[0] + self.hint_encoder(hint, args[0]), *args[1:])

        def record(name: str):
            def hook(module: nn.Module, args: tuple, out: Any) -> None:
                outputs.setdefault(name, main_output(out))
                if len(outputs) == len(blocks):
                    raise _CopyDone
            return hook

        handles = [self.copy.get_submodule(blocks[0]).register_forward_pre_hook(add_hint)]
        handles += [self.copy.get_submodule(n).register_forward_hook(record(n)) for n in blocks]
        try:
            self.copy(x_in, c_noise, **cond)
        except _CopyDone:
            pass
        finally:
            for handle in handles:
                handle.remove()
        # Z_k(F_k(x + Z_1(c); Theta_c)): each block's residual through its zero projection
        return {name: proj(outputs[name]) for name, proj in zip(blocks, self.projections)}

    def trainable_state(self) -> dict[str, Tensor]:
        """The tensors that make this control (what its file holds): the encoder, the
        projections and the copy's trained parameters; the rest of the copy is the base's."""
        trained = {f"copy.{n}" for n in self.spec.copy_params}
        return {k: v for k, v in self.state_dict().items()
                if not k.startswith("copy.") or k in trained}

    def load_trainable(self, state: Mapping[str, Tensor]) -> None:
        """Load `trainable_state()`'s tensors; `ValueError` naming missing or unexpected ones
        and shape mismatches."""
        own = self.trainable_state()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if missing or unexpected or wrong:
            raise ValueError(f"missing {missing[:3]}, unexpected {unexpected[:3]}, "
                             f"of another shape {wrong[:3]}")
        self.load_state_dict(dict(state), strict=False)


@dataclass
class ControlBinding:
    """One control applied to a base: its residuals are scaled by `scale` and its hint is read
    from the network's keyword argument `key`."""

    control: ControlNet
    scale: float = 1.0
    key: str = "hint"


class Controlled(nn.Module):
    """The base network steered by any number of controls, with the network contract
    `net(x_in, c_noise, **cond)`: the controls' hints are taken out of `cond` (each by its
    key), every control with a non-zero scale s_i computes its residuals, and the frozen base
    runs with h_k <- h_k + sum_i s_i Z_{i,k}(h_k^copy_i) at each of their blocks (forward hooks
    that live for one call). With no control or every scale 0 the base runs alone: its outputs
    bit for bit."""

    def __init__(self, base: nn.Module, bindings: Sequence[ControlBinding] = ()) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.controls = nn.ModuleList([b.control for b in bindings])
        self.scales = [float(b.scale) for b in bindings]
        self.keys = [str(b.key) for b in bindings]
        for control in self.controls:
            unknown = [n for n in control.spec.blocks if not _has_module(base, n)]
            if unknown:
                raise ConfigError(f"control blocks {unknown} are not modules of the base")

    def set_scale(self, index: int, scale: float) -> None:
        """Scale the residuals of control `index` by `scale` (0: the control is off)."""
        self.scales[index] = float(scale)

    def residuals(self, x_in: Tensor, c_noise: Tensor, cond: Mapping[str, Any],
                  rest: Mapping[str, Any]) -> dict[str, Tensor]:
        """{block: sum_i s_i Z_{i,k}(h_k^copy_i)} over the controls with a non-zero scale."""
        total: dict[str, Tensor] = {}
        for control, scale, key in zip(self.controls, self.scales, self.keys):
            if scale == 0.0:
                continue
            if key not in cond:
                raise DataError(f"a control needs its hint as the keyword {key!r}; none given")
            for name, r in control(x_in, c_noise, cond[key], **rest).items():
                total[name] = total[name] + scale * r if name in total else scale * r
        return total

    def forward(self, x_in: Tensor, c_noise: Tensor, **cond: Any) -> Tensor:
        """x_in [B, ...], c_noise [B] or [], cond: the base's keywords plus each control's hint
        -> the base's output [B, ...] with the controls' residuals added at their blocks."""
        rest = {k: v for k, v in cond.items() if k not in self.keys}
        added = self.residuals(x_in, c_noise, cond, rest)
        if not added:
            return self.base(x_in, c_noise, **rest)

        def add(residual: Tensor):
            def hook(module: nn.Module, args: tuple, out: Any) -> Any:
                # F(x; Theta) + Z(F(x + Z(c); Theta_c)), eq. 2 (on a tuple's first element)
                return with_residual(out, residual)
            return hook

        handles = [self.base.get_submodule(name).register_forward_hook(add(r))
                   for name, r in added.items()]
        try:
            return self.base(x_in, c_noise, **rest)
        finally:
            for handle in handles:
                handle.remove()


def _has_module(network: nn.Module, name: str) -> bool:
    try:
        network.get_submodule(name)
        return True
    except AttributeError:
        return False
