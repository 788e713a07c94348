"""The public sampler API: what a third-party sampler may import, documented and sufficient.

`diffusekit.core.samplers.__all__` is the whole surface; the example plugin's `midpoint`
sampler is written with it alone, and the engine reads no private tensor internals."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import torch

from diffusekit.core import samplers, schedules
from diffusekit.core.samplers import Grid, finite_or_zero, prepare_denoiser, step_scalars
from diffusekit.core.spaces import Euclidean

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_SAMPLER = ROOT / "plugins/example/diffusekit_example/sampler.py"


@pytest.mark.parametrize("name", samplers.__all__)
def test_every_public_name_exists_and_is_documented(name):
    """Named in the package docstring (the page a sampler author reads), with its own docstring."""
    obj = getattr(samplers, name)
    assert f"`{name}" in samplers.__doc__, f"{name} is not described in diffusekit.core.samplers' docstring"
    if inspect.isfunction(obj) or inspect.isclass(obj):
        assert (obj.__doc__ or "").strip(), f"{name} has no docstring"


def _diffusekit_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every `from diffusekit... import name` in the file."""
    tree = ast.parse(path.read_text())
    return [(node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
            and (node.module or "").startswith("diffusekit") for alias in node.names]


def test_the_example_sampler_imports_only_public_names():
    imports = _diffusekit_imports(EXAMPLE_SAMPLER)
    from_samplers = [name for module, name in imports if module == "diffusekit.core.samplers"]
    assert from_samplers, "the example sampler should use the public sampler API"
    for module, name in imports:
        assert not module.startswith("diffusekit.core.samplers."), f"{module} is not public: import from the package"
        assert not name.startswith("_"), f"{module}.{name} is private"
    assert set(from_samplers) <= set(samplers.__all__)


def test_the_engine_reads_no_private_tensor_internals():
    """No `._version` (or other underscore attribute of a tensor the engine cannot vouch for)
    in the sampler package or the denoiser adapters."""
    files = [*sorted((ROOT / "core/samplers").glob("*.py")), ROOT / "core/parameterization.py"]
    for path in files:
        attributes = {node.attr for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Attribute)}
        assert "_version" not in attributes, path.name


def test_a_first_order_sampler_written_with_the_public_api_is_ddim():
    """The recipe of the package docstring, eta = 0 DDIM in a few lines, equals the built-in."""

    def sample_mine(denoiser, noise, ts, schedule, *, space=Euclidean(), cond=None):
        grid = Grid.build(schedule, ts)
        c_x = grid.sigma_ratio
        c_d = finite_or_zero(grid.alpha[1:] - grid.alpha[:-1] * c_x)
        x = grid.start_state(noise, space)
        times, denoiser = grid.times_for(x, denoiser)
        for i, (cx, cd) in enumerate(step_scalars(x, c_x, c_d)):
            x = space.project(cx * x + cd * denoiser(x, times[i], **(cond or {})))
        return x

    sched = schedules.get("vp_cosine")
    ts = schedules.time_grid(sched, 8, "log_snr")
    noise = torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def denoiser(x, t, **cond):
        return torch.tanh(x) * (1 - t)

    torch.testing.assert_close(sample_mine(denoiser, noise, ts, sched), samplers.get("ddim")(denoiser, noise, ts, sched),
                               rtol=1e-12, atol=1e-12)


def test_prepare_denoiser_hands_the_times_to_a_denoiser_that_asks():
    seen = {}

    class Preparing:
        def __call__(self, x, t):
            return x

        def prepare_times(self, times, stacked=None, **known):
            seen["times"], seen["known"] = times, known
            return None  # keep using the denoiser itself

    times = [torch.tensor(0.5), torch.tensor(0.25)]
    d = Preparing()
    assert prepare_denoiser(d, times, batch=4) is d and seen == {"times": times, "known": {"batch": 4}}
    plain = lambda x, t: x  # noqa: E731
    assert prepare_denoiser(plain, times) is plain
