"""Per-step scalars as 0-dim tensors, made once per distinct grid and reused across runs.

A sampling loop scales its state by per-step coefficients held as 0-dim tensors on the state's
device (a Python float costs more per operation, and reading a tensor would sync the host).
Creating a 0-dim tensor costs about as much as one small tensor operation, and a run of n steps
needs several per step, so for a small network making them is a sizeable share of a run: in the
engine's overhead benchmark (50 Heun steps, a 3-layer MLP, one CPU thread) preparing a run,
mostly making these tensors, took about a third of the instructions spent outside the network
(counted with valgrind).

The coefficients depend only on the grid, the schedule and the sampler's options, and samplers
are pure functions, so equal tables give equal tensors: `interned` keeps the last `CAPACITY`
results it made, keyed by the table's values, device and dtype, and hands out the same tensors
when the same table comes again, as when sampling batch after batch with one grid.

The tensors it hands out are read-only by contract, not checked: nothing in the engine writes
to them, and the sampler contract forbids a sampler, a denoiser or a callback to change them in
place (`t = 1000 * t`, never `t *= 1000`; see `diffusekit.core.samplers`). A test runs every
sampler cold and warm and requires equal results, so an engine write would be caught.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")

#: How many distinct tables are kept (a few grids x a few samplers x dtypes).
CAPACITY = 32

_CACHE: OrderedDict[tuple, Any] = OrderedDict()


def interned(kind: str, values: Tensor, device: torch.device, dtype: torch.dtype,
             make: Callable[[Tensor], T]) -> T:
    """make(values on `device` in `dtype`), or what it returned for equal values before.

    kind:   names what `make` builds (tables of different kinds never share an entry).
    values: a CPU tensor of any shape (float64 grid quantities); compared by value.
    make:   builds the result from a fresh copy of the converted values (typically by `unbind`);
            the result is shared by every later call with equal values, hence read-only.
    """
    key = (kind, tuple(values.shape), values.dtype, values.numpy().tobytes(), device, dtype)
    made = _CACHE.get(key)
    if made is None:
        made = make(values.to(device=device, dtype=dtype, copy=True))
        _CACHE[key] = made
        while len(_CACHE) > CAPACITY:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    return made


def clear() -> None:
    """Forget every kept table (the next run of each grid makes its tensors again)."""
    _CACHE.clear()


def size() -> int:
    """The number of tables kept now."""
    return len(_CACHE)


__all__ = ["interned", "clear", "size", "CAPACITY"]
