"""Small local molecule fixtures: hand-built geometries and a few RDKit-embedded ones, written as
XYZ and SDF files into tmp_path (never the network, never the QM9 cache); and, for the slow
tests only, the real QM9 cache prepared into the session's own data cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diffusekit.domains.molecules.structures import Structure, write_xyz
from molecule_builders import EMBEDDED, embedded, methane


@pytest.fixture(scope="session")
def qm9_cache() -> Path:
    """The prepared QM9 cache (`toolkit prepare --domain molecules`: the qm9pack wheel from PyPI,
    130,831 molecules, a few minutes), built once per session in the session's data cache, which
    tests/conftest.py points at a temporary folder: never the user's."""
    from diffusekit.domains.molecules.data import cache_dir, prepare_qm9

    return prepare_qm9(cache_dir(), progress=False)


@pytest.fixture(scope="session")
def embedded_structures() -> list[Structure]:
    return [embedded(s) for s in EMBEDDED]


@pytest.fixture
def molecule_folder(tmp_path, embedded_structures):
    """tmp_path/mols: 3 XYZ files (one with 2 frames), 1 SDF of 6 RDKit molecules, and two bad
    files (garbage XYZ, an SDF of a chlorine compound) -> 10 molecules, 2 files skipped."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    folder = tmp_path / "mols"
    (folder / "sub").mkdir(parents=True)
    write_xyz([methane()], folder / "methane.xyz")
    write_xyz(embedded_structures[:2], folder / "sub" / "two.xyz")
    water = Structure(("O", "H", "H"), np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]))
    write_xyz([water], folder / "water.xyz")
    writer = Chem.SDWriter(str(folder / "six.sdf"))
    for smi in EMBEDDED[2:]:
        mol = Chem.AddHs(Chem.MolFromSmiles(smi))
        AllChem.EmbedMolecule(mol, randomSeed=1)
        writer.write(mol)
    writer.close()
    (folder / "broken.xyz").write_text("3\ncomment\nC 0 0\nnot a number at all\n")
    chloro = Chem.AddHs(Chem.MolFromSmiles("CCl"))
    AllChem.EmbedMolecule(chloro, randomSeed=0)
    Chem.MolToMolFile(chloro, str(folder / "chloro.sdf"))
    (folder / "notes.txt").write_text("not a structure file")
    return folder
