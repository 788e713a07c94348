"""The molecule domain through `toolkit`: a few-step CPU train, sample and evaluate on a folder of
structure files, and bad input as one error line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rdkit import Chem

from diffusekit.domains.molecules.data import MoleculeDataModule

TINY = ["network.hidden=16", "network.n_layers=2", "data.batch_size=4", "trainer.max_steps=4",
        "val_every=2", "checkpoint_every=2", "sample.val_n=2", "sample.steps=3",
        "trainer.limit_val_batches=1", "sample.batch_size=4", "trainer.progress_bar=false"]


def test_train_sample_evaluate_on_a_folder(toolkit, molecule_folder):
    source = f"data.source={molecule_folder}"
    code, out, err = toolkit("prepare", "--domain", "molecules", source)
    assert code == 0 and "train 8, val 1, test 1; 2 files skipped" in out

    code, out, err = toolkit("train", "--domain", "molecules", source, *TINY)
    assert code == 0, err
    run = Path(out.strip().splitlines()[-1].split(": ")[-1])
    assert (run / "model.safetensors").exists()
    assert (run / "samples" / "step-000004" / "molecules.png").exists()

    code, out, err = toolkit("sample", "--run", str(run), "--sampler", "ddpm", "--steps", "5",
                             "-n", "3")
    assert code == 0, err
    folder = run / "samples" / "ddpm-5"
    sdf = [m for m in Chem.SDMolSupplier(str(folder / "samples.sdf"), removeHs=False,
                                         sanitize=False)]
    assert len(sdf) == 3 and all(m.GetNumConformers() == 1 for m in sdf)
    # atom counts drawn from the training split's histogram (EDM), not copied from test molecules
    dm = MoleculeDataModule(str(molecule_folder))
    training_sizes = set(np.nonzero(dm.atom_count_histogram())[0].tolist())
    assert {m.GetNumAtoms() for m in sdf} <= training_sizes
    xyz = (folder / "samples.xyz").read_text().splitlines()
    assert int(xyz[0]) == sdf[0].GetNumAtoms()
    assert (folder / "molecules.png").read_bytes()[:4] == b"\x89PNG"

    code, out, err = toolkit("evaluate", "--run", str(run), "--steps", "3", "-n", "5")
    assert code == 0, err
    for name in ("atom_stability", "mol_stability", "validity", "uniqueness", "novelty"):
        assert name in out


def test_bad_folder_and_missing_cache_are_one_line_errors(toolkit, tmp_path):
    code, out, err = toolkit("prepare", "--domain", "molecules",
                             f"data.source={tmp_path / 'missing'}")
    assert code != 0 and len(err) == 1 and err[0].startswith("error: molecule folder")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.sdf").write_text("this is not an SDF record\n$$$$\n")
    (bad / "y.xyz").write_text("2\n\nC 0 0 0\n")
    code, out, err = toolkit("train", "--domain", "molecules", f"data.source={bad}", *TINY)
    assert code != 0 and len(err) == 1 and "2 files, 2 skipped" in err[0]
    assert not any("Traceback" in line for line in err)
    code, out, err = toolkit("train", "--domain", "molecules", *TINY)  # qm9 without the cache
    assert code != 0 and err == ["error: the QM9 cache is missing; run `toolkit prepare "
                                 "--domain molecules` first"]


def test_formal_charge_channel_trains_and_writes_charged_sdf(toolkit, molecule_folder):
    source = f"data.source={molecule_folder}"
    code, out, err = toolkit("train", "--domain", "molecules", source, *TINY,
                             "data.formal_charge_scale=0.25", "sample.val_n=0")
    assert code == 0, err
    run = Path(out.strip().splitlines()[-1].split(": ")[-1])
    code, out, err = toolkit("sample", "--run", str(run), "--steps", "3", "-n", "2")
    assert code == 0, err
    sdf = [m for m in Chem.SDMolSupplier(str(next(run.glob("samples/*-3")) / "samples.sdf"),
                                         removeHs=False, sanitize=False)]
    assert len(sdf) == 2  # 7 features generated; charges, rounded to -1 / 0 / 1, in the SDF
    assert all(a.GetFormalCharge() in (-1, 0, 1) for m in sdf for a in m.GetAtoms())
