"""The options the `toolkit` commands share (click decorators), and what their values mean.

    --domain D, --preset NAME, --config FILE, KEY=VALUE...     the config of a run of a domain:
                                                              `compose_config` (the domain's
                                                              defaults, its preset, the files,
                                                              then the overrides)
    --run RUN | --model PATH_OR_ID, --adapter RUN=SCALE,       the model a command uses
    --adapter-scale, --base, --control RUN=SCALE,             (`model_options`); `weighted_runs`
    --control-scale, --hint FILE                              reads the RUN=SCALE values

The commands themselves, and what opens a model from these options, are in `cli.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from diffusekit.core.app import config as configuration

config_option = click.option("--config", "files", multiple=True, type=click.Path(dir_okay=False),
                             help="A YAML file of config values (repeatable; later wins).")
preset_option = click.option("--preset", default=None, metavar="NAME",
                             help="A config file the domain ships (presets/NAME.yaml, e.g. gpu: "
                                  "the published size on one GPU), before --config files.")
domain_option = click.option("--domain", "-d", required=True, help="The domain (toolkit domains).")
overrides_argument = click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")


def compose_config(domain: Any, files: tuple[str, ...], overrides: tuple[str, ...],
                   preset: str | None = None):
    """The resolved config of a run of `domain`: its defaults, the preset, the files, the
    KEY=VALUE overrides."""
    return configuration.compose(domain.default_config(), files=config_files(domain, preset, files),
                                 overrides=overrides, domain=domain.name)


def config_files(domain: Any, preset: str | None, files: tuple[str, ...]) -> tuple[str, ...]:
    """The config files of a command: the domain's preset file first, then the user's."""
    if preset is None:
        return files
    return (str(configuration.preset_file(domain, preset)), *files)


base_option = click.option(
    "--base", "base", default=None, metavar="PATH_OR_ID",
    help="Where the adapter's or control's base model is, when not where its base.json says "
         "(checked by SHA-256).")


def model_options(command: Any) -> Any:
    """--run / --model, --adapter RUN=SCALE (repeatable), --adapter-scale, --base,
    --control-scale, --control RUN=SCALE (repeatable) and --hint."""
    for option in reversed([
        click.option("--run", "run_dir", type=click.Path(), default=None,
                     help="A run folder (an adapter run brings its base)."),
        click.option("--model", "model_id", default=None, metavar="PATH_OR_ID",
                     help="A model folder (toolkit export) or a Hugging Face id user/name."),
        click.option("--adapter", "adapter_args", multiple=True, metavar="RUN=SCALE",
                     help="Add an adapter run trained on the same base, weighted by SCALE "
                          "(repeatable)."),
        click.option("--adapter-scale", type=float, default=None,
                     help="Scale of the run's own adapter (sample.adapter_scale; 0: the base)."),
        base_option,
        click.option("--control-scale", type=float, default=None,
                     help="Scale of a control run's control (control.scale; 0: the base)."),
        click.option("--control", "control_args", multiple=True, metavar="RUN=SCALE",
                     help="Steer by another control trained on the same base too, weighted by "
                          "SCALE; its hints come from the data (repeatable)."),
        click.option("--hint", "hint", type=click.Path(dir_okay=False), default=None,
                     help="The (first) control's hint(s): a .safetensors tensor [*shape] or "
                          "[K, *shape], or a PNG / JPEG image (default: made from the data).")]):
        command = option(command)
    return command


def weighted_runs(option: str, args: tuple[str, ...]) -> dict[Path, float]:
    """{folder: scale} of repeated `option RUN=SCALE` arguments."""
    weighted = {}
    for arg in args:
        path, sep, scale = arg.rpartition("=")
        try:
            weighted[Path(path)] = float(scale)
        except ValueError:
            sep = ""
        if not sep or not path:
            raise click.UsageError(f"{option} {arg!r} is not of the form RUN=SCALE.")
    return weighted
