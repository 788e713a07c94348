"""Hand-built and RDKit-embedded molecules shared by the molecule tests (plain functions; the
fixtures that use them are in conftest.py)."""

from __future__ import annotations

import numpy as np

from diffusekit.domains.molecules.structures import Structure

C_H = 1.09  # Angstrom


def methane() -> Structure:
    """CH4: hydrogens on the corners of a tetrahedron at the C-H bond length."""
    corners = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3)
    return Structure(("C", "H", "H", "H", "H"), np.vstack([[0, 0, 0], C_H * corners]))


def carbon_with_five_bonds() -> Structure:
    """CH5: a trigonal bipyramid of hydrogens at the C-H bond length (H-H >= 1.54 A, unbonded)."""
    angles = np.deg2rad([0, 120, 240])
    ring = np.stack([np.cos(angles), np.sin(angles), np.zeros(3)], 1)
    hydrogens = np.vstack([ring, [[0, 0, 1], [0, 0, -1]]]) * C_H
    return Structure(("C",) + ("H",) * 5, np.vstack([[0, 0, 0], hydrogens]))


def embedded(smiles: str, seed: int = 0) -> Structure:
    """An ETKDG + MMFF geometry of `smiles` with explicit hydrogens (RDKit)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=seed) == 0
    AllChem.MMFFOptimizeMolecule(mol)
    return Structure(tuple(a.GetSymbol() for a in mol.GetAtoms()),
                     np.asarray(mol.GetConformer().GetPositions()))


EMBEDDED = ["CCO", "CC(=O)O", "c1ccncc1", "CC#N", "CF", "C=CC=O", "NCC(=O)O", "OC1CC1"]
