"""EDM's metric family for generated 3D molecules (Hoogeboom et al. 2022, Sec. 5.1 / App. C).

Bonds come from geometry alone: a pair of atoms at distance d (pm) gets the bond order

    order(a, b, d) = 3 if d < l3(a, b) + 3,  else 2 if d < l2(a, b) + 5,  else 1 if d < l1(a, b) + 10,
                     else 0

where l1, l2, l3 are the typical single, double and triple bond lengths of the element pair
(a higher order only when the pair has that bond type at all, and only inside the lower order's
threshold). The margins 10 / 5 / 3 pm are EDM's, tuned so that the QM9 geometries themselves
score high. Then:

    atom stability      fraction of atoms whose bond orders sum to their valence (H1 C4 N3 O2 F1)
    molecule stability  fraction of molecules whose atoms are all stable
    validity            fraction whose RDKit molecule (atoms + those bonds) sanitises
    uniqueness          distinct canonical SMILES of the largest fragment / valid molecules
    novelty             unique valid SMILES not among the training set's / unique valid

The bond-length tables are the standard values EDM cites (wiredchemist.com, chemistry-reference.com).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from diffusekit.domains.molecules.structures import ELEMENTS, Structure

_INDEX = {e: i for i, e in enumerate(ELEMENTS)}
VALENCE = {"H": 1, "C": 4, "N": 3, "O": 2, "F": 1}
MARGINS_PM = (10.0, 5.0, 3.0)  # single, double, triple


def _table(entries: dict[tuple[str, str], float]) -> np.ndarray:
    """A symmetric [5, 5] table of bond lengths in pm over `ELEMENTS` (0: no such bond)."""
    t = np.zeros((len(ELEMENTS), len(ELEMENTS)))
    for (a, b), length in entries.items():
        t[_INDEX[a], _INDEX[b]] = t[_INDEX[b], _INDEX[a]] = length
    return t


SINGLE_PM = _table({("H", "H"): 74, ("H", "C"): 109, ("H", "N"): 101, ("H", "O"): 96,
                    ("H", "F"): 92, ("C", "C"): 154, ("C", "N"): 147, ("C", "O"): 143,
                    ("C", "F"): 135, ("N", "N"): 145, ("N", "O"): 140, ("N", "F"): 136,
                    ("O", "O"): 148, ("O", "F"): 142, ("F", "F"): 142})
DOUBLE_PM = _table({("C", "C"): 134, ("C", "N"): 129, ("C", "O"): 120, ("N", "N"): 125,
                    ("N", "O"): 121, ("O", "O"): 121})
TRIPLE_PM = _table({("C", "C"): 120, ("C", "N"): 116, ("C", "O"): 113, ("N", "N"): 110})


def bond_orders(elements: Sequence[str], positions: np.ndarray) -> np.ndarray:
    """[n, n] integer bond orders (0-3) from pairwise distances (positions [n, 3], Angstrom),
    by the rule in the module docstring; the diagonal is 0."""
    idx = np.array([_INDEX[e] for e in elements])
    d = 100.0 * np.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=-1)  # pm
    l1, l2, l3 = (t[idx[:, None], idx[None, :]] for t in (SINGLE_PM, DOUBLE_PM, TRIPLE_PM))
    single = d < l1 + MARGINS_PM[0]
    double = single & (l2 > 0) & (d < l2 + MARGINS_PM[1])
    triple = double & (l3 > 0) & (d < l3 + MARGINS_PM[2])
    orders = single.astype(np.int64) + double + triple
    np.fill_diagonal(orders, 0)
    return orders


def stable_atoms(elements: Sequence[str], positions: np.ndarray) -> np.ndarray:
    """[n] bool: the atom's bond orders sum exactly to its valence (H1 C4 N3 O2 F1)."""
    total = bond_orders(elements, positions).sum(1)
    return total == np.array([VALENCE[e] for e in elements])


def rdkit_molecule(structure: Structure, orders: np.ndarray | None = None,
                   with_charges: bool = False):
    """An RDKit molecule (not sanitised) with the structure's atoms, the bonds of `bond_orders`
    and its 3D conformer; with `with_charges`, also the structure's formal charges (EDM's
    metrics leave them out: its validity is that of the neutral distance-table molecule)."""
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    orders = bond_orders(structure.elements, structure.positions) if orders is None else orders
    bond_type = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
    mol = Chem.RWMol()
    charges = structure.charges if with_charges and structure.charges is not None else None
    for k, e in enumerate(structure.elements):
        atom = Chem.Atom(e)
        if charges is not None:
            atom.SetFormalCharge(int(charges[k]))
        mol.AddAtom(atom)
    for i, j in zip(*np.nonzero(np.triu(orders))):
        mol.AddBond(int(i), int(j), bond_type[int(orders[i, j])])
    conf = Chem.Conformer(structure.n_atoms)
    for k, (x, y, z) in enumerate(structure.positions.astype(float)):
        conf.SetAtomPosition(k, Point3D(x, y, z))
    mol = mol.GetMol()
    mol.AddConformer(conf, assignId=True)
    return mol


def largest_fragment_smiles(mol) -> str | None:
    """Canonical SMILES (hydrogens implicit) of the largest fragment (most atoms, hydrogens
    included, as in EDM) when RDKit sanitises `mol`, else None."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")  # invalid samples are expected; their messages are noise
    mol = Chem.Mol(mol)
    try:
        Chem.SanitizeMol(mol)
    except Exception:  # valence errors, kekulisation failures: all mean "invalid"
        return None
    fragments = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    largest = max(fragments, key=lambda m: m.GetNumAtoms())
    try:
        return Chem.MolToSmiles(Chem.RemoveHs(largest))  # hydrogens implicit: "CCO"
    except Exception:
        return None


def structure_smiles(structures: Iterable[Structure]) -> list[str | None]:
    """Largest-fragment SMILES (None when invalid) of each structure's distance-table molecule."""
    return [largest_fragment_smiles(rdkit_molecule(s)) for s in structures]


def molecule_metrics(structures: Sequence[Structure],
                     training_smiles: set[str] | None = None) -> dict[str, float]:
    """EDM's metrics of `structures`, in percent: atom_stability, mol_stability, validity,
    uniqueness (of the valid), valid_unique (fraction valid and unique), and novelty (of the
    unique valid; only with `training_smiles`). Empty structures count as unstable and invalid."""
    n_atoms = n_stable_atoms = n_stable_mols = 0
    smiles: list[str | None] = []
    for s in structures:
        if s.n_atoms == 0:
            smiles.append(None)
            continue
        stable = stable_atoms(s.elements, s.positions)
        n_atoms += s.n_atoms
        n_stable_atoms += int(stable.sum())
        n_stable_mols += int(stable.all())
    smiles = structure_smiles(s for s in structures if s.n_atoms > 0)
    smiles += [None] * (len(structures) - len(smiles))
    valid = [x for x in smiles if x is not None]
    unique = set(valid)
    n = max(len(structures), 1)
    out = {
        "atom_stability": 100.0 * n_stable_atoms / max(n_atoms, 1),
        "mol_stability": 100.0 * n_stable_mols / n,
        "validity": 100.0 * len(valid) / n,
        "uniqueness": 100.0 * len(unique) / max(len(valid), 1),
        "valid_unique": 100.0 * len(unique) / n,
    }
    if training_smiles is not None:
        out["novelty"] = 100.0 * len(unique - training_smiles) / max(len(unique), 1)
    return out


def fluorine_fraction(structures: Sequence[Structure]) -> float:
    """Percent of `structures` holding at least one F atom (the target property of the
    customisation benchmark, fluorine.py); empty structures count as without."""
    return 100.0 * sum("F" in s.elements for s in structures) / max(len(structures), 1)
