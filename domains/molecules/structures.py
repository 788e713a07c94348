"""Molecule structures in and out: the QM9 CSV of `qm9pack`, SDF and XYZ files.

A structure is a `Structure(elements, positions, charges)`: element symbols of the atoms (H C N O
F), their 3D positions in Angstrom, [n, 3], and their formal charges [n] when known (an SDF states
them; XYZ does not). Readers return None for what they cannot use (the caller
skips and counts those); writers produce files RDKit, Avogadro and PyMOL open.

    read_qm9_csv(path)          -> iterator of (Structure, SMILES) rows of a qm9pack CSV part
    read_structure_file(path)   -> [Structure] of one .sdf / .xyz file ([] when unusable)
    write_xyz(structures, path) -> one multi-frame XYZ file
    write_sdf(molecules, path)  -> one SDF (RDKit molecules with bonds and 3D conformers)
"""

from __future__ import annotations

import csv
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ELEMENTS = ("H", "C", "N", "O", "F")          # QM9's atom types, in one-hot order
ATOMIC_NUMBERS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}

# numbers as written in qm9pack (e.g. "0." or "-1.2e-05"), not valid JSON, hence a regex
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_SYMBOL = re.compile(r"[A-Z][a-z]?")


@dataclass(frozen=True)
class Structure:
    """One molecule: element symbols [n], positions [n, 3] in Angstrom and, when known, formal
    charges [n] (integers)."""

    elements: tuple[str, ...]
    positions: np.ndarray
    charges: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.positions.shape != (len(self.elements), 3):
            raise ValueError(f"{len(self.elements)} elements but positions of shape "
                             f"{self.positions.shape}")
        if self.charges is not None and self.charges.shape != (len(self.elements),):
            raise ValueError(f"{len(self.elements)} elements but charges of shape "
                             f"{self.charges.shape}")

    @property
    def n_atoms(self) -> int:
        return len(self.elements)

    def is_supported(self) -> bool:
        """True when every element is one of `ELEMENTS` and every position is finite."""
        return (self.n_atoms > 0 and all(e in ATOMIC_NUMBERS for e in self.elements)
                and bool(np.isfinite(self.positions).all()))


def read_qm9_csv(path: Path) -> Iterator[tuple[Structure, str]]:
    """Rows of one `qm9pack/data/qm9_partK.csv` as (Structure, SMILES), in file order.

    The columns used: "Elements" ("['C','H',...]"), "XYZ_Ang" ("[[x,y,z],...]", Angstrom) and
    "SMILES". A row whose coordinates do not match its elements raises ValueError (a corrupt file).
    """
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            elements = tuple(_SYMBOL.findall(row["Elements"]))
            numbers = [float(v) for v in _NUMBER.findall(row["XYZ_Ang"])]
            if len(numbers) != 3 * len(elements):
                raise ValueError(f"{path.name}: row {row.get('Index')} has {len(elements)} atoms "
                                 f"but {len(numbers)} coordinates")
            positions = np.asarray(numbers, dtype=np.float64).reshape(-1, 3)
            yield Structure(elements, positions), row["SMILES"]


def _read_xyz(path: Path) -> list[Structure]:
    """Frames of an XYZ file: a count line, a comment line, then `El x y z` lines per frame."""
    lines = path.read_text(errors="strict").splitlines()
    out, i = [], 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        n = int(lines[i].split()[0])
        if n <= 0 or i + 2 + n > len(lines):
            raise ValueError("truncated XYZ frame")
        elements, coords = [], []
        for line in lines[i + 2: i + 2 + n]:
            parts = line.split()
            if len(parts) < 4:
                raise ValueError(f"bad XYZ atom line {line!r}")
            elements.append(parts[0].capitalize())
            coords.append([float(v) for v in parts[1:4]])
        out.append(Structure(tuple(elements), np.asarray(coords, dtype=np.float64)))
        i += 2 + n
    return out


def _read_sdf(path: Path) -> list[Structure]:
    """Molecules of an SDF file with 3D conformers (hydrogens kept) and the formal charges it
    states; unreadable records dropped."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    out = []
    for mol in Chem.SDMolSupplier(str(path), removeHs=False, sanitize=False):
        if mol is None or mol.GetNumConformers() == 0:
            continue
        elements = tuple(a.GetSymbol() for a in mol.GetAtoms())
        charges = np.array([a.GetFormalCharge() for a in mol.GetAtoms()], dtype=np.int8)
        out.append(Structure(elements, np.asarray(mol.GetConformer().GetPositions(),
                                                  dtype=np.float64), charges))
    return out


READERS = {".xyz": _read_xyz, ".sdf": _read_sdf}


def read_structure_file(path: Path) -> list[Structure]:
    """The supported molecules of one .sdf / .xyz file; [] when it cannot be parsed or holds
    none with only H C N O F atoms (the data module counts those files as skipped)."""
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        return []
    try:
        structures = reader(path)
    except (ValueError, IndexError, UnicodeDecodeError, OSError):
        return []
    return [s for s in structures if s.is_supported()]


def write_xyz(structures: Sequence[Structure], path: Path, comments: Sequence[str] = ()) -> Path:
    """All `structures` as frames of one XYZ file (Angstrom, 6 decimals)."""
    lines = []
    for k, s in enumerate(structures):
        lines.append(str(s.n_atoms))
        lines.append(comments[k] if k < len(comments) else f"sample {k}")
        lines += [f"{e:2s} {x:12.6f} {y:12.6f} {z:12.6f}" for e, (x, y, z)
                  in zip(s.elements, s.positions)]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


def write_sdf(molecules: Sequence, path: Path) -> Path:
    """RDKit molecules (with conformers) as one SDF; unsanitisable ones are written as they are
    (their bonds from the distance tables), so every sample appears."""
    from rdkit import Chem

    writer = Chem.SDWriter(str(path))
    writer.SetKekulize(False)
    for k, mol in enumerate(molecules):
        mol.SetProp("_Name", f"sample {k}")
        try:
            writer.write(mol)
        except Exception:  # RDKit raises plain RuntimeErrors for odd valences
            mol.UpdatePropertyCache(strict=False)
            writer.write(mol)
    writer.close()
    return Path(path)
