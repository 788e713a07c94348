"""Consistency distillation against the true distribution: students of an exact teacher.

The teacher is the exact denoiser E[x0 | x_t] of a Gaussian mixture (`core.analytic`), so a
sampler's distance to true samples is its own discretisation error and a student's distance is
what distillation lost, nothing else. Two mixtures (the 2-D ring of 8 modes, a random 16-D mixture
of 6) under the linear VP schedule of DDPM (`vp_linear`):

(a) Students (`core.distillation.ConsistencyStudent` around an MLP, CM Algorithm 2 with the EMA
    target, `inverse_step` weighting, the teacher's DDIM step) sampled with the `consistency`
    sampler at 1, 2, 4 and 8 NFE, against the teacher's best engine sampler (ddim, euler, heun,
    dpmpp_2m, dpmpp_3m, unipc; heun's n steps cost 2n - 1 NFE) at 1, 2, 4, 8, 10 and 50 NFE.
    Every grid kind of `schedules.time_grid` (uniform, karras, log_snr) is tried for students and
    teachers alike, for students also built up to `renoise_max` x t_max after their first step
    (`distill.student_grid`, renoise_max 0.2 to 1: CM chose its 2-step midpoint by search too);
    the tables show each at its best grid (every one is in the JSON). Distance:
    sliced W2 to true samples (`core.analytic.sliced_wasserstein`, the same projections for
    all); every sampler starts from the same noise; students are trained with `seeds` seeds and
    reported by their mean (the spread beside it).
(b) The guided case (LCM's w-conditioning): the ring split into two classes (upper and lower half),
    the class-conditional exact teacher guided by D_w = D_null + w (D_c - D_null); one student
    takes w in [1, 3] as an input. At w = 1, 2, 3 its samples of class 0 at 2 and 4 NFE are
    compared with the guided teacher's own samplers at 4 and 10 NFE, both measured against the
    guided teacher at 100 steps of dpmpp_2m (no true distribution exists for w > 1).

Target (issue 19): the student at 2 NFE at least as close to the true distribution as the
teacher's best sampler at 10 NFE, on both mixtures.

    python benchmarks/distill_mixture.py [--quick] [--out DIR]

writes distill_mixture.json, .md and .png into DIR (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffusekit.core import samplers, schedules  # noqa: E402
from diffusekit.core.analytic import GaussianMixture  # noqa: E402
from diffusekit.core.app.distill import student_grid  # noqa: E402
from diffusekit.core.app.results import RESULTS_DIR, fmt, make_record, markdown_table, write_results  # noqa: E402
from diffusekit.core.distillation import (ConsistencyStudent, GuidanceRange, consistency_loss,  # noqa: E402
                                          ema_update)
from diffusekit.core.parameterization import guided  # noqa: E402

SCHEDULE = schedules.get("vp_linear")
MIXTURES = {"ring_2d": GaussianMixture.ring_2d, "random_16d": lambda: GaussianMixture.random(dim=16)}
TEACHER_SAMPLERS = ("ddim", "euler", "heun", "dpmpp_2m", "dpmpp_3m", "unipc")
GRID_KINDS = ("uniform", "karras", "log_snr")
RENOISE = (0.2, 0.4, 0.6, 0.8, 1.0)  # the student's grids: each kind built up to renoise_max x t_max
STUDENT_GRIDS = tuple(f"{kind}@{r:g}" for kind in GRID_KINDS for r in RENOISE)


@dataclass(frozen=True)
class Settings:
    """Sizes of one run; `quick()` is the smoke size (one seed, fewer evaluation samples)."""

    train_steps: dict = field(default_factory=lambda: {"ring_2d": 2000, "random_16d": 4000})
    width: dict = field(default_factory=lambda: {"ring_2d": 128, "random_16d": 256})
    eval_n: dict = field(default_factory=lambda: {"ring_2d": 50_000, "random_16d": 20_000})
    batch: int = 512
    lr: float = 3e-3
    target_decay: float = 0.95  # mu of CM's EMA target (the weights sampled)
    grid_steps: int = 30  # N - 1 of CM's discretisation
    seeds: tuple[int, ...] = (0, 1, 2)
    student_nfe: tuple[int, ...] = (1, 2, 4, 8)
    teacher_nfe: tuple[int, ...] = (1, 2, 4, 8, 10, 50)
    projections: int = 64
    guided_steps: int = 1500
    guided_w: tuple[float, ...] = (1.0, 2.0, 3.0)

    @classmethod
    def quick(cls) -> "Settings":
        return cls(seeds=(0,), eval_n={"ring_2d": 20_000, "random_16d": 10_000})


class MixtureNet(nn.Module):
    """F(x_in [B, D], c_noise [B], label=None [B], guidance=None [B]) -> [B, D]: an MLP on x, Fourier
    features of c_noise and, for a class-conditional student, a one-hot class and the scale w."""

    def __init__(self, dim: int, width: int, n_classes: int = 0, n_freq: int = 8) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.register_buffer("freqs", math.pi * torch.arange(1, n_freq + 1, dtype=torch.float32))
        n_in = dim + 1 + 2 * n_freq + (n_classes + 1 if n_classes else 0)
        self.body = nn.Sequential(nn.Linear(n_in, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                  nn.Linear(width, width), nn.SiLU(), nn.Linear(width, dim))

    def forward(self, x: Tensor, c_noise: Tensor, label: Tensor | None = None,
                guidance: Tensor | None = None) -> Tensor:
        c = c_noise.float()[:, None]
        features = [x.float(), c, torch.sin(c * self.freqs), torch.cos(c * self.freqs)]
        if self.n_classes:
            w = torch.as_tensor(guidance, dtype=torch.float32, device=x.device).expand(x.shape[0])
            features += [nn.functional.one_hot(label, self.n_classes).float(), w[:, None] - 2.0]
        return self.body(torch.cat(features, dim=1)).to(x.dtype)


def distil(student: ConsistencyStudent, teacher, draw, settings: Settings, steps: int, seed: int,
           **loss_options) -> ConsistencyStudent:
    """CM Algorithm 2 (Adam, cosine-decayed rate, the EMA target); `draw(batch, generator)` gives
    (x0, cond). Returns the EMA target, the network sampled."""
    torch.manual_seed(seed)
    target = copy.deepcopy(student).requires_grad_(False)
    optimiser = torch.optim.Adam(student.parameters(), lr=settings.lr)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x0, cond = draw(settings.batch, generator)
        loss = consistency_loss(student, target, teacher, x0, SCHEDULE, n_steps=settings.grid_steps,
                                weighting="inverse_step", generator=generator, cond=cond, **loss_options)
        optimiser.zero_grad()
        loss.mean().backward()
        optimiser.step()
        decay.step()
        ema_update(target, student, settings.target_decay)
    return target.eval()


def teacher_steps(sampler: str, nfe: int) -> int:
    """The most steps of `sampler` within `nfe` evaluations (heun: 2n - 1 per n steps); 0: none."""
    return (nfe + 1) // 2 if sampler == "heun" else nfe


class Distance:
    """Sliced W2 of a sample set [n, D] to a fixed reference [n, D]: `core.analytic.sliced_wasserstein`
    with the same `projections` directions for every set (seed 0), the reference's projections
    sorted once, and each sort along rows (several times faster than along columns)."""

    def __init__(self, reference: Tensor, projections: int) -> None:
        theta = torch.randn(reference.shape[1], projections, generator=torch.Generator().manual_seed(0),
                            dtype=torch.float64)
        self.directions = (theta / theta.norm(dim=0, keepdim=True)).T.contiguous()  # [P, D]
        self.reference = self._sorted(reference)

    def _sorted(self, x: Tensor) -> Tensor:
        return torch.sort(self.directions @ x.double().T, dim=1).values  # [P, n]

    def __call__(self, x: Tensor) -> float:
        if not bool(torch.isfinite(x).all()):
            return math.inf
        return float(((self._sorted(x) - self.reference) ** 2).mean().sqrt())


@torch.no_grad()
def sample(sampler: str, denoiser, noise: Tensor, steps: int, kind: str, cond=None) -> Tensor:
    """`sampler` over `steps` steps of the grid `kind` ("<kind>@<renoise_max>" for a student's
    grid, `distill.student_grid`)."""
    kind, _, renoise = kind.partition("@")
    ts = student_grid(SCHEDULE, steps, kind, float(renoise)) if renoise else schedules.time_grid(SCHEDULE, steps, kind)
    return samplers.get(sampler)(denoiser, noise, ts, SCHEDULE, generator=torch.Generator().manual_seed(3),
                                 cond=cond)


def best_of(results: dict[str, float]) -> tuple[str, float]:
    key = min(results, key=lambda k: results[k])
    return key, results[key]


def run_mixture(name: str, settings: Settings, log) -> dict:
    """Part (a) on one mixture: teacher samplers x grids x NFE, students x seeds x grids x NFE."""
    mixture = MIXTURES[name]()
    teacher = mixture.denoiser(SCHEDULE)
    n = settings.eval_n[name]
    distance = Distance(mixture.sample(n, torch.Generator().manual_seed(1)), settings.projections)
    noise = torch.randn(n, mixture.dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    floor = distance(mixture.sample(n, torch.Generator().manual_seed(10)))
    teacher_rows = {}
    for nfe in settings.teacher_nfe:
        tried = {}
        for sampler in TEACHER_SAMPLERS:
            steps = teacher_steps(sampler, nfe)
            if steps < 1:
                continue
            for kind in GRID_KINDS:
                tried[f"{sampler}/{kind}"] = distance(sample(sampler, teacher, noise, steps, kind))
        config, best = best_of(tried)
        teacher_rows[nfe] = {"best": best, "config": config, "all": tried}
        log(f"{name}: teacher at {nfe} NFE: {best:.4f} ({config})")

    def draw(batch: int, generator: torch.Generator):
        return mixture.sample(batch, generator).float(), None

    students, seconds = [], []
    for seed in settings.seeds:
        started = time.perf_counter()
        net = MixtureNet(mixture.dim, settings.width[name])
        students.append(distil(ConsistencyStudent(net, SCHEDULE), teacher, draw, settings,
                               settings.train_steps[name], seed))
        seconds.append(time.perf_counter() - started)
    student_rows = {}
    for nfe in settings.student_nfe:
        per_kind = {}
        for kind in STUDENT_GRIDS:
            per_kind[kind] = [distance(sample("consistency", s, noise.float(), nfe, kind)) for s in students]
        kind = min(per_kind, key=lambda k: statistics.fmean(per_kind[k]))
        values = per_kind[kind]
        student_rows[nfe] = {"mean": statistics.fmean(values), "grid": kind, "seeds": values,
                             "spread": (max(values) - min(values)) / 2, "all": per_kind}
        log(f"{name}: student at {nfe} NFE: {student_rows[nfe]['mean']:.4f} ({kind})")
    target = student_rows[2]["mean"] <= teacher_rows[10]["best"]
    return {"floor": floor, "teacher": teacher_rows, "student": student_rows, "n_eval": n,
            "train_steps": settings.train_steps[name], "train_seconds": statistics.fmean(seconds),
            "target_student_2_nfe_le_teacher_10_nfe": target}


HALVES = [GaussianMixture(GaussianMixture.ring_2d().means[k], GaussianMixture.ring_2d().stds[k],
                          torch.full((4,), 0.25, dtype=torch.float64)) for k in ([0, 1, 2, 3], [4, 5, 6, 7])]


def class_teacher(x: Tensor, t: Tensor, label: Tensor | None = None) -> Tensor:
    """The exact class-conditional denoiser E[x0 | x_t, label] of the two half rings; label None:
    the whole ring (the unconditional branch of guidance)."""
    if label is None:
        return GaussianMixture.ring_2d().denoiser(SCHEDULE)(x, t)
    upper, lower = (h.denoiser(SCHEDULE)(x, t) for h in HALVES)
    return torch.where(label[:, None] == 0, upper, lower)


def run_guided(settings: Settings, log) -> dict:
    """Part (b): one w-conditioned student of the guided class teacher, w in [1, 3]."""

    def draw(batch: int, generator: torch.Generator):
        label = torch.randint(2, (batch,), generator=generator)
        x0 = torch.where(label[:, None] == 0, HALVES[0].sample(batch, generator), HALVES[1].sample(batch, generator))
        return x0.float(), {"label": label}

    started = time.perf_counter()
    student = distil(ConsistencyStudent(MixtureNet(2, settings.width["ring_2d"], n_classes=2), SCHEDULE),
                     class_teacher, draw, settings, settings.guided_steps, settings.seeds[0],
                     guidance=GuidanceRange(uncond={"label": None}, w_min=1.0, w_max=3.0))
    seconds = time.perf_counter() - started
    n = settings.eval_n["ring_2d"]
    noise = torch.randn(n, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    label = torch.zeros(n, dtype=torch.long)
    rows = {}
    for w in settings.guided_w:
        teacher_w = guided(class_teacher, w, {"label": None})
        reference = sample("dpmpp_2m", teacher_w, noise, 100, "log_snr", cond={"label": label})
        distance = Distance(reference, settings.projections)
        row = {}
        for nfe in (2, 4):
            row[f"student_{nfe}"] = min(distance(sample("consistency", student, noise.float(), nfe, kind,
                                                        cond={"label": label, "guidance": torch.tensor(w)}))
                                        for kind in STUDENT_GRIDS)
        for nfe in (4, 10):  # the guided teacher evaluates D twice a step
            tried = {f"{s}/{k}": distance(sample(s, teacher_w, noise, teacher_steps(s, nfe // 2), k,
                                                  cond={"label": label}))
                     for s in TEACHER_SAMPLERS if teacher_steps(s, nfe // 2) >= 1 for k in GRID_KINDS}
            row[f"teacher_{nfe}"], row[f"teacher_{nfe}_config"] = best_of(tried)[1], best_of(tried)[0]
        rows[w] = row
        log(f"guided w={w}: {row}")
    return {"rows": rows, "train_steps": settings.guided_steps, "train_seconds": seconds}


def markdown(metrics: dict, settings: Settings) -> str:
    lines = ["Teacher: the exact denoiser of each mixture under `vp_linear`; distance: sliced W2 to "
             f"true samples ({settings.projections} projections); students: "
             f"{len(settings.seeds)} training seed(s), mean (half the range across seeds). Each system "
             "at its best time grid (`uniform`, `karras`, `log_snr`; a student's `kind@r`: the kind "
             "built up to r x t_max after its first step), each teacher NFE at its best sampler.", ""]
    for name in MIXTURES:
        m = metrics[name]
        headers = ["NFE", "student (consistency)", "student grid", "teacher's best", "teacher's sampler / grid"]
        nfes = sorted(set(m["student"]) | set(m["teacher"]))
        rows = []
        for nfe in nfes:
            s, t = m["student"].get(nfe), m["teacher"].get(nfe)
            rows.append([nfe, None if s is None else f"{fmt(s['mean'])} (±{fmt(s['spread'], 2)})",
                         "-" if s is None else s["grid"], None if t is None else t["best"],
                         "-" if t is None else t["config"]])
        verdict = "met" if m["target_student_2_nfe_le_teacher_10_nfe"] else "not met"
        lines += [f"## {name}", "",
                  f"{m['train_steps']} distillation steps ({fmt(m['train_seconds'])} s a student, one "
                  f"CPU thread); noise floor (two true sample sets of {m['n_eval']}): {fmt(m['floor'])}.", "",
                  markdown_table(headers, rows, digits=3), "",
                  f"Target: the student at 2 NFE ({fmt(m['student'][2]['mean'])}) at least as close as the "
                  f"teacher's best at 10 NFE ({fmt(m['teacher'][10]['best'])}): **{verdict}**.", ""]
    g = metrics["guided"]
    headers = ["w", "student 2 NFE", "student 4 NFE", "teacher's best 4 NFE", "teacher's best 10 NFE"]
    rows = [[w, r["student_2"], r["student_4"], r["teacher_4"], r["teacher_10"]] for w, r in g["rows"].items()]
    lines += ["## Guided: one student for every w (LCM's w-conditioning)", "",
              f"Two classes (the upper and lower half of the ring), the exact class-conditional teacher "
              f"guided at w; one student takes w in [1, 3] as an input ({g['train_steps']} steps, "
              f"{fmt(g['train_seconds'])} s). Distance of class-0 samples to the guided teacher's "
              "100-step dpmpp_2m samples at the same w; the guided teacher spends 2 NFE a step.", "",
              markdown_table(headers, rows, digits=3), "", "![distance against NFE](distill_mixture.png)"]
    return "\n".join(lines)


def figure(metrics: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), dpi=100)
    FigureCanvasAgg(fig)
    for i, name in enumerate(MIXTURES):
        m = metrics[name]
        ax = fig.add_subplot(1, 2, i + 1)
        nfe = sorted(m["teacher"])
        ax.plot(nfe, [m["teacher"][k]["best"] for k in nfe], "o-", label="teacher's best sampler")
        nfe = sorted(m["student"])
        ax.errorbar(nfe, [m["student"][k]["mean"] for k in nfe], yerr=[m["student"][k]["spread"] for k in nfe],
                    fmt="s-", label="consistency student")
        ax.axhline(m["floor"], color="k", ls="--", lw=1, label="noise floor")
        ax.set(xscale="log", yscale="log", xlabel="NFE", ylabel="sliced W2 to true samples", title=name)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def run_benchmark(settings: Settings, out: Path, log=print) -> dict:
    started = time.perf_counter()
    metrics = {name: run_mixture(name, settings, log) for name in MIXTURES}
    metrics["guided"] = run_guided(settings, log)
    metrics["targets_met"] = all(metrics[n]["target_student_2_nfe_le_teacher_10_nfe"] for n in MIXTURES)
    metrics["settings"] = asdict(settings)
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    record = make_record("distill_mixture", metrics, {})
    out.mkdir(parents=True, exist_ok=True)
    write_results(record, markdown(metrics, settings), out,
                  title="Consistency distillation of an exact mixture teacher")
    figure(metrics, out / "distill_mixture.png")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one training seed, fewer evaluation samples")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="output folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    record = run_benchmark(Settings.quick() if args.quick else Settings(), args.out)
    print(f"target (student 2 NFE <= teacher's best 10 NFE on both mixtures) met: "
          f"{record['metrics']['targets_met']}; {record['metrics']['seconds']} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
