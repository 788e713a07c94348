"""Distillation runs: a 1-4 step consistency student of any trained Gaussian-diffusion model.

    toolkit distill --run TEACHER [distill.steps=4 distill.kind=lora ...]   # a new run
    toolkit sample --run STUDENT                                            # consistency, 4 steps

The engine's consistency distillation (`diffusekit.core.distillation`, Song et al. 2023 "Consistency
Models", Algorithm 2; Luo et al. 2023 "Latent Consistency Models" for guidance) runs through the
toolkit's trainer like any run: a distillation run is a run whose config names its teacher
(`distill.teacher`) and starts from it (`init_from`, the same model). What this module adds:

- `DistillSettings`: the `distill` section of the config;
- `distill_config`: the config of a new distillation run, from the teacher's own config (the
  student is the teacher's network: same domain, same settings) with `distill.teacher` and
  `init_from` set to the teacher, `adapter.kind=lora` for a LoRA student, and the run's sampling
  defaults `sample.sampler=consistency`, `sample.steps=distill.steps`;
- `StudentProcess`: the domain's process with the student's objective and sampler. Its
  `training_loss` is the consistency loss of the student f = `DenoiserStudent` (CM's skip form
  around the domain's own parameterisation of the network) against the frozen teacher's ODE
  step, with the run's EMA weights as the target theta^- (`bind_ema`); its `generate` samples the
  student (default: the `consistency` sampler on `distill.grid`). Loading the run (`load_model`)
  gives this process, so `toolkit sample` / `evaluate` and the Python API sample the student;
- `start_distillation`: what `train` calls to turn a run's network and process into the
  student's (the teacher loaded and frozen);
- `student_network`: the network of a student that takes the guidance scale w as an input
  (LCM's w-conditioning: `GuidanceInput` on the domain's `guidance_embedding` module).

A full student is a model folder like any other (model.safetensors); a LoRA student (LCM-LoRA,
`distill.kind=lora`) is an adapter run: peft's files in `adapter/` with the teacher's SHA-256 (a
w-conditioned one also keeps its w embedding there, in `guidance.safetensors`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from diffusekit.core.app.config import override, typed
from diffusekit.core.distillation import (METRICS, STEP_WEIGHTINGS, DenoiserStudent, GuidanceInput,
                                          GuidanceRange, consistency_loss)
from diffusekit.core.errors import CheckpointError, ConfigError
from diffusekit.core.schedules import GRIDS, Schedule

KINDS = ("full", "lora")
GUIDANCE_KEY = "guidance"  # the student network's keyword for w
GUIDANCE_FILE = "guidance.safetensors"  # a LoRA student's w embedding, beside its adapter files


@dataclass(frozen=True)
class DistillSettings:
    """The `distill` section of a run's config (see the toolkit's defaults.yaml for each key).

    guidance: (w_min, w_max) of the guided teacher the student learns (w_min == w_max: one w
    baked in; w_min < w_max: w is an input of the student), or None for the unguided teacher."""

    teacher: str
    kind: str
    steps: int
    grid: str
    renoise_max: float
    grid_steps: int
    rho: float
    solver: str
    metric: str
    weighting: str
    boundary_width: float | None
    guidance: tuple[float, float] | None

    @property
    def conditioned(self) -> bool:
        """Whether the student takes w as an input (a range of w)."""
        return self.guidance is not None and self.guidance[0] < self.guidance[1]

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "DistillSettings | None":
        """The settings, or None when `distill.teacher` is null; a `ConfigError` naming the key
        of a bad value (`distill.steps=0`, an unknown kind, solver or grid)."""
        if not is_distill_run(cfg):
            return None
        d = cfg.distill
        kind = str(d.kind)
        if kind not in KINDS:
            raise ConfigError(f"distill.kind={kind!r} is not known; known: {', '.join(KINDS)}")
        for key in ("steps", "grid_steps"):
            if typed(cfg, f"distill.{key}", int) <= 0:
                raise ConfigError(f"distill.{key} must be a whole number > 0, got {d[key]}")
        width = None if d.get("boundary_width") is None else typed(cfg, "distill.boundary_width", float)
        rho = typed(cfg, "distill.rho", float)
        if (width is not None and width <= 0) or rho <= 0:
            raise ConfigError(f"need distill.boundary_width > 0 (or null) and distill.rho > 0, got "
                              f"{width} and {rho}")
        renoise_max = typed(cfg, "distill.renoise_max", float)
        if not 0 < renoise_max <= 1:
            raise ConfigError(f"distill.renoise_max must lie in (0, 1], got {renoise_max}")
        GRIDS.get(str(d.grid))
        METRICS.get(str(d.metric))
        STEP_WEIGHTINGS.get(str(d.weighting))
        from diffusekit.core import samplers

        samplers.get(str(d.solver))
        return cls(str(d.teacher), kind, typed(cfg, "distill.steps", int), str(d.grid), renoise_max,
                   typed(cfg, "distill.grid_steps", int), rho, str(d.solver), str(d.metric),
                   str(d.weighting), width, guidance_range(cfg))


def is_distill_run(cfg: DictConfig) -> bool:
    """Whether a run's (or model's) config is a distillation run (`distill.teacher` set)."""
    section = cfg.get("distill")
    return bool(section is not None and section.get("teacher") not in (None, ""))


def guidance_range(cfg: DictConfig) -> tuple[float, float] | None:
    """(w_min, w_max) from `distill.guidance` (null: the run's `sample.guidance` baked in; a
    number: that w; [w_min, w_max]); None for w = 0 (the unguided teacher)."""
    value = cfg.distill.get("guidance")
    if value is None:
        low = high = typed(cfg, "sample.guidance", float) if cfg.sample.get("guidance") else 0.0
    elif OmegaConf.is_list(value):
        if len(value) != 2:
            raise ConfigError(f"distill.guidance must be a number or [w_min, w_max], got {list(value)}")
        low, high = (typed(cfg, f"distill.guidance.{i}", float) for i in (0, 1))
    else:
        low = high = typed(cfg, "distill.guidance", float)
    if not 0 <= low <= high:
        raise ConfigError(f"distill.guidance needs 0 <= w_min <= w_max, got [{low}, {high}]")
    return None if high == 0 else (low, high)


# ----------------------------------------------------------------------------- the process
def is_gaussian(process: Any) -> bool:
    """Whether `process` is a continuous Gaussian diffusion a student can be distilled from
    (it has `denoiser(network)`, a `schedule` and `space_for(batch)`, as `GaussianDiffusion`)."""
    return (callable(getattr(process, "denoiser", None)) and callable(getattr(process, "space_for", None))
            and isinstance(getattr(process, "schedule", None), Schedule))


class StudentProcess:
    """The domain's `process` with a consistency student's training objective and sampler.

    training_loss(network, batch): the consistency loss (`core.distillation.consistency_loss`)
    of the student f = `DenoiserStudent(process.denoiser(network))` against the teacher's ODE
    step, with the target theta^- the run's EMA network (`bind_ema`; without one, the student
    itself under stop-gradient). The student's network runs in eval mode inside the loss (no
    label dropout: it learns the teacher's conditional, or guided, model as the teacher gives it).
    generate(network, batch): samples of the student, by default with the `consistency`
    sampler at `distill.steps` steps on the `distill.grid` time grid; a w-conditioned student
    gets w = the process's `guidance` (the run's `sample.guidance`).

    Every other attribute is the domain process's own. `teacher` is (network, process) of the
    frozen teacher, needed for training only (None in a loaded student)."""

    sampler = "consistency"

    def __init__(self, process: Any, settings: DistillSettings,
                 teacher: tuple[torch.nn.Module, Any] | None = None) -> None:
        self.process, self.settings, self.teacher = process, settings, teacher
        self.target: torch.nn.Module | None = None

    @property
    def steps(self) -> int:
        return self.settings.steps

    def bind_ema(self, network: torch.nn.Module) -> None:
        """Use `network` (the trainer's EMA of the student) as CM's target theta^-."""
        self.target = network

    def student(self, network: Any) -> DenoiserStudent:
        """f(x, t, **cond) -> x0_hat of `network` (`DenoiserStudent` around the domain's denoiser)."""
        return DenoiserStudent(self.process.denoiser(network), self.process.schedule,
                               boundary_width=self.settings.boundary_width)

    def _teacher(self, batch: dict, cond: dict, like: Tensor,
                 generator: torch.Generator | None) -> Any:
        """The teacher's denoiser for the batch, guided as the settings say; for a w-conditioned
        student, w ~ U[w_min, w_max] per example goes into `cond` (the student reads it, the
        teacher's wrapper takes it out)."""
        network, process = self.teacher
        denoiser = process.denoiser(network)
        if self.settings.guidance is None:
            return denoiser
        low, high = self.settings.guidance
        if low == high:
            return process.guided_denoiser(denoiser, batch, low)
        cond[GUIDANCE_KEY] = GuidanceRange(w_min=low, w_max=high).draw(like, generator)

        def guided_teacher(x: Tensor, t: Tensor, guidance: Tensor, **rest: Any) -> Tensor:
            return process.guided_denoiser(denoiser, batch, guidance)(x, t, **rest)

        return guided_teacher

    def training_loss(self, network: Any, batch: dict, generator: torch.Generator | None = None) -> Tensor:
        """[B] consistency loss of `network` (the student) on batch["x0"]."""
        if self.teacher is None:
            raise ConfigError("this student was loaded for sampling; training it needs its teacher "
                              "(toolkit distill, or toolkit train --resume RUN)")
        x0 = batch["x0"]
        teacher_network = self.teacher[0]
        if next(teacher_network.parameters(), x0).device != x0.device:  # follow the trainer's device
            teacher_network.to(x0.device)
        cond = dict(batch.get("cond") or {})
        teacher = self._teacher(batch, cond, x0, generator)
        s = self.settings
        target = None if self.target is None else self.student(self.target)
        was_training = getattr(network, "training", False)
        if was_training:
            network.eval()
        try:
            return consistency_loss(self.student(network), target, teacher, x0, self.process.schedule,
                                    n_steps=s.grid_steps, rho=s.rho, sampler=s.solver, metric=s.metric,
                                    weighting=s.weighting, space=self.process.space_for(batch),
                                    generator=generator, cond=cond)
        finally:
            if was_training:
                network.train()

    def generate(self, network: Any, batch: dict, *, sampler: str | None = None, steps: int | None = None,
                 grid: str | None = None, generator: torch.Generator | None = None,
                 callback: Any = None, noise: Tensor | None = None, **options: Any) -> Tensor:
        """Samples shaped like batch["x0"] from the student (batch["cond"] as conditioning,
        batch["mask"] selecting the space); any registered sampler, default `consistency` (on
        `student_grid`; another sampler on the process's own grid kind)."""
        from diffusekit.core import samplers, schedules

        x_like = batch["x0"]
        space = self.process.space_for(batch)
        schedule = self.process.schedule
        sampler = sampler or self.sampler
        steps = int(steps or self.settings.steps)
        if sampler == "consistency":
            ts = student_grid(schedule, steps, grid or self.settings.grid, self.settings.renoise_max)
        else:  # an ODE / SDE sampler on the process's own grid
            ts = schedules.time_grid(schedule, steps, grid or getattr(self.process, "grid", "uniform"))
        if noise is None:
            noise = space.randn_like(x_like, generator)
        cond = dict(batch.get("cond") or {})
        if self.settings.conditioned:
            w = float(getattr(self.process, "guidance", 0.0) or 0.0)
            cond[GUIDANCE_KEY] = torch.full((x_like.shape[0],), w, device=x_like.device)
        if cond:
            options["cond"] = cond
        return samplers.get(sampler)(self.student(network), noise, ts.to(x_like.device),
                                                     schedule, space=space, generator=generator,
                                                     callback=callback, **options)

    def __getattr__(self, name: str) -> Any:
        if name in ("process", "settings", "teacher", "target"):  # not set yet (copying)
            raise AttributeError(name)
        return getattr(self.process, name)


def student_grid(schedule: Schedule, steps: int, kind: str, renoise_max: float) -> Tensor:
    """[steps + 1] descending times of the student's sampling: t_max (the start, pure noise), then
    the grid `kind` of `steps` steps built from `renoise_max` (a fraction of t_max) down to 0, its
    first time replaced by t_max (CM Algorithm 1 re-noises to the later times)."""
    from diffusekit.core import schedules

    ts = schedules.time_grid(schedule, steps, kind, t_max=renoise_max * float(schedule.t_max))
    ts[0] = schedule.t_max
    return ts


def run_process(domain: Any, cfg: DictConfig, process: Any) -> Any:
    """The process of a run: `process` itself, or for a distillation run the `StudentProcess`
    around it (a `ConfigError` when the domain's process is not a Gaussian diffusion, or has no
    guidance while `distill.guidance` asks for it)."""
    settings = DistillSettings.from_config(cfg)
    if settings is None:
        return process
    if not is_gaussian(process):
        raise ConfigError(f"the {domain.name!r} domain's process ({type(process).__name__}) is not a "
                          "Gaussian diffusion (a discrete one, as text's?): consistency distillation "
                          "follows a probability-flow ODE, which only a continuous process has")
    if settings.guidance is not None and not callable(getattr(process, "guided_denoiser", None)):
        raise ConfigError(f"distill.guidance asks for guidance w in {list(settings.guidance)}, and the "
                          f"{domain.name!r} domain's process has no classifier-free guidance "
                          "(guided_denoiser); set distill.guidance=0")
    return StudentProcess(process, settings)


def student_network(domain: Any, cfg: DictConfig, network: torch.nn.Module,
                    guidance_folder: Path | None = None) -> torch.nn.Module:
    """The network of a run: `network` itself, or for a student that takes w as an input the
    network with a w embedding (`GuidanceInput` on `domain.guidance_embedding`); with
    `guidance_folder` (a LoRA student's adapter folder) the embedding's weights are read from its
    guidance.safetensors."""
    settings = DistillSettings.from_config(cfg)
    if settings is None or not settings.conditioned:
        return network
    name = getattr(domain, "guidance_embedding", None)
    if not name:
        raise ConfigError(f"distill.guidance={list(settings.guidance)} makes w an input of the student, "
                          f"and the {domain.name!r} domain names no module for it "
                          "(Domain.guidance_embedding); give distill.guidance one value")
    try:
        wrapped = GuidanceInput(network, str(name))
    except ValueError as exc:
        raise ConfigError(f"the {domain.name!r} domain's guidance_embedding: {exc}") from None
    if guidance_folder is not None:
        from safetensors.torch import load_file

        path = Path(guidance_folder) / GUIDANCE_FILE
        try:
            wrapped.guidance.load_state_dict(load_file(str(path)))
        except Exception as exc:  # missing, truncated, or another shape
            raise CheckpointError(f"the student's w embedding {str(path)!r} cannot be read: "
                                  f"{' '.join(str(exc).split())[:160]}") from None
        wrapped.requires_grad_(False)
    return wrapped


def save_guidance(network: GuidanceInput, folder: Path) -> Path:
    """Write a w-conditioned student's w embedding into `folder` (a LoRA student's adapter folder)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / GUIDANCE_FILE
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().to("cpu").contiguous() for k, v in network.guidance.state_dict().items()},
              str(tmp), metadata={"format": "pt"})
    tmp.replace(path)
    return path


def start_distillation(domain: Any, cfg: DictConfig, network: torch.nn.Module,
                       process: Any) -> tuple[torch.nn.Module, Any]:
    """(network, process) of a run: as given unless `distill.teacher` is set; for a distillation
    run, the student's network (`student_network`; its weights already the teacher's, through
    `init_from`) and a `StudentProcess` holding the frozen teacher. `ConfigError` lines for a
    teacher of another domain, a discrete teacher, a student as teacher, a control run."""
    settings = DistillSettings.from_config(cfg)
    if settings is None:
        return network, process
    from diffusekit.core.app import controls
    from diffusekit.core.app.training.models import load_model, resolve

    if controls.is_control_run(cfg):
        raise ConfigError("a distillation run trains a student of its teacher; it does not go with "
                          "control.of")
    if str(cfg.get("init_from")) != settings.teacher:
        raise ConfigError(f"a distillation run starts from its teacher: init_from must be "
                          f"distill.teacher ({settings.teacher!r}); toolkit distill sets both")
    teacher = load_model(resolve(settings.teacher), domain=domain)
    if is_distill_run(teacher.cfg):
        raise ConfigError(f"{settings.teacher!r} is itself a distilled student; distil its teacher")
    student = run_process(domain, cfg, process)
    if not is_gaussian(teacher.process):
        raise ConfigError(f"the teacher's process ({type(teacher.process).__name__}) is not a Gaussian "
                          "diffusion")
    student.teacher = (teacher.network.eval().requires_grad_(False), teacher.process)
    return student_network(domain, cfg, network), student


# ------------------------------------------------------------------------------ the config
def distill_config(teacher: str | Path, *, files: tuple[str, ...] = (), overrides: tuple[str, ...] = (),
                   domain: Any | None = None) -> tuple[Any, DictConfig]:
    """(domain, config) of a new distillation run of `teacher` (a run or model folder, or a Hub
    id): the teacher's config with `distill.teacher` and `init_from` set to it, the student's
    kind (`adapter.kind`), sampler, steps, training length, EMA and learning rate from the
    `distill` section,
    then `files` and `overrides` (`key=value`, the `distill.*` keys included). One-line errors
    for a teacher of another domain than `domain`, one without plain weights, a student, and bad
    `distill` values."""
    from diffusekit.core.app.training.models import WEIGHTS_FILE, model_domain, resolve

    folder = resolve(teacher)
    dom, teacher_cfg = model_domain(folder, domain)
    if is_distill_run(teacher_cfg):
        raise ConfigError(f"{str(teacher)!r} is itself a distilled student; distil its teacher")
    if not (folder / WEIGHTS_FILE).is_file():
        raise ConfigError(f"teacher {str(teacher)!r} holds no {WEIGHTS_FILE} (an adapter or control "
                          "run? merge or export a plain model first)")
    local = Path(str(teacher)).expanduser().is_dir()
    ident = json.dumps(str(folder.resolve()) if local else str(teacher))
    fresh = [f"distill.teacher={ident}", f"init_from={ident}", "control.of=null"]
    user = override(teacher_cfg, files=files, overrides=[*fresh, *overrides])
    settings = DistillSettings.from_config(user)
    derived = [*fresh, f"adapter.kind={'lora' if settings.kind == 'lora' else 'null'}",
               "sample.sampler=consistency", f"sample.steps={settings.steps}",
               f"trainer.max_steps={typed(user, 'distill.max_steps', int)}",
               f"ema.decay={typed(user, 'distill.ema_decay', float)}"]
    if user.distill.get("lr") is not None:
        derived.append(f"optim.lr={typed(user, 'distill.lr', float)}")
    cfg = override(teacher_cfg, files=files, overrides=[*derived, *overrides, *fresh])
    run_process(dom, cfg, dom.process(cfg))  # a discrete process or missing guidance fail here
    return dom, cfg


__all__ = ["DistillSettings", "StudentProcess", "distill_config", "is_distill_run", "run_process",
           "save_guidance", "start_distillation", "student_network", "GUIDANCE_FILE", "KINDS"]
