"""The `Domain` base class: everything a plugin author implements, and nothing more.

A domain ties its configuration, data, network, process, metrics and outputs together. Training,
sampling, checkpoints, run directories and the command line come from the toolkit, which calls
these methods with the resolved OmegaConf config of a run:

    default_config()                   the domain's defaults (usually its `config.yaml`)
    build_datamodule(cfg)              a LightningDataModule yielding batch dicts (see below)
    build_network(cfg)                 the raw network net(x_in, c_noise, **cond)
    process(cfg)                       the engine process: GaussianDiffusion or a discrete one
    evaluate(batch, samples, cfg)      quality metrics of samples against a batch -> {name: float}
    write_samples(samples, out, cfg)   files people look at (audio, PNG grids, SDF, text)
    benchmark(cfg)                     what `toolkit benchmark --domain NAME` runs
    prepare(cfg)                       build the offline data cache (`toolkit prepare`)

Repair (`toolkit inpaint`, docs/repair.md) needs two more, and `inpaint_regions`; the toolkit does
the rest (loading the model, `--method`, `--steps`, `--sampler`, `--seed`, `-n`, the sampling):

    read_damaged(path, region, cfg)    a user's file + the region to fill -> `Damaged`: a batch of
                                       one example in the model's data space, the known mask, cond
    write_repaired(samples, damaged, out, cfg)   the repaired files, inside `out`
    repair_benchmark(cfg)              what `toolkit benchmark --domain NAME --repair` runs
    repair_mean()                      optional: how K repairs become their mean (`--average K`)

Batches are dicts: "x0" the clean data [B, ...]; optionally "cond" (keyword arguments passed to
the network, e.g. {"low_res": ...}) and "mask" ([B, N] padding / node mask). Built-in domains
subclass this exactly as a third-party plugin does and register through the same hook.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

#: The kinds of region `toolkit inpaint` passes on (its options --mask, --box, --span, --keep).
REGION_KINDS = ("mask", "box", "span", "keep")


@dataclass(frozen=True)
class Region:
    """What to repair in an input, as the command line gives it; each domain reads the kinds it
    declares in `Domain.inpaint_regions` and says what their numbers mean (pixels, seconds, atom
    indices, characters):

    mask:  a file marking the region to fill (`--mask FILE`; an image: white = fill);
    boxes: rectangles to fill, (x0, y0, x1, y1) each (`--box X0,Y0,X1,Y1`, repeatable);
    spans: intervals to fill along the input's one axis, (start, end) each (`--span START-END`,
           repeatable);
    keep:  the indices of the elements to keep, everything else is filled (`--keep 0,1,4-7`).
    """

    mask: Path | None = None
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    spans: tuple[tuple[float, float], ...] = ()
    keep: tuple[int, ...] | None = None

    def kinds(self) -> tuple[str, ...]:
        """The kinds given, in `REGION_KINDS` order."""
        given = {"mask": self.mask is not None, "box": bool(self.boxes), "span": bool(self.spans),
                 "keep": self.keep is not None}
        return tuple(kind for kind in REGION_KINDS if given[kind])


@dataclass
class Damaged:
    """A user's input read for repair by `Domain.read_damaged`.

    batch:  one example as a batch of one, in the model's data space, as the domain's batches
            are: "x0" [1, ...] the input (any finite value where it is to be filled), "cond" (the
            network's conditioning made from the damaged input only, never from what is
            missing) and "mask" (padding / atoms) where the domain has them;
    known:  bool, batch["x0"]'s shape or one that broadcasts to it (or a leading [1, N]): True
            where the input is kept;
    source: whatever `write_repaired` needs of the input (its pixels, samples, atoms, text);
    name:   a plain name for the written files (letters, digits, '._+-').
    """

    batch: dict
    known: Any
    source: Any = None
    name: str = "input"


class Domain:
    """Base class of every domain. Subclasses set `name` and `description` and implement the
    `build_*`, `process`, `evaluate` and `write_samples` methods; `prepare` and `benchmark` have
    defaults. `config_file` points at the domain's defaults YAML (default: `config.yaml` beside
    the module that defines the subclass). `adapter_targets` names the modules a LoRA adapter
    wraps by default (patterns as in `adapter.targets`; None: every Linear / Conv layer).
    `control_blocks` names the blocks a ControlNet joins by default (patterns as in
    `control.blocks`; None: the engine's rule, see `diffusekit.core.control.default_blocks`),
    and `control_hints()` the domain's hint makers. `guidance_embedding` names the module whose
    output is the network's noise-level embedding [B, E], where a distilled student that takes
    the guidance scale w as an input adds its embedding of w (`toolkit distill`,
    `diffusekit.core.distillation.GuidanceInput`; None: only students of one fixed w)."""

    name: str = ""
    description: str = ""
    config_file: str | Path | None = None
    #: the region kinds (`REGION_KINDS`) `read_damaged` reads; empty: the domain cannot inpaint
    inpaint_regions: tuple[str, ...] = ()
    adapter_targets: tuple[str, ...] | None = None
    control_blocks: tuple[str, ...] | None = None
    guidance_embedding: str | None = None

    def control_hints(self) -> dict[str, Any]:
        """The domain's hint makers for ControlNets, by name (`control.hint`): each is
        `maker(batch) -> hint [B, ...]`, made from a batch of training examples (batch["x0"],
        its "cond"), e.g. an edge map of an image. A map hint is [B, C, *spatial] with values
        as a hint file gives them (images: [0, 1]); a vector hint is [B, D]. Default: none
        (the built-in `x0` remains)."""
        return {}

    def default_config(self) -> DictConfig:
        """The domain's defaults; by default its `config.yaml`. Every knob a user may turn."""
        path = Path(self.config_file) if self.config_file else self._module_dir() / "config.yaml"
        if not path.exists():
            raise FileNotFoundError(f"domain {self.name!r} has no default config at {path}")
        return OmegaConf.load(path)

    def _module_dir(self) -> Path:
        import sys

        return Path(sys.modules[type(self).__module__].__file__).parent

    def prepare(self, cfg: DictConfig) -> None:
        """Build the offline data cache. Default: the data module's `prepare_data()`."""
        self.build_datamodule(cfg).prepare_data()

    def build_datamodule(self, cfg: DictConfig) -> Any:
        """A `lightning.LightningDataModule` whose loaders yield batch dicts."""
        raise NotImplementedError

    def build_network(self, cfg: DictConfig) -> Any:
        """The raw network `net(x_in, c_noise, **cond)` (a torch.nn.Module)."""
        raise NotImplementedError

    def process(self, cfg: DictConfig) -> Any:
        """The engine process (e.g. `diffusekit.core.process.GaussianDiffusion`) with
        `training_loss(network, batch)` and `generate(network, batch, ...)`."""
        raise NotImplementedError

    def evaluate(self, batch: dict, samples: Any, cfg: DictConfig) -> dict[str, float]:
        """Quality metrics of `samples` generated for `batch` (the batch holds the references;
        for a control run its `cond` also holds the hints the samples were drawn for, under the
        control's keyword `hint`, and `cfg.control.hint` names their maker)."""
        raise NotImplementedError

    def write_samples(self, samples: Any, out_dir: Path, cfg: DictConfig) -> list[Path]:
        """Write samples as files people look at; return the paths written."""
        raise NotImplementedError

    def benchmark(self, cfg: DictConfig) -> dict[str, Any]:
        """The domain's benchmark (`toolkit benchmark`); returns its metrics dict."""
        raise NotImplementedError(f"domain {self.name!r} has no benchmark")

    def finetune_target(self, cfg: DictConfig) -> dict[str, Any]:
        """The shifted target set of the customisation benchmark (`toolkit benchmark --finetune`):
        {"overrides": ["data.key=value", ...] selecting at most 10% of the base's training data
        with a real shift, "metric": the metric compared (one of `evaluate`'s, or "test_loss": the
        training objective on held-out target examples, which the benchmark computes for every
        domain), "higher_is_better": bool}."""
        raise NotImplementedError(f"domain {self.name!r} declares no finetune_target, so it "
                                  "has no customisation benchmark")

    def read_damaged(self, path: Path, region: Region, cfg: DictConfig) -> Damaged:
        """Read the user's file `path` and the `region` to fill (of the kinds in
        `inpaint_regions`; the toolkit refuses other kinds before calling) into a `Damaged`: the
        known part in the model's data space, the known mask and the conditioning, made from the
        damaged input alone. Bad input is a `diffusekit.core.errors.DataError` (an unreadable
        file, a region outside the input, a mask of another size) in one line. Never unpickle."""
        raise NotImplementedError(f"domain {self.name!r} cannot read an input to repair "
                                  "(it implements no read_damaged)")

    def write_repaired(self, samples: Any, damaged: Damaged, out_dir: Path,
                       cfg: DictConfig) -> list[Path]:
        """Write the repaired `samples` (what the process's `inpaint` returned for
        `damaged.batch` repeated `-n` times) as the domain's files, only inside `out_dir`
        (names the domain chooses, or `damaged.name` + a fixed suffix); return the paths."""
        raise NotImplementedError(f"domain {self.name!r} cannot write repaired samples "
                                  "(it implements no write_repaired)")

    def repair_mean(self) -> Callable[[list[Any]], Any] | None:
        """How `toolkit inpaint --average K` (`inpaint.average`) turns K repairs of the same batch
        (what the process's `inpaint` returned, each drawn with other noise) into one: a function
        from the list of K to their mean, in the form `write_repaired` takes. The mean of
        posterior draws estimates the posterior mean, the repair of least squared error (it wins
        the repair benchmarks' PSNR and L1). None, the default: this domain's repairs are not
        averaged (a mean of molecules or of token sequences is neither)."""
        return None

    def repair_benchmark(self, cfg: DictConfig) -> dict[str, Any]:
        """The repair benchmark (`toolkit benchmark --domain NAME --repair [--quick]`): the
        domain's repair of held-out examples against classic baselines; returns its metrics."""
        raise NotImplementedError(f"domain {self.name!r} has no repair benchmark")

    def __repr__(self) -> str:
        return f"<Domain {self.name}: {self.description}>"
