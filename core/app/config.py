"""Compose a run's configuration: toolkit defaults, domain defaults, a user file, overrides.

    cfg = compose(domain.default_config(), files=["my.yaml"], overrides=["model.channels=64"],
                  domain="audio")

Layers, later wins:

1. the toolkit's training defaults (`diffusekit/core/app/training/defaults.yaml`: trainer, optim,
   ema, sample, checkpoint_every, ...);
2. the domain's defaults: may change any toolkit value and add its own top-level sections
   (model, data, process, ...);
3. each `--config file.yaml`, in order (a domain's preset, `--preset NAME`, is the file
   `presets/NAME.yaml` beside the domain's module, placed before the user's files);
4. dotlist overrides `key=value` (the value is parsed as YAML: `64`, `true`, `[1, 2]`, `null`).

Layers 3 and 4 (and a domain's values inside the toolkit's sections) may only set keys that
exist already: an unknown key raises `UnknownConfigKeyError` naming the key and the closest
existing one. A mapping that is empty in the defaults (`options: {}`) is open and takes any keys.
The result is an OmegaConf config in struct mode (reading a misspelt key fails too), with
interpolations `${...}` resolved; no custom resolvers are registered (in particular no `eval`).
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Callable

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from diffusekit.core.errors import ConfigError, UnknownConfigKeyError

DEFAULTS_FILE = Path(__file__).parent / "training" / "defaults.yaml"


def data_cache(domain: str | None = None) -> Path:
    """The data cache every domain builds its offline data in: $DIFFUSEKIT_DATA when set (and not
    empty), else ~/.cache/diffusekit; with `domain`, that domain's folder inside it."""
    root = Path(os.environ.get("DIFFUSEKIT_DATA") or "~/.cache/diffusekit").expanduser()
    return root / domain if domain else root


PRESETS_FOLDER = "presets"  # beside a domain's module: presets/<name>.yaml


def preset_files(domain: Any) -> dict[str, Path]:
    """{name: file} of the presets `domain` ships: the `presets/<name>.yaml` files in the folder
    of the module that defines its class (a built-in domain's package, or a plugin's). A preset
    is a `--config` file that comes with the domain (`--preset gpu`: the published scale on one
    GPU); it is layered before the user's own files."""
    folder = Path(inspect.getfile(type(domain))).parent / PRESETS_FOLDER
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def preset_file(domain: Any, name: str) -> Path:
    """The file of `domain`'s preset `name`; a `ConfigError` naming the presets it has."""
    files = preset_files(domain)
    if name in files:
        return files[name]
    known = f"its presets: {', '.join(files)}" if files else "it ships none"
    close = difflib.get_close_matches(str(name), list(files), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"domain {domain.name!r} has no preset {name!r}{hint}; {known}")


def training_defaults() -> DictConfig:
    """The toolkit's training defaults (a fresh, mutable copy)."""
    return load_file(DEFAULTS_FILE)


def load_file(path: str | Path) -> DictConfig:
    """A YAML mapping from `path`; `ConfigError` when it is missing, unreadable or not a mapping."""
    path = Path(path)
    try:
        cfg = OmegaConf.load(path)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {_one_line(exc)}") from None
    except (OSError, OmegaConfBaseException, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {_one_line(exc)}") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping, not a list")
    return cfg


def parse_overrides(overrides: Iterable[str]) -> DictConfig:
    """`["a.b=1", "c=[1, 2]"]` -> {"a": {"b": 1}, "c": [1, 2]} (values parsed as YAML)."""
    items = list(overrides)
    for item in items:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip() or key != key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
    try:
        return OmegaConf.from_dotlist(items)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot parse overrides {items}: {_one_line(exc)}") from None
    except yaml.YAMLError as exc:  # e.g. `[*.attn]`: a leading `*` is a YAML alias
        raise ConfigError(f"cannot parse overrides {items} as YAML ({_one_line(exc)}); quote "
                          "values that start with * & ! or contain ': ', e.g. "
                          "'adapter.targets=[\"*.attn\"]'") from None


def compose(
    domain_defaults: Mapping | DictConfig | None = None,
    *,
    files: Iterable[str | Path] = (),
    overrides: Iterable[str] = (),
    domain: str | None = None,
) -> DictConfig:
    """The resolved config of a run (see the module docstring for the layers and the rules)."""
    cfg = training_defaults()
    if domain_defaults is not None:
        layer = _as_config(domain_defaults)
        check_keys(cfg, layer, "the domain's defaults", allow_new_top_level=True)
        cfg = OmegaConf.merge(cfg, layer)
    if domain is not None:
        cfg.domain = domain
    return override(cfg, files=files, overrides=overrides)


def override(cfg: DictConfig, *, files: Iterable[str | Path] = (),
             overrides: Iterable[str] = ()) -> DictConfig:
    """`cfg` (e.g. a run's saved config) with user files and `key=value` overrides applied:
    layers 3 and 4 of `compose`, under the same rules (only existing keys)."""
    cfg = _as_config(cfg)
    open_paths = _open_paths(cfg)
    for path in files:
        layer = load_file(path)
        check_keys(cfg, layer, str(path), open_paths=open_paths)
        cfg = OmegaConf.merge(cfg, layer)
    layer = parse_overrides(overrides)
    check_keys(cfg, layer, "the command line", open_paths=open_paths)
    cfg = OmegaConf.merge(cfg, layer)
    return finalize(cfg, open_paths)


def finalize(cfg: DictConfig, open_paths: set[str] = frozenset()) -> DictConfig:
    """Resolve interpolations, check nothing is left `???`, and switch struct mode on."""
    try:
        container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"config cannot be resolved: {_one_line(exc)}") from None
    cfg = OmegaConf.create(container)
    OmegaConf.set_struct(cfg, True)
    for path in open_paths:
        node = OmegaConf.select(cfg, path)
        if isinstance(node, DictConfig):
            OmegaConf.set_struct(node, False)
    return cfg


def check_keys(base: DictConfig, layer: DictConfig, source: str, *,
               allow_new_top_level: bool = False, open_paths: Iterable[str] = ()) -> None:
    """Raise `UnknownConfigKeyError` for the first key of `layer` that `base` does not define.

    Keys under an open mapping (empty in the defaults, or listed in `open_paths`) are accepted;
    with `allow_new_top_level`, so are new top-level sections (a domain adding `model:`)."""
    open_paths = set(open_paths) | _open_paths(base)
    known = set(dotted_keys(base))

    def walk(node: DictConfig, prefix: str) -> None:
        for key in node.keys():
            path = f"{prefix}{key}"
            if path not in known:
                if not prefix and allow_new_top_level:
                    continue
                if any(path.startswith(p + ".") for p in open_paths):
                    continue
                raise UnknownConfigKeyError(path, closest_key(path, base), source)
            value = node._get_node(key)
            if isinstance(value, DictConfig) and not value._is_none() and not value._is_missing():
                target = OmegaConf.select(base, path)
                if isinstance(target, DictConfig):
                    walk(value, path + ".")
                elif target is not None and len(value) and path not in open_paths:
                    # a value where the defaults hold a plain value: its keys cannot exist
                    sub = f"{path}.{next(iter(value.keys()))}"
                    raise UnknownConfigKeyError(sub, closest_key(sub, base), source)

    walk(layer, "")


def dotted_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Every key of `cfg` as a dotted path, sections and leaves ("trainer", "trainer.devices")."""
    out = []
    for key in cfg.keys():
        path = f"{prefix}{key}"
        out.append(path)
        value = cfg._get_node(key)
        if isinstance(value, DictConfig) and not value._is_none() and not value._is_missing():
            out.extend(dotted_keys(value, path + "."))
    return out


def closest_key(key: str, cfg: DictConfig) -> str | None:
    """The existing dotted key nearest to `key`: first among its siblings, then anywhere."""
    keys = dotted_keys(cfg)
    parent, _, leaf = key.rpartition(".")
    siblings = [k for k in keys if k.rpartition(".")[0] == parent]
    match = difflib.get_close_matches(key, siblings, n=1, cutoff=0.6)
    if not match:  # compare leaf names across the tree, then whole paths
        by_leaf = {}
        for k in keys:
            by_leaf.setdefault(k.rpartition(".")[2], k)
        leaf_match = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.75)
        match = [by_leaf[leaf_match[0]]] if leaf_match else []
    if not match:
        match = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    return match[0] if match else None


def save(cfg: DictConfig, path: str | Path) -> Path:
    """Write `cfg` (resolved) as YAML to `path` (atomically: a killed run never leaves half)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    tmp.replace(path)
    return path


def load_saved(path: str | Path) -> DictConfig:
    """A config written by `save` (a run's `config.yaml`), in struct mode."""
    cfg = load_file(path)
    return finalize(cfg, _open_paths(cfg))


def typed(cfg: DictConfig, key: str, kind: Callable[[Any], Any]) -> Any:
    """The value at dotted `key` converted by `kind` (int, float, str, ...); a `ConfigError` that
    names the key and the value when it does not convert (`trainer.max_steps=abc`). A bool where
    a number is wanted is refused too (YAML reads `yes` as true)."""
    value = OmegaConf.select(cfg, key, throw_on_missing=False)
    if value is None or (isinstance(value, bool) and kind in (int, float)):
        raise ConfigError(f"config key {key!r} must be {_KIND_NAMES.get(kind, kind.__name__)}, "
                          f"got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config key {key!r} must be {_KIND_NAMES.get(kind, kind.__name__)}, "
                          f"got {value!r}") from None


_KIND_NAMES = {int: "a whole number", float: "a number", str: "a string"}

# "90s", "10m", "1.5h", "1h30m", "2d": numbers with a unit, summed
_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([smhd])")
_DURATION_CLOCK = re.compile(r"(\d+):(\d\d):(\d\d):(\d\d)")  # Lightning's DD:HH:MM:SS


def duration_seconds(value: Any, what: str = "trainer.max_time") -> float | None:
    """Seconds of a wall-clock duration: a number of seconds, a string of numbers with units
    (`"90s"`, `"10m"`, `"1.5h"`, `"1h30m"`, `"2d"`) or Lightning's `"DD:HH:MM:SS"`; None for
    null. A `ConfigError` naming `what` for anything else, and for a duration that is not
    positive."""
    if value is None:
        return None
    text = str(value).strip().lower()
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif clock := _DURATION_CLOCK.fullmatch(text):
        d, h, m, s = (int(g) for g in clock.groups())
        seconds = float(((d * 24 + h) * 60 + m) * 60 + s)
    elif text and _DURATION_PART.sub("", text) == "":
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
    else:
        try:
            seconds = float(text)
        except ValueError:
            seconds = None
    if seconds is None or not math.isfinite(seconds):
        raise ConfigError(f"{what} must be a duration such as 90s, 10m, 1.5h or DD:HH:MM:SS, "
                          f"got {value!r}")
    if seconds <= 0:
        raise ConfigError(f"{what} must be a positive duration, got {value!r}")
    return seconds


def name_list(cfg: DictConfig, key: str, what: str) -> tuple[str, ...] | None:
    """The names at dotted `key` (a single string or a list of them) as a tuple; None when the
    value is null. An empty list is a `ConfigError` saying to leave it null for `what`."""
    value = OmegaConf.select(cfg, key, throw_on_missing=False)
    if value is None:
        return None
    names = (value,) if isinstance(value, str) else tuple(str(v) for v in value)
    if not names:
        raise ConfigError(f"{key} is empty; leave it null for {what}")
    return names


#: Keys the toolkit no longer has, as saved in the config.yaml of earlier runs: {key: (the key
#: whose non-null value means the run used it, why such a run cannot load now)}. A run that did
#: not use the key loads without it.
RETIRED_KEYS: dict[str, tuple[str, str]] = {
    "distill.sigma_data": ("distill.teacher", "it is a consistency student of the earlier form "
                           "(c_skip of width distill.sigma_data, output weight c_out / sd), which "
                           "this version does not sample; distil the teacher again"),
}


def drop_retired_keys(layer: DictConfig, source: str) -> DictConfig:
    """`layer` without the `RETIRED_KEYS` it holds; a `ConfigError` naming the key when the run
    used one."""
    for key, (used_by, why) in RETIRED_KEYS.items():
        parent, _, leaf = key.rpartition(".")
        section = OmegaConf.select(layer, parent, throw_on_missing=False) if parent else layer
        if isinstance(section, DictConfig) and leaf in section:
            if OmegaConf.select(layer, used_by, throw_on_missing=False) is not None:
                raise ConfigError(f"{source} holds the retired key {key!r}: {why}")
            del section[leaf]
    return layer


def fit_to_defaults(saved: DictConfig, defaults: Mapping | DictConfig, source: str,
                    domain: str) -> DictConfig:
    """A run's saved config checked against its domain's current defaults: every key it holds
    must exist in `compose(defaults)` (else a `ConfigError` saying the run does not fit the
    domain, naming the key), and keys added to the defaults since the run was saved take their
    default value. The saved values win."""
    base = compose(defaults, domain=domain)
    layer = drop_retired_keys(_as_config(saved), source)
    try:
        check_keys(base, layer, source)
    except UnknownConfigKeyError as exc:
        raise ConfigError(f"{source} does not fit domain {domain!r}: it holds the key "
                          f"{exc.key!r}, which the domain does not define") from None
    return finalize(OmegaConf.merge(_as_config(base), layer), _open_paths(base))


def to_yaml(cfg: DictConfig) -> str:
    """The config as YAML text (what `toolkit config` prints)."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def _as_config(obj: Mapping | DictConfig) -> DictConfig:
    cfg = obj if isinstance(obj, DictConfig) else OmegaConf.create(dict(obj))
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))  # a mutable copy
    OmegaConf.set_struct(cfg, False)
    return cfg


def _open_paths(cfg: DictConfig, prefix: str = "") -> set[str]:
    """Dotted paths of mappings that are empty (and therefore open to any key)."""
    out = set()
    for key in cfg.keys():
        value = cfg._get_node(key)
        if isinstance(value, DictConfig) and not value._is_none() and not value._is_missing():
            if len(value) == 0:
                out.add(f"{prefix}{key}")
            else:
                out |= _open_paths(value, f"{prefix}{key}.")
    return out


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300]


def as_dict(node: Any) -> Any:
    """A plain Python value (dicts and lists) of a config node, resolved."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node
