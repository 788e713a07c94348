"""Formal charges of molecules, in the atom order of their geometries.

QM9 is neutral overall, but 443 of its 130,831 molecules are zwitterions in the SMILES that
qm9pack ships (the SMILES of the relaxed B3LYP geometry, e.g. "[NH3+]CCC([O-])=O"). Their charges
are carried onto the geometry's atoms like this:

    1. a SMILES without a charged atom: every atom 0                          ("neutral")
    2. else match the SMILES graph (hydrogens made explicit, bond orders and
       charges ignored) onto the geometry's connectivity (RDKit's covalent-
       radius rule, `rdDetermineBonds.DetermineConnectivity`): a bijection of
       the atoms under which every SMILES bond is a contact of the geometry
       (which may have a few more: in 18 strained QM9 zwitterions the N-H
       sits within bonding range of the carboxylate); each geometry atom
       takes the charge of its SMILES atom                                    ("smiles")
    3. else (the SMILES graph is not the geometry's) a Lewis structure of the
       geometry itself with total charge 0 (`rdDetermineBonds.DetermineBonds`,
       Kim & Kim 2015's xyz2mol)                                              ("geometry")
    4. else every atom 0, counted                                             ("failed")

Charges of symmetry-equivalent atoms are interchangeable (the two oxygens of a carboxylate: which
one the graph match calls [O-] is arbitrary), so tests and users should rely on per-molecule
sums and on the charged elements, not on which of two equivalent atoms holds the charge. Files
read from a folder keep the charges an SDF states; XYZ frames get step 3.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from diffusekit.domains.molecules.structures import Structure

# per-molecule provenance codes stored in the cache (`MoleculeSet.charge_source`)
CHARGE_SOURCES = ("neutral", "smiles", "geometry", "failed")


def _bare_molecule(structure: Structure):
    """An RDKit molecule with the structure's atoms and conformer and no bonds."""
    from diffusekit.domains.molecules.metrics import rdkit_molecule

    return rdkit_molecule(structure, np.zeros((structure.n_atoms,) * 2, dtype=np.int64))


def _graph_only(mol):
    """A copy of `mol` reduced to its labelled graph: single bonds, no charges, no aromaticity,
    no implicit hydrogens (so that a substructure match compares elements and edges only)."""
    from rdkit import Chem

    mol = Chem.RWMol(mol)
    for atom in mol.GetAtoms():
        atom.SetFormalCharge(0)
        atom.SetIsAromatic(False)
        atom.SetNoImplicit(True)
        atom.SetNumExplicitHs(0)
    for bond in mol.GetBonds():
        bond.SetBondType(Chem.BondType.SINGLE)
        bond.SetIsAromatic(False)
    return mol


def charges_from_smiles(structure: Structure, smiles: str) -> np.ndarray | None:
    """[n] formal charges of `structure`'s atoms taken from `smiles` by a graph match (step 2
    of the module docstring); None when the SMILES does not parse, has other atoms, or its
    graph does not embed in the geometry's connectivity."""
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    parsed = Chem.MolFromSmiles(smiles) if smiles else None
    if parsed is None:
        return None
    query = Chem.AddHs(parsed)
    target = _bare_molecule(structure)
    rdDetermineBonds.DetermineConnectivity(target)
    if query.GetNumAtoms() != target.GetNumAtoms() or query.GetNumBonds() > target.GetNumBonds():
        return None
    match = _graph_only(target).GetSubstructMatch(_graph_only(query))
    if len(match) != structure.n_atoms:
        return None
    charges = np.zeros(structure.n_atoms, dtype=np.int8)
    for query_atom, target_atom in enumerate(match):
        charges[target_atom] = query.GetAtomWithIdx(query_atom).GetFormalCharge()
    return charges


def charges_from_geometry(structure: Structure, total_charge: int = 0) -> np.ndarray | None:
    """[n] formal charges of a Lewis structure RDKit assigns to the geometry alone (bond orders
    and charges from connectivity and valences, `total_charge` in all); None when it finds none."""
    from rdkit.Chem import rdDetermineBonds

    mol = _bare_molecule(structure)
    try:
        rdDetermineBonds.DetermineBonds(mol, charge=total_charge)
    except (ValueError, RuntimeError):  # no valid assignment for this geometry
        return None
    return np.array([a.GetFormalCharge() for a in mol.GetAtoms()], dtype=np.int8)


def has_charged_atom(smiles: str) -> bool:
    """True when the SMILES writes a charge inside a bracket atom ("[NH3+]", "[O-]")."""
    atoms = (part.split("]", 1)[0] for part in smiles.split("[")[1:])  # "-" outside: a bond
    return any("+" in atom or "-" in atom for atom in atoms)


def molecule_charges(structure: Structure, smiles: str | None) -> tuple[np.ndarray, str]:
    """([n] formal charges, source) by the rule of the module docstring; source is one of
    CHARGE_SOURCES. Without a SMILES (an XYZ file) it starts at step 3."""
    if smiles is not None and not has_charged_atom(smiles):
        return np.zeros(structure.n_atoms, dtype=np.int8), "neutral"
    if smiles is not None:
        charges = charges_from_smiles(structure, smiles)
        if charges is not None:
            return charges, "smiles"
    charges = charges_from_geometry(structure)
    if charges is not None:
        return charges, "geometry"
    return np.zeros(structure.n_atoms, dtype=np.int8), "failed"


def derive_formal_charges(structures: Sequence[Structure], smiles: Sequence[str | None],
                          progress: bool = True) -> tuple[np.ndarray, np.ndarray, Counter]:
    """Formal charges of every atom of `structures` (concatenated, [A] int8), the source code of
    each molecule ([M] int8, index into CHARGE_SOURCES) and the count per source."""
    charges, sources = [], []
    for structure, smi in tqdm(zip(structures, smiles), total=len(structures),
                               desc="formal charges", unit="mol", disable=not progress):
        c, source = molecule_charges(structure, smi)
        charges.append(c)
        sources.append(CHARGE_SOURCES.index(source))
    counts = Counter(CHARGE_SOURCES[s] for s in sources)
    flat = np.concatenate(charges) if charges else np.zeros(0, dtype=np.int8)
    return flat.astype(np.int8), np.array(sources, dtype=np.int8), counts
