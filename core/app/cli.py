"""`toolkit` (also `diffusekit`): the command line.

    toolkit domains | plugins                        what is installed
    toolkit config --domain D [key=value ...]        the resolved config of a run (YAML)
    toolkit prepare --domain D                       build the domain's offline data cache
    toolkit train --domain D [key=value ...] [--preset gpu] [--config f.yaml] [--budget 10m]
                  [--resume [RUN]]
    toolkit sample --run RUN [--sampler S] [--steps N] [-n K] [--hint FILE]
    toolkit evaluate --run RUN                       the domain's metrics -> metrics.json
    toolkit inpaint --run RUN INPUT [--mask F | --box B | --span S | --keep I] [--method M]
    toolkit distill --run TEACHER [key=value ...]    a 1-4 step consistency student (a new run)
    toolkit benchmark --domain D [--quick] [--finetune | --repair | --distill]

Plugins add commands through the `register_commands(cli)` hook. Bad input (an unknown domain,
sampler or config key, a missing or corrupt run folder or checkpoint, an unreadable file, a NaN
loss) ends with one `error: ...` line on stderr and a non-zero exit status, never a traceback:
`main` turns the toolkit's own errors (`diffusekit.core.errors`, registry look-ups) into that
line. This is the only core module that imports `diffusekit.plugins`, and only inside commands.
Lightning is imported only by the commands that train or sample.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from omegaconf.errors import OmegaConfBaseException

from diffusekit.core.app import config as configuration
from diffusekit.core.app.command_options import (base_option, compose_config, config_files,
                                                 config_option, domain_option, model_options,
                                                 overrides_argument, preset_option, weighted_runs)
from diffusekit.core.errors import ConfigError, DiffusekitError, RunDirError
from diffusekit.core.registry import UnknownNameError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# ----------------------------------------------------------------------------- helpers
def get_domain(name: str) -> Any:
    """The installed domain called `name` (plugins are discovered on first use)."""
    from diffusekit.core.app.training.models import installed_domain

    return installed_domain(name)


def _domain_names() -> list[str]:
    from diffusekit import plugins

    return plugins.domain_names()


def _check_sampler(name: str | None) -> None:
    if name is None:
        return
    from diffusekit import plugins  # noqa: F401  (plugins' samplers join the registry)
    from diffusekit.core import samplers

    samplers.get(name)  # UnknownNameError naming the known samplers


def _open_run(path: str) -> Any:
    from diffusekit.core.app.training.runs import RunDir

    return RunDir.open(path)


def _run_domain(run: Any) -> tuple[Any, Any]:
    """The domain a run folder was trained with, and the run's config checked against that
    domain's defaults (a config of another domain is one `ConfigError` line)."""
    name = run.load_config().get("domain")
    if not name or not isinstance(name, str):
        raise RunDirError(f"run {str(run.path)!r}: config.yaml names no domain")
    domain = get_domain(name)
    return domain, run.load_config(domain)


def _echo_paths(paths: list[Path], what: str) -> None:
    if not paths:
        click.echo(f"{what}: no files written")
        return
    folders = sorted({str(Path(p).parent) for p in paths})
    click.echo(f"{what}: {len(paths)} file(s) in {', '.join(folders)}")


# ---------------------------------------------------------------------------- commands
@click.group(context_settings=CONTEXT)
@click.version_option(package_name="diffusekit", prog_name="diffusekit")
def cli() -> None:
    """diffusekit: train, sample and evaluate diffusion models of any installed domain."""


@cli.command()
def domains() -> None:
    """List the installed domains."""
    names = _domain_names()
    if not names:
        click.echo("no domains installed")
    for name in names:
        click.echo(f"{name:<16} {get_domain(name).description}")


@cli.command()
def plugins() -> None:
    """List the plugins found (loaded, failed with their error, or skipped)."""
    from diffusekit import plugins as plugin_api

    records = plugin_api.plugin_report()
    if not records:
        click.echo("no plugins found")
    for r in records:
        record = r.as_dict() if hasattr(r, "as_dict") else dict(r)
        provides = "; ".join(f"{k}: {', '.join(v)}" for k, v in record.get("provides", {}).items()
                             if v)
        dist = f"{record.get('distribution') or '?'} {record.get('version') or ''}".strip()
        line = f"{record['name']:<16} {record['status']:<8} {dist}"
        if provides:
            line += f"  [{provides}]"
        if record.get("error"):
            line += f"  error: {record['error']}"
        click.echo(line)


@cli.command("config", context_settings=CONTEXT)
@domain_option
@preset_option
@config_option
@overrides_argument
def config_command(domain: str, preset: str | None, files: tuple[str, ...],
                   overrides: tuple[str, ...]) -> None:
    """Print the resolved config of a run of DOMAIN (defaults, preset, files, overrides) as
    YAML."""
    click.echo(configuration.to_yaml(compose_config(get_domain(domain), files, overrides, preset)),
               nl=False)


@cli.command()
@domain_option
@preset_option
@config_option
@overrides_argument
def prepare(domain: str, preset: str | None, files: tuple[str, ...],
            overrides: tuple[str, ...]) -> None:
    """Build DOMAIN's offline data cache."""
    dom = get_domain(domain)
    dom.prepare(compose_config(dom, files, overrides, preset))
    click.echo(f"prepared the data of domain {dom.name!r}")


@cli.command()
@click.option("--domain", "-d", help="The domain (toolkit domains); not needed with --resume RUN.")
@preset_option
@config_option
@click.option("--resume", is_flag=False, flag_value="latest", default=None, metavar="[RUN]",
              help="Continue a run from its last checkpoint: its folder, or alone the latest run "
                   "of --domain.")
@click.option("--init-from", "init_from", default=None, metavar="PATH_OR_ID",
              help="Start from a model's weights (a model or run folder, or user/name): full "
                   "fine-tuning, or the base of adapter.kind=lora.")
@click.option("--control-of", "control_of", default=None, metavar="PATH_OR_ID",
              help="Train a ControlNet on this frozen model (control.of); control.hint=NAME "
                   "says how each example's hint is made.")
@click.option("--budget", default=None, metavar="DURATION",
              help="Stop training after this wall-clock time (trainer.max_time): 90s, 10m, "
                   "1.5h or DD:HH:MM:SS; the run still ends with its model, samples and metrics.")
@overrides_argument
def train(domain: str | None, preset: str | None, files: tuple[str, ...], resume: str | None,
          init_from: str | None, control_of: str | None, budget: str | None,
          overrides: tuple[str, ...]) -> None:
    """Train a model of DOMAIN; KEY=VALUE overrides any config value (toolkit config lists them).

    The run folder is runs/<domain>/<timestamp>/ (config, checkpoints, model.safetensors,
    samples, logs, loss curve, metrics.json)."""
    if resume is not None and "=" in resume and not Path(resume).exists():
        overrides, resume = (resume, *overrides), "latest"  # `--resume key=value ...`
    if budget is not None:
        configuration.duration_seconds(budget, "--budget")  # `--budget abc`: one error line
        overrides = (*overrides, f"trainer.max_time={json.dumps(budget)}")
    if init_from is not None:
        if resume is not None:
            raise click.UsageError("--init-from starts a new run; it does not go with --resume.")
        overrides = (*overrides, f"init_from={json.dumps(init_from)}")
    if control_of is not None:
        if resume is not None or init_from is not None:
            raise click.UsageError("--control-of starts a new run on a frozen model; it does not "
                                   "go with --resume or --init-from.")
        overrides = (*overrides, f"control.of={json.dumps(control_of)}")
    if resume is None:
        if not domain:
            raise click.UsageError("Missing option '--domain' (or --resume RUN).")
        dom = get_domain(domain)
        cfg = compose_config(dom, files, overrides, preset)
        run = None
    else:
        run, dom, cfg = _resume_target(resume, domain)
        cfg = configuration.override(cfg, files=config_files(dom, preset, files),
                                     overrides=overrides)
    _check_sampler(cfg.sample.sampler)

    from diffusekit.core.app.training.fit import is_launched_worker, train as train_run

    result = train_run(dom, cfg, resume=run)
    if is_launched_worker():
        return None
    m = result.read_metrics()
    if run is not None and m.get("resumed_at_steps", [None])[-1] == m.get("step"):
        click.echo(f"run {result.path} is already at step {m.get('step')} (trainer.max_steps); "
                   "nothing trained, its weights re-exported from the last checkpoint")
        return None
    loss = m.get("val_loss")
    loss_text = f", validation loss {loss:.4g}" if isinstance(loss, float) else ""
    if m.get("stopped_by") == "max_time":
        loss_text += " (stopped by the time budget)"
    click.echo(f"trained {dom.name} to step {m.get('step')} in {m.get('train_seconds')} s"
               f"{loss_text}: {result.path}")
    return None


def _resume_target(resume: str, domain: str | None) -> tuple[Any, Any, Any]:
    from diffusekit.core.app.training.runs import RunDir

    if resume == "latest":
        if not domain:
            raise click.UsageError("--resume without a run folder needs --domain.")
        dom = get_domain(domain)
        root = compose_config(dom, (), ()).run_dir
        run = RunDir.latest(root, dom.name)
    else:
        run = RunDir.open(resume)
    dom, cfg = _run_domain(run)
    if domain and domain != dom.name:
        raise ConfigError(f"run {str(run.path)!r} is of domain {dom.name!r}, not {domain!r}")
    return run, dom, cfg


@cli.command()
@click.option("--run", "run_dir", type=click.Path(), default=None, help="The teacher: a run folder.")
@click.option("--model", "model_id", default=None, metavar="PATH_OR_ID",
              help="The teacher: a model folder or a Hugging Face id user/name.")
@click.option("--domain", "-d", default=None, help="Refuse a teacher of any other domain.")
@click.option("--resume", default=None, metavar="RUN", type=click.Path(),
              help="Continue a distillation run from its last checkpoint.")
@config_option
@overrides_argument
def distill(run_dir: str | None, model_id: str | None, domain: str | None, resume: str | None,
            files: tuple[str, ...], overrides: tuple[str, ...]) -> None:
    """Distil a teacher into a 1-4 step consistency student: a new run whose sample / evaluate
    use the consistency sampler at distill.steps steps (KEY=VALUE: distill.steps, distill.kind=lora,
    distill.max_steps, ... as in toolkit config)."""
    from diffusekit.core.app.distill import distill_config, is_distill_run
    from diffusekit.core.app.training.fit import train as train_run

    if resume is not None:
        if run_dir is not None or model_id is not None:
            raise click.UsageError("--resume continues a distillation run; it does not go with "
                                   "--run or --model.")
        run, dom, cfg = _resume_target(resume, domain)
        if not is_distill_run(cfg):
            raise ConfigError(f"run {resume!r} is not a distillation run (distill.teacher is null)")
        cfg = configuration.override(cfg, files=files, overrides=overrides)
    else:
        if (run_dir is None) == (model_id is None):
            raise click.UsageError("Give the teacher: exactly one of --run RUN and --model PATH_OR_ID.")
        from diffusekit.core.app.training.models import domain_name, resolve

        teacher = run_dir or model_id
        dom = get_domain(domain_name(resolve(teacher)))
        if domain and domain != dom.name:
            raise ConfigError(f"teacher {teacher!r} is of domain {dom.name!r}, not {domain!r}")
        run = None
        dom, cfg = distill_config(teacher, files=files, overrides=overrides, domain=dom)
    result = train_run(dom, cfg, resume=run)
    m = result.read_metrics()
    click.echo(f"distilled a {cfg.distill.kind} student of {cfg.distill.teacher} to step "
               f"{m.get('step')} in {m.get('train_seconds')} s ({cfg.sample.sampler}, "
               f"{cfg.sample.steps} steps): {result.path}")


def _open_model(run_dir: str | None, model_id: str | None, adapter_scale: float | None,
                adapter_args: tuple[str, ...], base: str | None = None,
                control_scale: float | None = None, hint: str | None = None,
                control_args: tuple[str, ...] = ()) -> tuple[Any, Any]:
    """(model, run or None) for the --run / --model options."""
    model, run = _load_model(run_dir, model_id, adapter_scale, adapter_args, base, control_scale)
    if control_args or hint is not None:
        from diffusekit.core.app.controls import add_controls, use_hint_file

        add_controls(model, weighted_runs("--control", control_args))
        if hint is not None:  # the hints of the first control
            use_hint_file(model, hint)
    return model, run


def _load_model(run_dir: str | None, model_id: str | None, adapter_scale: float | None,
                adapter_args: tuple[str, ...], base: str | None,
                control_scale: float | None) -> tuple[Any, Any]:
    from diffusekit.core.app.controls import Controlled
    from diffusekit.core.app.training.inference import add_adapters, run_model
    from diffusekit.core.app.training.models import domain_name, load_model, resolve

    if (run_dir is None) == (model_id is None):
        raise click.UsageError("Give exactly one of --run RUN and --model PATH_OR_ID.")
    adapters = weighted_runs("--adapter", adapter_args)
    if run_dir is not None:
        run = _open_run(run_dir)
        dom, _ = _run_domain(run)
        model = run_model(dom, run, adapter_scale=adapter_scale, base=base,
                          control_scale=control_scale)
    else:
        folder = resolve(model_id)
        run = None
        model = load_model(folder, adapter_scale=adapter_scale, base=base,
                           domain=get_domain(domain_name(folder)), control_scale=control_scale)
    if adapters and isinstance(model.network, Controlled):
        # LoRA on the base under the control (the control's copy stays as it was trained)
        from dataclasses import replace

        add_adapters(replace(model, network=model.network.base), adapters)
        return model, run
    return add_adapters(model, adapters), run


@cli.command()
@model_options
@click.option("--sampler", "-s", default=None, help="A sampler name (default: the run's).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Sampler steps.")
@click.option("-n", "n", type=click.IntRange(min=1), default=None, help="Number of samples.")
@click.option("--seed", type=int, default=None, help="Seed of the sampling noise.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for the files (default: RUN/samples/<sampler>-<steps>/, or "
                   "samples/<model>/<sampler>-<steps>/ with --model).")
@overrides_argument
def sample(run_dir: str | None, model_id: str | None, adapter_args: tuple[str, ...],
           adapter_scale: float | None, base: str | None, control_scale: float | None,
           control_args: tuple[str, ...], hint: str | None, sampler: str | None,
           steps: int | None, n: int | None, seed: int | None, out: str | None,
           overrides: tuple[str, ...]) -> None:
    """Generate samples with a run's or a model's EMA weights, written as the domain's files;
    KEY=VALUE overrides change the model's config for this call (e.g. sample.guidance=2)."""
    _check_sampler(sampler)
    model, run = _open_model(run_dir, model_id, adapter_scale, adapter_args, base, control_scale,
                             hint, control_args)
    from diffusekit.core.app.training.inference import sample_model
    from diffusekit.core.app.training.runs import child_path

    root = run.samples if run is not None else child_path(Path("samples"), model.name, "model")
    paths = sample_model(model, sampler=sampler, steps=steps, n=n, seed=seed,
                         out_dir=Path(out) if out else None, out_root=root, overrides=overrides)
    _echo_paths(paths, "samples")


@cli.command()
@model_options
@click.option("--sampler", "-s", default=None, help="A sampler name (default: the run's).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Sampler steps.")
@click.option("-n", "n", type=click.IntRange(min=1), default=None,
              help="Test examples to generate for (default: sample.eval_n).")
@overrides_argument
def evaluate(run_dir: str | None, model_id: str | None, adapter_args: tuple[str, ...],
             adapter_scale: float | None, base: str | None, control_scale: float | None,
             control_args: tuple[str, ...], hint: str | None, sampler: str | None,
             steps: int | None, n: int | None, overrides: tuple[str, ...]) -> None:
    """The domain's metrics of a run's or a model's samples on its test split (a run's also go
    into its metrics.json); KEY=VALUE overrides change the model's config for this call."""
    _check_sampler(sampler)
    model, run = _open_model(run_dir, model_id, adapter_scale, adapter_args, base, control_scale,
                             hint, control_args)
    from diffusekit.core.app.training.inference import evaluate_model

    result = evaluate_model(model, sampler=sampler, steps=steps, n=n, overrides=overrides)
    click.echo(f"evaluated {result['n']} examples with {result['sampler']}, "
               f"{result['steps']} steps:")
    for key, value in sorted(result["metrics"].items()):
        click.echo(f"  {key:<24} {value:.6g}")
    if run is not None and not adapter_args and adapter_scale is None and base is None \
            and control_scale is None and hint is None and not control_args:
        run.update_metrics({"evaluation": result})
        click.echo(f"written to {run.metrics_file}")


@cli.command()
@model_options
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False))
@click.option("--mask", "mask", type=click.Path(dir_okay=False), default=None,
              help="A file marking what to fill (an image: white = fill).")
@click.option("--box", "boxes", multiple=True, metavar="X0,Y0,X1,Y1",
              help="A rectangle to fill, in pixels (repeatable).")
@click.option("--span", "spans", multiple=True, metavar="START-END",
              help="An interval to fill along the input's axis: seconds of audio, characters "
                   "of text (repeatable).")
@click.option("--keep", "keep", default=None, metavar="I,J,K-L",
              help="The elements to keep (0-based atom indices); the rest is generated.")
@click.option("--method", "method", default=None, metavar="replace|repaint",
              help="How the known part steers the sampler (default: inpaint.method; RePaint "
                   "uses inpaint.jump_length and inpaint.resamplings).")
@click.option("--sampler", "-s", default=None, help="A sampler name (default: the model's).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Sampler steps.")
@click.option("-n", "n", type=click.IntRange(min=1, max=1024), default=1, show_default=True,
              help="Repairs (completions) to draw.")
@click.option("--seed", type=int, default=None, help="Seed of the sampling noise.")
@click.option("--average", type=click.IntRange(min=1, max=1024), default=None, metavar="K",
              help="Write each repair as the mean of K drawn with other noise (default: "
                   "inpaint.average): the least-squares repair, blurrier where it is unsure.")
@click.option("--out", type=click.Path(file_okay=False), default="repaired", show_default=True,
              help="The folder the repaired files go into (nothing is written elsewhere).")
@overrides_argument
def inpaint(run_dir: str | None, model_id: str | None, adapter_args: tuple[str, ...],
            adapter_scale: float | None, base: str | None, control_scale: float | None,
            control_args: tuple[str, ...], hint: str | None, input_path: str, mask: str | None,
            boxes: tuple[str, ...], spans: tuple[str, ...], keep: str | None,
            method: str | None, sampler: str | None, steps: int | None, n: int,
            seed: int | None, average: int | None, out: str, overrides: tuple[str, ...]) -> None:
    """Repair INPUT with a model: fill the region given (--mask, --box, --span or --keep, as
    the domain reads them) and keep the rest exactly; KEY=VALUE overrides change the model's
    config for this call (e.g. inpaint.resamplings=8). docs/repair.md has each domain's input."""
    _check_sampler(sampler)
    from diffusekit.core.app.repair import check_region, parse_region, repair_file
    from diffusekit.core.app.training.inference import with_overrides

    region = parse_region(mask, boxes, spans, keep)
    model, _ = _open_model(run_dir, model_id, adapter_scale, adapter_args, base, control_scale,
                           hint, control_args)
    check_region(model.domain, region)
    model = with_overrides(model, overrides)
    paths = repair_file(model, Path(input_path), region, out_dir=Path(out), method=method,
                        sampler=sampler, steps=steps, n=n, seed=seed, average=average)
    _echo_paths(paths, "repaired")


@cli.command()
@click.option("--run", "run_dir", required=True, type=click.Path(), help="A run folder.")
@click.option("--to", "to", required=True, type=click.Path(file_okay=False),
              help="The model folder to write (new or empty).")
@click.option("--half", is_flag=True, help="Store the weights as float16.")
def export(run_dir: str, to: str, half: bool) -> None:
    """Write a run's model as a shareable folder: config.yaml, model.safetensors (EMA weights),
    README.md (the model card). An adapter run exports its adapter (base named by id + SHA-256)."""
    from diffusekit.core.app.training.models import export_model

    run = _open_run(run_dir)
    dom, _ = _run_domain(run)
    _echo_paths(export_model(run, Path(to), half=half, domain=dom), "exported")


@cli.command()
@click.option("--run", "run_dir", required=True, type=click.Path(), help="An adapter run.")
@click.option("--to", "to", required=True, type=click.Path(file_okay=False),
              help="The model folder to write (new or empty).")
@click.option("--adapter", "adapter_args", multiple=True, metavar="RUN=SCALE",
              help="Merge another adapter on the same base too (repeatable).")
@click.option("--adapter-scale", type=float, default=None,
              help="Scale of the run's adapter (default: its sample.adapter_scale).")
@base_option
def merge(run_dir: str, to: str, adapter_args: tuple[str, ...],
          adapter_scale: float | None, base: str | None) -> None:
    """Fold an adapter run's adapter(s) into its base: a plain model folder whose outputs equal
    base + adapter."""
    from diffusekit.core.app import adapters
    from diffusekit.core.app.training.models import write_model

    model, run = _open_model(run_dir, None, adapter_scale, adapter_args, base)
    if not adapters.is_adapter_run(model.cfg):
        raise ConfigError(f"run {run_dir!r} has no adapter to merge (adapter.kind is null); "
                          "toolkit export writes its model")
    cfg = configuration.override(model.cfg, overrides=["adapter.kind=null"])
    network = adapters.merge_adapters(model.network)
    _echo_paths(write_model(Path(to), model.domain, cfg, network, run.read_metrics()), "merged")


@cli.command()
@domain_option
@click.option("--quick", is_flag=True, help="A short smoke version (sets quick=true).")
@click.option("--finetune", is_flag=True,
              help="The customisation benchmark: base, LoRA, full fine-tuning and scratch on a "
                   "shifted target set (docs/customise.md).")
@click.option("--repair", is_flag=True,
              help="The repair benchmark: inpainting held-out examples against classic "
                   "baselines (docs/repair.md).")
@click.option("--distill", "distil", is_flag=True,
              help="The distillation benchmark: a consistency student against its teacher's "
                   "samplers, quality against NFE (docs/distill.md).")
@preset_option
@config_option
@overrides_argument
def benchmark(domain: str, quick: bool, finetune: bool, repair: bool, distil: bool,
              preset: str | None, files: tuple[str, ...], overrides: tuple[str, ...]) -> None:
    """Run DOMAIN's benchmark and print its metrics (as JSON)."""
    if finetune + repair + distil > 1:
        raise click.UsageError("--finetune, --repair and --distill are three benchmarks: give one.")
    from diffusekit.core.app.results import commit_pinned

    dom = get_domain(domain)
    cfg = compose_config(dom, files, (*overrides, *(["quick=true"] if quick else [])), preset)
    try:
        with commit_pinned():  # the record names the code the run started with
            if finetune:
                from diffusekit.core.app.finetune import run_finetune_benchmark

                result = run_finetune_benchmark(dom, cfg)
            elif repair:
                result = dom.repair_benchmark(cfg)
            elif distil:
                from diffusekit.core.app.distill_benchmark import run_distill_benchmark

                result = run_distill_benchmark(dom, cfg)
            else:
                result = dom.benchmark(cfg)
    except NotImplementedError as exc:
        raise DiffusekitError(_one_line(exc) or f"domain {dom.name!r} has no benchmark") from None
    click.echo(json.dumps(result, indent=2, sort_keys=True, default=str))


# ------------------------------------------------------------------------- entry point
def _add_plugin_commands(group: click.Group) -> None:
    """Let plugins add their commands (the manager isolates a failing plugin)."""
    try:
        from diffusekit import plugins as plugin_api
    except ImportError:  # the plugin package is absent from a stripped install
        return
    plugin_api.register_commands(group)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0 on success). The toolkit's own errors
    (`DiffusekitError`, unknown names, usage errors, unreadable files) print one line on stderr:
    `error: ...`."""
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "toolkit"
    if prog not in ("toolkit", "diffusekit"):
        prog = "toolkit"
    try:
        _add_plugin_commands(cli)
        result = cli.main(args=argv, prog_name=prog, standalone_mode=False)
        return result if isinstance(result, int) else 0
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        return 130
    except click.ClickException as exc:  # usage errors: bad option, missing argument
        hint = ""
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            hint = f" (see '{ctx.command_path} --help')"
        click.echo(f"error: {_one_line(exc.format_message())}{hint}", err=True)
        return exc.exit_code
    except DiffusekitError as exc:
        click.echo(f"error: {_one_line(exc)}", err=True)
        return exc.exit_code
    except UnknownNameError as exc:
        click.echo(f"error: {_one_line(exc)}", err=True)
        return 2
    except OmegaConfBaseException as exc:  # a config value of the wrong kind or a missing key
        click.echo(f"error: config: {_one_line(exc)}", err=True)
        return 2
    except OSError as exc:  # a file that cannot be read or written
        click.echo(f"error: {_one_line(exc)}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
