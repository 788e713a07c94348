"""The other libraries' samplers, driven by our denoisers: diffusers' schedulers and k-diffusion's
sampler functions, each given the same model in the form it expects.

* diffusers wants an eps-model over integer (or, with Karras sigmas, fractional) training
  timesteps tau of the discrete VP schedule: eps = (x - alpha x0_hat) / sigma.
  `eps_model_from_denoiser` wraps any D(x, t) that way; fractional tau are mapped to a noise level
  by diffusers' own convention (log sigma linear in tau between training steps, the inverse of
  its `_sigma_to_t`), so the model agrees exactly with what each scheduler believes sigma is.
* k-diffusion wants a denoiser in VE coordinates, model(x_ve, sigma_ve) -> x0_hat, with
  x_ve = x / alpha and sigma_ve = sigma / alpha (`sigma_model_from_denoiser`).

k-diffusion is not installable here as a package (its __init__ pulls torchvision, clip, ...), so
`load_kdiffusion_sampling` takes only `k_diffusion/sampling.py` from the published wheel into a
cache directory and loads it under a stub parent package. Nothing of either library is copied
into this repository.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import os
import subprocess
import sys
import tempfile
import types
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from diffusekit.core.schedules import VPDiscrete

EpsModel = Callable[[Tensor, Tensor], Tensor]  # (x [B, D] in VP coordinates, timestep) -> eps
SigmaModel = Callable[[Tensor, Tensor], Tensor]  # (x_ve [B, D], sigma_ve [B]) -> x0_hat

#: The libraries' names in the benchmark's records and tables.
OURS, DIFFUSERS, KDIFF = "diffusekit", "diffusers", "k-diffusion"
#: Ours with the per-grid cache of coefficient tensors cleared before every run (a first run).
OURS_COLD = "diffusekit, cold"

# ---------------------------------------------------------------------------------------------
# diffusers

#: The DDPM schedule of every benchmark, in diffusers' words (1000 steps, linear betas).
DIFFUSERS_SCHEDULE = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")


@dataclass(frozen=True)
class DiffusersConfig:
    """One diffusers scheduler configuration: `algorithm` is the family it is compared in
    (our sampler of the same name), `label` what the tables print."""

    algorithm: str
    label: str
    scheduler: str  # class name in `diffusers`
    options: dict = field(default_factory=dict)


def _cfg(algorithm: str, scheduler: str, setting: str, **options) -> DiffusersConfig:
    return DiffusersConfig(algorithm, f"{scheduler}({setting})", scheduler, options)


_DPMPP = dict(algorithm_type="dpmsolver++", solver_order=2)
_SDE = dict(algorithm_type="sde-dpmsolver++", solver_order=2)
_DPMPP3 = dict(algorithm_type="dpmsolver++", solver_order=3)
#: Each scheduler in its documented settings: the default spacing, "trailing" (Lin et al. 2024,
#: recommended by diffusers for few steps), Karras sigmas (recommended for DPM-Solver/Euler/Heun
#: at low step counts) and, for DPM-Solver, Lu's uniform-log-SNR steps (`use_lu_lambdas`).
DIFFUSERS_CONFIGS: tuple[DiffusersConfig, ...] = (
    _cfg("ddpm", "DDPMScheduler", "leading", timestep_spacing="leading"),
    _cfg("ddpm", "DDPMScheduler", "trailing", timestep_spacing="trailing"),
    _cfg("ddim", "DDIMScheduler", "leading, steps_offset=1", timestep_spacing="leading", steps_offset=1),
    _cfg("ddim", "DDIMScheduler", "trailing", timestep_spacing="trailing"),
    _cfg("ddim", "DDIMScheduler", "linspace", timestep_spacing="linspace"),
    _cfg("euler", "EulerDiscreteScheduler", "linspace", timestep_spacing="linspace"),
    _cfg("euler", "EulerDiscreteScheduler", "trailing", timestep_spacing="trailing"),
    _cfg("euler", "EulerDiscreteScheduler", "karras", use_karras_sigmas=True),
    _cfg("heun", "HeunDiscreteScheduler", "linspace", timestep_spacing="linspace"),
    _cfg("heun", "HeunDiscreteScheduler", "trailing", timestep_spacing="trailing"),
    _cfg("heun", "HeunDiscreteScheduler", "karras", use_karras_sigmas=True),
    _cfg("dpmpp_2m", "DPMSolverMultistepScheduler", "dpmsolver++ 2M, linspace", **_DPMPP),
    _cfg("dpmpp_2m", "DPMSolverMultistepScheduler", "dpmsolver++ 2M, trailing", **_DPMPP, timestep_spacing="trailing"),
    _cfg("dpmpp_2m", "DPMSolverMultistepScheduler", "dpmsolver++ 2M, karras", **_DPMPP, use_karras_sigmas=True),
    _cfg("dpmpp_2m", "DPMSolverMultistepScheduler", "dpmsolver++ 2M, lu_lambdas", **_DPMPP, use_lu_lambdas=True),
    _cfg("dpmpp_2m_sde", "DPMSolverMultistepScheduler", "sde-dpmsolver++ 2M, linspace", **_SDE),
    _cfg("dpmpp_2m_sde", "DPMSolverMultistepScheduler", "sde-dpmsolver++ 2M, trailing", **_SDE, timestep_spacing="trailing"),
    _cfg("dpmpp_2m_sde", "DPMSolverMultistepScheduler", "sde-dpmsolver++ 2M, karras", **_SDE, use_karras_sigmas=True),
    _cfg("dpmpp_3m", "DPMSolverMultistepScheduler", "dpmsolver++ 3M, linspace", **_DPMPP3),
    _cfg("dpmpp_3m", "DPMSolverMultistepScheduler", "dpmsolver++ 3M, karras", **_DPMPP3, use_karras_sigmas=True),
    _cfg("dpmpp_3m", "DPMSolverMultistepScheduler", "dpmsolver++ 3M, lu_lambdas", **_DPMPP3, use_lu_lambdas=True),
    _cfg("unipc", "UniPCMultistepScheduler", "bh2 order 2, linspace", solver_order=2),
    _cfg("unipc", "UniPCMultistepScheduler", "bh2 order 2, trailing", solver_order=2, timestep_spacing="trailing"),
    _cfg("unipc", "UniPCMultistepScheduler", "bh2 order 2, karras", solver_order=2, use_karras_sigmas=True),
    _cfg("unipc", "UniPCMultistepScheduler", "bh1 order 3, linspace", solver_order=3, solver_type="bh1"),
)


def make_scheduler(config: DiffusersConfig):
    """A fresh scheduler of `config` on the benchmark's DDPM schedule (a new object per sampling
    run, so no multistep state leaks between runs). Sample clipping is off: the data is not in
    [-1, 1]."""
    import diffusers

    cls = getattr(diffusers, config.scheduler)
    params = inspect.signature(cls.__init__).parameters
    options = dict(DIFFUSERS_SCHEDULE, **config.options)
    if "clip_sample" in params:
        options["clip_sample"] = False
    return cls(**options)


def diffusers_sample(scheduler, eps_model: EpsModel, noise: Tensor, steps: int,
                     generator: torch.Generator | None = None) -> Tensor:
    """diffusers' idiomatic loop: set_timesteps, then for each timestep scale the input, call the
    eps-model and `step`. noise: [B, ...] unit Gaussian -> samples [B, ...]."""
    scheduler.set_timesteps(steps)
    step_kwargs = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = eps_model(scheduler.scale_model_input(x, t), t)
        x = scheduler.step(eps, t, x, **step_kwargs).prev_sample
    return x


def _train_log_sigmas(schedule: VPDiscrete) -> Tensor:
    """[N] float64 log sigma_ve of the training steps: 0.5 log((1 - abar) / abar)."""
    ab = schedule.alphas_cumprod_tensor
    return 0.5 * torch.log((1.0 - ab) / ab)


def timestep_to_time(schedule: VPDiscrete, timestep: Tensor) -> Tensor:
    """A diffusers timestep tau in [0, N-1] (int or fractional, any shape) -> our t in (0, 1].

    Integer tau is training step tau, which `VPDiscrete` places at t = (tau + 1) / N. A fractional
    tau means diffusers' own interpolation: log sigma_ve linear in tau between training steps.
    """
    tau = torch.as_tensor(timestep, dtype=torch.float64)
    n = schedule.n_train_steps
    lo = tau.floor().clamp(0, n - 1)
    if bool((tau == lo).all()):
        return (tau + 1.0) / n
    log_sig = _train_log_sigmas(schedule)
    hi = (lo + 1).clamp(max=n - 1)
    w = tau - lo
    ls = (1 - w) * log_sig[lo.long()] + w * log_sig[hi.long()]
    return schedule.t_of_log_snr(-2.0 * ls)


def _scheduler_time(scheduler, schedule: VPDiscrete, timestep: Tensor) -> Tensor | None:
    """The time of the noise level `scheduler` itself uses at `timestep` (sigma-based schedulers
    keep `sigmas` aligned with `timesteps`); None for schedulers without sigmas (DDPM, DDIM)."""
    sigmas, timesteps = getattr(scheduler, "sigmas", None), getattr(scheduler, "timesteps", None)
    if sigmas is None or timesteps is None:
        return None
    hits = (timesteps == timestep).nonzero()
    if len(hits) == 0:
        return None
    sigma = torch.as_tensor(sigmas[int(hits[0, 0])], dtype=torch.float64)
    return schedule.t_of_log_snr(-2.0 * sigma.log())


def eps_model_from_denoiser(denoiser: Callable[[Tensor, Tensor], Tensor], schedule: VPDiscrete,
                            scheduler=None) -> EpsModel:
    """diffusers' eps-model for a D(x, t) -> x0_hat on `schedule`: eps = (x - alpha x0_hat) / sigma.

    With `scheduler`, a timestep is read at the noise level that scheduler assigns it (Euler and
    Heun interpolate sigma linearly at fractional timesteps, Karras grids log-linearly), so the
    model is exactly consistent with the scheduler's own updates; otherwise `timestep_to_time`.
    """

    def eps_model(x: Tensor, timestep: Tensor) -> Tensor:
        t = _scheduler_time(scheduler, schedule, timestep) if scheduler is not None else None
        t = (timestep_to_time(schedule, timestep) if t is None else t).expand(x.shape[0])
        alpha, sigma = schedule.alpha_sigma(t)
        alpha, sigma = alpha.to(x.dtype)[:, None], sigma.to(x.dtype)[:, None]
        return (x - alpha * denoiser(x, t)) / sigma

    return eps_model


# ---------------------------------------------------------------------------------------------
# k-diffusion

KDIFFUSION_VERSION = "0.1.1.post1"
#: k-diffusion's samplers in the comparison: name in sampling.py -> our algorithm family.
KDIFFUSION_SAMPLERS = {
    "sample_euler": "euler",
    "sample_heun": "heun",
    "sample_dpmpp_2m": "dpmpp_2m",
    "sample_dpmpp_2m_sde": "dpmpp_2m_sde",
    "sample_dpmpp_3m_sde": "dpmpp_3m_sde",
}
#: k-diffusion's noise-level grids (both between the training grid's sigma_min and sigma_max).
KDIFFUSION_GRIDS = ("karras", "exponential")


class KDiffusionUnavailable(RuntimeError):
    """k-diffusion's sampling module could not be loaded; the message says why."""


def kdiffusion_cache_dir() -> Path:
    """Where the extracted sampling.py lives: $DIFFUSEKIT_DATA/k-diffusion/<version>."""
    root = Path(os.environ.get("DIFFUSEKIT_DATA", "~/.cache/diffusekit")).expanduser()
    return root / "k-diffusion" / KDIFFUSION_VERSION


def _fetch_sampling_py(dest: Path) -> None:
    """pip download the wheel (no dependencies) and extract k_diffusion/sampling.py and LICENSE."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp,
             f"k-diffusion=={KDIFFUSION_VERSION}"], capture_output=True, text=True, timeout=300)
        wheels = list(Path(tmp).glob("k_diffusion-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise KDiffusionUnavailable(f"pip download k-diffusion=={KDIFFUSION_VERSION} failed: "
                                        f"{(proc.stderr or proc.stdout).strip()[-300:]}")
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as wheel:
            (dest / "sampling.py").write_bytes(wheel.read("k_diffusion/sampling.py"))
            licenses = [n for n in wheel.namelist() if n.endswith("dist-info/LICENSE")]
            if licenses:
                (dest / "LICENSE").write_bytes(wheel.read(licenses[0]))


def _append_dims(x: Tensor, target_dims: int) -> Tensor:
    """x with trailing singleton dimensions up to `target_dims` (what sampling.py needs of utils)."""
    if x.dim() > target_dims:
        raise ValueError(f"input has {x.dim()} dims, more than {target_dims}")
    return x.reshape(*x.shape, *([1] * (target_dims - x.dim())))


_STUB_PACKAGE = "_diffusekit_kdiffusion"


def load_kdiffusion_sampling() -> types.ModuleType:
    """k-diffusion's `sampling` module: the installed package's if it imports, else sampling.py
    alone from the wheel, under a stub parent package whose `utils` provides `append_dims`
    (torchdiffeq, used only by its log-likelihood function, is stubbed when missing).
    Raises `KDiffusionUnavailable` with the reason when neither works."""
    try:
        import k_diffusion.sampling as installed  # type: ignore[import-not-found]

        return installed
    except Exception:  # not installed, or its __init__'s heavy dependencies are missing
        pass
    name = f"{_STUB_PACKAGE}.sampling"
    if name in sys.modules:
        return sys.modules[name]
    src = kdiffusion_cache_dir() / "sampling.py"
    if not src.exists():
        try:
            _fetch_sampling_py(src.parent)
        except (OSError, subprocess.SubprocessError, KeyError, zipfile.BadZipFile) as err:
            raise KDiffusionUnavailable(f"could not fetch k-diffusion's sampling.py: {err}") from err
    pkg = types.ModuleType(_STUB_PACKAGE)
    pkg.__path__ = [str(src.parent)]
    utils = types.ModuleType(f"{_STUB_PACKAGE}.utils")
    utils.append_dims = _append_dims
    stubs = {_STUB_PACKAGE: pkg, f"{_STUB_PACKAGE}.utils": utils}
    if importlib.util.find_spec("torchdiffeq") is None:
        diffeq = types.ModuleType("torchdiffeq")

        def odeint(*args, **kwargs):
            raise NotImplementedError("torchdiffeq is not installed (k-diffusion log_likelihood only)")

        diffeq.odeint = odeint
        stubs["torchdiffeq"] = diffeq
    sys.modules.update(stubs)
    try:
        spec = importlib.util.spec_from_file_location(name, src)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except Exception as err:
        sys.modules.pop(name, None)
        raise KDiffusionUnavailable(f"k-diffusion's sampling.py did not load: {type(err).__name__}: {err}") from err
    finally:
        if "torchdiffeq" in stubs:
            sys.modules.pop("torchdiffeq", None)  # only sampling.py holds the stub
    return module


def kdiffusion_sigmas(kd: types.ModuleType, schedule: VPDiscrete, steps: int, kind: str) -> Tensor:
    """[steps + 1] float32 descending sigma_ve from the training grid's max to its min, then 0,
    by k-diffusion's own `get_sigmas_karras` (rho = 7) or `get_sigmas_exponential`."""
    log_sig = _train_log_sigmas(schedule)
    s_min, s_max = math.exp(float(log_sig[0])), math.exp(float(log_sig[-1]))
    grid = {"karras": kd.get_sigmas_karras, "exponential": kd.get_sigmas_exponential}[kind]
    return grid(steps, s_min, s_max).to(torch.float32)


def sigma_model_from_denoiser(denoiser: Callable[[Tensor, Tensor], Tensor], schedule: VPDiscrete) -> SigmaModel:
    """k-diffusion's model(x_ve, sigma_ve) -> x0_hat for a D(x, t) on a VP schedule:
    x = alpha x_ve with alpha = 1 / sqrt(1 + sigma_ve^2), and t where lambda(t) = -2 log sigma_ve."""

    def sigma_model(x: Tensor, sigma: Tensor) -> Tensor:
        sigma = sigma.to(torch.float64).expand(x.shape[0])
        t = schedule.t_of_log_snr(-2.0 * sigma.log())
        alpha = torch.rsqrt(1.0 + sigma * sigma).to(x.dtype)[:, None]
        return denoiser(x * alpha, t)

    return sigma_model


def kdiffusion_sample(kd: types.ModuleType, sampler: str, model: SigmaModel, noise: Tensor,
                      sigmas: Tensor, seed: int = 0) -> Tensor:
    """Run k-diffusion's `sampler` from sigmas[0] * noise. SDE samplers draw their Brownian tree
    from torch's global generator, which is seeded with `seed` first."""
    torch.manual_seed(seed)
    return getattr(kd, sampler)(model, noise * sigmas[0], sigmas, disable=True)


__all__ = [
    "OURS", "OURS_COLD", "DIFFUSERS", "KDIFF",
    "DIFFUSERS_CONFIGS", "DiffusersConfig", "make_scheduler", "diffusers_sample", "timestep_to_time",
    "eps_model_from_denoiser", "KDIFFUSION_SAMPLERS", "KDIFFUSION_GRIDS", "KDiffusionUnavailable",
    "load_kdiffusion_sampling", "kdiffusion_sigmas", "sigma_model_from_denoiser", "kdiffusion_sample",
]
