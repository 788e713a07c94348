"""EDM's metrics on hand-built molecules, and on QM9's own test molecules (the published data row)."""

from __future__ import annotations

import numpy as np
import pytest

from molecule_builders import carbon_with_five_bonds, embedded, methane
from diffusekit.domains.molecules.metrics import (bond_orders, largest_fragment_smiles,
                                                  molecule_metrics, rdkit_molecule, stable_atoms)
from diffusekit.domains.molecules.structures import Structure


def test_methane_is_stable_and_valid():
    m = methane()
    orders = bond_orders(m.elements, m.positions)
    assert orders[0].tolist() == [0, 1, 1, 1, 1] and orders[1:, 1:].sum() == 0
    assert stable_atoms(m.elements, m.positions).all()
    assert largest_fragment_smiles(rdkit_molecule(m)) == "C"
    assert molecule_metrics([m]) == pytest.approx(
        {"atom_stability": 100, "mol_stability": 100, "validity": 100, "uniqueness": 100,
         "valid_unique": 100})


def test_a_carbon_with_five_bonds_is_unstable_and_invalid():
    m = carbon_with_five_bonds()
    assert bond_orders(m.elements, m.positions)[0].sum() == 5
    stable = stable_atoms(m.elements, m.positions)
    assert not stable[0] and stable[1:].all()  # every H has its one bond, the C has five
    scores = molecule_metrics([m])
    assert scores["atom_stability"] == pytest.approx(500 / 6)
    assert scores["mol_stability"] == 0 and scores["validity"] == 0  # RDKit rejects C valence 5


@pytest.mark.parametrize("distance, order", [(1.54, 1), (1.40, 1), (1.33, 2), (1.21, 3),
                                             (1.70, 0)])
def test_carbon_carbon_bond_order_follows_the_length_tables(distance, order):
    # single < 154 + 10 pm, double < 134 + 5 pm, triple < 120 + 3 pm (EDM's margins)
    orders = bond_orders(("C", "C"), np.array([[0, 0, 0], [distance, 0, 0]]))
    assert orders[0, 1] == orders[1, 0] == order


def test_embedded_molecules_read_back_as_themselves():
    for smiles in ["CCO", "CC#N", "C=CC=O", "CC(=O)O"]:  # (aromatic rings defeat the tables)
        s = embedded(smiles)
        assert stable_atoms(s.elements, s.positions).all(), smiles
        from rdkit import Chem

        expected = Chem.MolToSmiles(Chem.MolFromSmiles(smiles))
        assert largest_fragment_smiles(rdkit_molecule(s)) == expected


def test_uniqueness_novelty_and_fragments():
    far_water = Structure(("O", "H", "H", "C", "H", "H", "H", "H"), np.vstack([
        [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], methane().positions + 10.0]))
    assert largest_fragment_smiles(rdkit_molecule(far_water)) == "C"  # methane has 5 atoms > 3
    scores = molecule_metrics([methane(), methane(), embedded("CCO")], training_smiles={"C"})
    assert scores["validity"] == 100
    assert scores["uniqueness"] == pytest.approx(200 / 3)
    assert scores["valid_unique"] == pytest.approx(200 / 3)
    assert scores["novelty"] == 50  # CCO is new, C is in the training set
    empty = molecule_metrics([Structure((), np.zeros((0, 3)))])
    assert empty["validity"] == 0 and empty["mol_stability"] == 0


@pytest.mark.slow
def test_qm9_test_molecules_reproduce_the_published_data_row(qm9_cache):
    """EDM's "Data" row (atom 99.0, molecule 95.2, valid 97.7) within half a point. Prepares the
    real cache in a temporary folder (it downloads the qm9pack wheel)."""
    from diffusekit.domains.molecules.data import QM9_SPLIT, MoleculeDataModule

    dm = MoleculeDataModule("qm9")
    dm.setup()
    test = dm.splits["test"]
    assert [len(dm.splits[k]) for k in ("train", "val", "test")] == list(QM9_SPLIT)
    scores = molecule_metrics([test.structure(k) for k in range(len(test))])
    assert abs(scores["atom_stability"] - 99.0) <= 0.5
    assert abs(scores["mol_stability"] - 95.2) <= 0.5
    assert abs(scores["validity"] - 97.7) <= 0.5
