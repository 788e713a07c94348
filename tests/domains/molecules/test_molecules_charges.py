"""Formal charges: carried from a SMILES onto a geometry's atoms, the geometry fallback, the cache
(v3, and the upgrade of a v2 cache), the PyG items and the optional feature channel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from molecule_builders import embedded, methane
from diffusekit.domains.molecules import data as data_module
from diffusekit.domains.molecules.charges import (charges_from_geometry, charges_from_smiles,
                                                  derive_formal_charges, has_charged_atom,
                                                  molecule_charges)
from diffusekit.domains.molecules.data import (DenseCollate, FeatureCodec, MoleculeDataset,
                                               MoleculeSet, prepare_qm9)
from diffusekit.domains.molecules.structures import Structure, read_structure_file

ZWITTERION = "[NH3+]CCC([O-])=O"  # QM9's dsgdb9nsd_000271 (beta-alanine) as qm9pack writes it


def _shuffled(structure: Structure, seed: int = 0) -> Structure:
    """The same molecule with its atoms in a random order (the geometry's order is not the
    SMILES's)."""
    perm = np.random.default_rng(seed).permutation(structure.n_atoms)
    return Structure(tuple(structure.elements[i] for i in perm), structure.positions[perm])


@pytest.fixture(scope="module")
def zwitterion() -> Structure:
    return _shuffled(embedded(ZWITTERION))


def test_smiles_with_charges_are_recognised():
    assert has_charged_atom(ZWITTERION) and has_charged_atom("C[N-]C")
    assert not has_charged_atom("C-C(=O)O") and not has_charged_atom("[C@@H](O)(F)C")


def test_zwitterion_charges_land_on_its_nitrogen_and_one_oxygen(zwitterion):
    charges = charges_from_smiles(zwitterion, ZWITTERION)
    elements = np.array(zwitterion.elements)
    assert charges.sum() == 0
    assert charges[elements == "N"].tolist() == [1]
    assert sorted(charges[elements == "O"].tolist()) == [-1, 0]
    assert (charges[(elements != "N") & (elements != "O")] == 0).all()
    assert molecule_charges(zwitterion, ZWITTERION)[1] == "smiles"


def test_a_smiles_of_another_graph_falls_back_to_the_geometry(zwitterion):
    assert charges_from_smiles(zwitterion, "NCCC(O)=O") is None  # an H moved: another graph
    assert charges_from_smiles(zwitterion, "not a smiles") is None
    charges, source = molecule_charges(zwitterion, "[NH3+]CC([O-])=O")  # one carbon short
    assert source == "geometry" and charges.sum() == 0  # QM9 molecules are neutral overall
    geometry = charges_from_geometry(zwitterion)
    assert geometry is not None and geometry.sum() == 0


def test_neutral_molecules_have_zero_charges():
    charges, source = molecule_charges(methane(), "C")
    assert source == "neutral" and charges.tolist() == [0] * 5
    for smiles in ["CCO", "CC#N", "C=CC=O"]:
        charges, source = molecule_charges(embedded(smiles), None)  # an XYZ frame: geometry
        assert source == "geometry" and (charges == 0).all(), smiles
    flat, sources, counts = derive_formal_charges([methane(), embedded("CCO")], ["C", "CCO"],
                                                  progress=False)
    assert flat.shape == (5 + 9,) and sources.tolist() == [0, 0] and counts["neutral"] == 2


def test_sdf_files_keep_their_charges(tmp_path):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(ZWITTERION))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    Chem.MolToMolFile(mol, str(tmp_path / "zw.sdf"))
    (structure,) = read_structure_file(tmp_path / "zw.sdf")
    assert sorted(structure.charges.tolist()) == [-1] + [0] * 11 + [1]


def test_cache_round_trip_and_v2_upgrade(tmp_path, monkeypatch, zwitterion):
    structures = [methane(), zwitterion]
    old = MoleculeSet.from_structures(structures, ["C", "geometry smiles"])
    old.charges = None  # a v2 file: no charges saved
    np.savez_compressed(tmp_path / "qm9-v2.npz", types=old.types, positions=old.positions,
                        offsets=old.offsets, smiles=old.smiles)
    assert MoleculeSet.load(tmp_path / "qm9-v2.npz").charges.tolist() == [0] * 18
    monkeypatch.setattr(data_module, "read_qm9pack", lambda cache: (structures, ["C", ZWITTERION]))
    path = prepare_qm9(tmp_path, progress=False)
    assert path.name == "qm9-v3.npz" and not (tmp_path / "qm9-v2.npz").exists()
    new = MoleculeSet.load(path)
    assert new.smiles.tolist() == ["C", "geometry smiles"]  # kept, not recomputed
    assert new.charge_source.tolist() == [0, 1]  # neutral, smiles
    assert new.structure(0).charges.tolist() == [0] * 5
    assert new.structure(1).charges.tolist() == charges_from_smiles(zwitterion, ZWITTERION).tolist()
    sub = new.subset(np.array([1]))
    assert sub.charges.tolist() == new.structure(1).charges.tolist()
    assert sub.charge_source.tolist() == [1]


def test_items_and_batches_carry_charges_and_the_optional_channel(zwitterion):
    charges = charges_from_smiles(zwitterion, ZWITTERION)
    molecules = MoleculeSet.from_structures([methane(), zwitterion],
                                            charges=np.concatenate([np.zeros(5), charges]))
    item = MoleculeDataset(molecules)[1]
    assert item.formal_charge.tolist() == charges.tolist() and item.formal_charge.dtype == torch.long
    items = [MoleculeDataset(molecules)[k] for k in range(2)]
    batch = DenseCollate(FeatureCodec(), max_atoms=15)(items)
    assert batch["x0"].shape == (2, 15, 9) and batch["formal_charge"].shape == (2, 15)
    assert batch["formal_charge"][1, :13].tolist() == charges.tolist()
    codec = FeatureCodec(formal_charge_scale=0.25)
    batch = DenseCollate(codec, max_atoms=15)(items)
    assert codec.n_features == 7 and batch["x0"].shape == (2, 15, 10)
    assert batch["x0"][1, :13, -1].tolist() == (0.25 * charges).tolist()
    decoded = codec.decode(batch["x0"] + 0.05, batch["mask"])  # noise below half a step
    assert decoded[1].charges.tolist() == charges.tolist()
    with pytest.raises(ValueError, match="formal charges"):
        codec.encode(batch["x0"][..., :3], torch.zeros(2, 15, dtype=torch.long), batch["mask"])


@pytest.mark.slow
def test_qm9_cache_charges(qm9_cache):
    """Every QM9 molecule sums to 0; dsgdb9nsd_000271 (beta-alanine, row 263 of qm9pack: the
    3,054 molecules QM9 flags as uncharacterised are not in it) is the zwitterion; all 443
    charged SMILES map onto their geometries. Prepares the real cache (in a temporary folder)."""
    qm9 = MoleculeSet.load(qm9_cache)
    sums = np.add.reduceat(qm9.charges.astype(np.int64), qm9.offsets[:-1])
    assert (sums == 0).all()
    beta_alanine = qm9.structure(263)
    elements = np.array(beta_alanine.elements)
    assert beta_alanine.charges[elements == "N"].tolist() == [1]
    assert sorted(beta_alanine.charges[elements == "O"].tolist()) == [-1, 0]
    counts = np.bincount(qm9.charge_source, minlength=4)
    assert counts.tolist() == [len(qm9) - 443, 443, 0, 0]  # neutral, smiles, geometry, failed
