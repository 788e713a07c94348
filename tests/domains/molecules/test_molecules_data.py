"""Structure files, the QM9 CSV reader, molecule sets and the dense PyG collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from molecule_builders import methane
from diffusekit.core.errors import DataError
from diffusekit.domains.molecules.data import (FeatureCodec, MoleculeDataModule, MoleculeSet,
                                               load_folder, split_indices)
from diffusekit.domains.molecules.structures import read_qm9_csv, read_structure_file

QM9_ROWS = '''XYZ_file,Index,SMILES,Elements,XYZ_Ang,N_atoms
"dsgdb9nsd_000001.xyz",1,"C","['C','H','H','H','H']","[[-0.0126981359,1.0858041578,0.0080009958],[0.002150416,-0.0060313176,0.0019761204],[1.0117308433,1.4637511618,0.0002765748],[-0.540815069,1.4475266138,-0.8766437152],[-0.5238136345,1.4379326443,0.9063972942]]",5
"dsgdb9nsd_000003.xyz",3,"O","['O','H','H']","[[0.,0.3,1.2e-05],[0.,-0.5,0.],[.5,0.,0.]]",3
'''


def test_qm9_csv_rows_parse_numbers_like_0_dot(tmp_path):
    path = tmp_path / "qm9_part1.csv"
    path.write_text(QM9_ROWS)
    rows = list(read_qm9_csv(path))
    assert [smi for _, smi in rows] == ["C", "O"]
    methane_row, water = rows[0][0], rows[1][0]
    assert methane_row.elements == ("C", "H", "H", "H", "H")
    assert methane_row.positions[2, 0] == pytest.approx(1.0117308433)
    np.testing.assert_allclose(water.positions, [[0, 0.3, 1.2e-5], [0, -0.5, 0], [0.5, 0, 0]])
    path.write_text(QM9_ROWS.replace(",0.9063972942]]", "]]"))
    with pytest.raises(ValueError, match="coordinates"):
        list(read_qm9_csv(path))


def test_folder_reads_xyz_and_sdf_and_counts_skipped_files(molecule_folder):
    molecules, skipped = load_folder(molecule_folder)
    assert len(molecules) == 10 and skipped == 2  # broken.xyz, chloro.sdf; notes.txt ignored
    assert read_structure_file(molecule_folder / "broken.xyz") == []
    assert read_structure_file(molecule_folder / "chloro.sdf") == []
    first = molecules.structure(0)
    assert first.elements == methane().elements
    np.testing.assert_allclose(first.positions, methane().positions, atol=1e-6)


def test_bad_folders_raise_one_clear_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_folder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "bad.xyz").write_text("garbage\n")
    with pytest.raises(DataError, match=r"no readable .*\(1 files, 1 skipped\)"):
        load_folder(tmp_path / "empty")


def test_molecule_set_subset_and_save_round_trip(tmp_path, embedded_structures):
    ms = MoleculeSet.from_structures(embedded_structures, [f"s{k}" for k in range(8)])
    sub = ms.subset(np.array([5, 0, 2]))
    for k, j in enumerate([5, 0, 2]):
        assert sub.structure(k).elements == ms.structure(j).elements
        np.testing.assert_allclose(sub.structure(k).positions, ms.structure(j).positions)
    assert sub.smiles.tolist() == ["s5", "s0", "s2"]
    ms.save(tmp_path / "set.npz")
    back = MoleculeSet.load(tmp_path / "set.npz")
    assert (back.types == ms.types).all() and (back.offsets == ms.offsets).all()
    parts = split_indices(10, (6, 2, 2), seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(10))
    assert all((a == b).all() for a, b in zip(parts, split_indices(10, (6, 2, 2), seed=0)))


def test_batches_are_dense_centred_and_decode_back(molecule_folder):
    dm = MoleculeDataModule(str(molecule_folder), batch_size=4, max_atoms=20, seed=0)
    dm.setup()
    assert sum(len(s) for s in dm.splits.values()) == 10
    batch = next(iter(dm.train_dataloader()))
    x0, mask = batch["x0"], batch["mask"]
    assert x0.shape == (4, 20, 9) and mask.shape == (4, 20)
    assert batch["cond"]["node_mask"] is mask
    com = (x0[..., :3] * mask[..., None]).sum(1)
    assert com.abs().max() < 1e-4
    assert (x0[~mask] == 0).all()
    assert torch.allclose(x0[mask][:, 3:8].sum(-1), torch.tensor(0.25))  # scaled one-hot
    decoded = FeatureCodec().decode(x0, mask)
    originals = {dm.splits["train"].structure(k).elements for k in range(len(dm.splits["train"]))}
    assert all(s.elements in originals for s in decoded)
    hist = dm.atom_count_histogram()
    assert hist.sum() == len(dm.splits["train"]) and len(hist) == 21
    with pytest.raises(DataError, match="max_atoms"):
        MoleculeDataModule(str(molecule_folder), max_atoms=5).setup()


def test_missing_qm9_cache_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFUSEKIT_DATA", str(tmp_path))
    with pytest.raises(DataError, match="toolkit prepare --domain molecules"):
        MoleculeDataModule("qm9").setup()


def test_predict_batches_draw_sizes_from_the_training_histogram(molecule_folder):
    dm = MoleculeDataModule(str(molecule_folder), batch_size=50, max_atoms=20, seed=0)
    hist = dm.atom_count_histogram()
    batches = iter(dm.predict_dataloader())
    sizes = torch.cat([next(batches)["mask"].sum(1) for _ in range(40)])  # 2000 molecules
    assert set(sizes.tolist()) == set(np.nonzero(hist)[0].tolist())  # training sizes only
    drawn = np.bincount(sizes.numpy(), minlength=len(hist)) / len(sizes)
    np.testing.assert_allclose(drawn, hist / hist.sum(), atol=0.03)
    first = next(iter(dm.predict_dataloader()))
    again = next(iter(dm.predict_dataloader()))
    assert torch.equal(first["mask"], again["mask"])  # seeded by data.seed
    assert first["x0"].shape == (50, 20, 9) and (first["x0"] == 0).all()
    assert first["cond"]["node_mask"] is first["mask"]
