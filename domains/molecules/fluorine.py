"""Molecules holding fluorine: the target set of the molecule domain's customisation benchmark.

The base model learns QM9 as a whole, where fluorine is rare: 1,923 of its 130,831 molecules
(1.5%) hold an F atom, and F is 0.13% of its atoms. The target set is those molecules alone, a
shift in composition that the base saw only now and then: every molecule holds F (one in 1,276
of them, three, mostly a CF3 group, in 456), and they are smaller (13.5 atoms on average against
QM9's 18.0). It is cut along the base's own split (`data.seed`, without `data.limit`), so that
no molecule the base could have trained on is ever scored; with QM9's split and `data.seed` 0 it
holds 1,463 training molecules (1.5% of the base's 100,000), 256 validation and 204 test ones:

    train   fluorine molecules of the base's training split, at most `MAX_SHARE` of the base's
            training molecules (the first ones in split order when the cap binds)
    val     fluorine molecules of the base's validation split
    test    fluorine molecules of the base's test split

The set is written once per call into the data cache ($DIFFUSEKIT_DATA/molecules/fluorine,
`FLUORINE_FOLDER`) as one SDF file (formal charges kept), read back as a user's folder of
molecules (`data.source`, split by `data.folder_split`, see `data.MoleculeDataModule.setup`):
the molecules are written in the order in which that folder split of `data.seed` puts each of
them into its own split, and `data.folder_split` gives the three sizes exactly.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from diffusekit.core.errors import DataError
from diffusekit.domains.molecules.data import (MoleculeDataModule, MoleculeSet, cache_dir,
                                               split_indices)
from diffusekit.domains.molecules.metrics import rdkit_molecule
from diffusekit.domains.molecules.structures import ELEMENTS, Structure, write_sdf

FLUORINE_FOLDER = "fluorine"
TARGET_FILE = "qm9-fluorine.sdf"  # the only file the folder may hold (it would join the set)
MAX_SHARE = 0.10                  # the target's training molecules / the base's, at most
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class FluorineTarget:
    """The target folder, its molecules per split (as `MoleculeSet`s, in split order), the
    number of molecules the base trains on, and the `data.folder_split` that gives the split."""

    folder: Path
    splits: dict[str, MoleculeSet]
    base_train: int
    folder_split: tuple[float, float, float]

    def overrides(self) -> list[str]:
        """The `data.*` overrides that train and score on the target (all of it: no limit)."""
        fractions = ",".join(repr(f) for f in self.folder_split)
        return [f"data.source={self.folder}", f"data.folder_split=[{fractions}]",
                "data.limit=null"]


def fluorine_mask(molecules: MoleculeSet) -> np.ndarray:
    """[M] bool: the molecule holds at least one F atom."""
    owner = np.repeat(np.arange(len(molecules)), molecules.sizes())
    counts = np.bincount(owner, weights=molecules.types == ELEMENTS.index("F"),
                         minlength=len(molecules))
    return counts > 0


def base_splits(cfg: DictConfig) -> tuple[dict[str, MoleculeSet], int]:
    """The base's train / val / test splits of `cfg.data` without `data.limit`, and the number
    of molecules it trains on (`data.limit` applied)."""
    unlimited = OmegaConf.merge(cfg, {"data": {"limit": None}})
    datamodule = MoleculeDataModule.from_config(unlimited)
    datamodule.setup()
    n_train = len(datamodule.splits["train"])
    limit = cfg.data.get("limit")
    return datamodule.splits, n_train if limit is None else min(int(limit), n_train)


def select_fluorine(cfg: DictConfig) -> tuple[dict[str, MoleculeSet], int]:
    """The target's molecules per split (see the module docstring) and the base's number of
    training molecules; `DataError` when a split would be empty or the cap leaves no room."""
    splits, base_train = base_splits(cfg)
    cap = int(MAX_SHARE * base_train)
    if cap < 1:
        raise DataError(f"the base trains on {base_train} molecules, so the fluorine target may "
                        f"hold none (at most {100 * MAX_SHARE:.0f}%): train the base on more data")
    chosen = {name: splits[name].subset(np.flatnonzero(fluorine_mask(splits[name])))
              for name in SPLITS}
    chosen["train"] = chosen["train"].subset(np.arange(min(cap, len(chosen["train"]))))
    empty = [name for name in SPLITS if len(chosen[name]) == 0]
    if empty:
        raise DataError(f"the base's data ({cfg.data.source}) holds no molecule with fluorine in "
                        f"its {' and '.join(empty)} split: the fluorine target needs some in each")
    return chosen, base_train


def folder_split_of(sizes: tuple[int, int, int]) -> tuple[float, float, float]:
    """The `data.folder_split` fractions under which `MoleculeDataModule.setup` cuts a folder of
    sum(sizes) molecules into exactly `sizes` (it rounds fraction x count)."""
    n = sum(sizes)
    fractions = tuple(k / n for k in sizes)
    if n < 3 or tuple(max(1, round(f * n)) for f in fractions[1:]) != sizes[1:]:
        raise DataError(f"no folder split gives {sizes} molecules")  # needs one per split
    return fractions


def _ordered(chosen: dict[str, MoleculeSet], seed: int) -> list[Structure]:
    """The target's structures in file order: the folder split of `seed` puts the molecule at
    position perm[k] of the file into its split's k-th place, so molecule i of split s goes to
    that split's i-th index."""
    sizes = tuple(len(chosen[name]) for name in SPLITS)
    ordered: list[Structure | None] = [None] * sum(sizes)
    for name, index in zip(SPLITS, split_indices(sum(sizes), sizes, seed)):
        for i, position in enumerate(index):
            ordered[int(position)] = chosen[name].structure(i)
    return ordered  # type: ignore[return-value]  # every position is filled once


def _is_ours(path: Path) -> bool:
    return path.name in (TARGET_FILE, f".{TARGET_FILE}.tmp")


def build_fluorine(cfg: DictConfig, folder: Path | None = None) -> FluorineTarget:
    """Write the target set into `folder` (default: the data cache's molecules/fluorine) and
    return it. The file of an earlier build is replaced; any other file there is a `DataError`
    (it would join the target set)."""
    folder = Path(folder) if folder is not None else cache_dir() / FLUORINE_FOLDER
    chosen, base_train = select_fluorine(cfg)
    split = folder_split_of(tuple(len(chosen[name]) for name in SPLITS))
    folder.mkdir(parents=True, exist_ok=True)
    strangers = sorted(p.name for p in folder.rglob("*") if not _is_ours(p))
    if strangers:
        raise DataError(f"the fluorine folder {str(folder)!r} holds files it did not write "
                        f"({', '.join(strangers[:3])}); move them or remove the folder")
    structures = _ordered(chosen, int(cfg.data.seed))
    tmp = folder / f".{TARGET_FILE}.tmp"  # not a .sdf: a half-written file never joins the set
    write_sdf([rdkit_molecule(s, with_charges=True) for s in structures], tmp)
    tmp.replace(folder / TARGET_FILE)
    return FluorineTarget(folder, chosen, base_train, split)


def fluorine_target(cfg: DictConfig) -> tuple[FluorineTarget, list[str]]:
    """Build the fluorine set and return it with the `data.*` overrides that train and score on
    it (printing its sizes)."""
    target = build_fluorine(cfg)
    sizes = {name: len(target.splits[name]) for name in SPLITS}
    print(f"molecules finetune target: {sizes['train']} training molecules with fluorine = "
          f"{100 * sizes['train'] / target.base_train:.1f}% of the base's {target.base_train}; "
          f"{sizes['val']} validation, {sizes['test']} held-out test molecules in "
          f"{target.folder}", file=sys.stderr)  # stdout holds the benchmark's JSON
    return target, target.overrides()
