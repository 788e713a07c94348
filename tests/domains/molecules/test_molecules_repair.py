"""Scaffold-constrained completion in the molecules domain on a folder of small molecules, on CPU:
`toolkit inpaint --keep` end to end on a 2-step model (the kept atoms exact in the SDF, and to
1e-5 as the sampler returns them, in the input's own frame), its bad inputs as one line and a
non-zero exit, and the repair benchmark's code path at tiny sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rdkit import Chem

from diffusekit.core.app import cli
from diffusekit.core.app.repair import inpaint_model, parse_region
from diffusekit.core.app.training.models import load_model
from diffusekit.domains.molecules.repair import exactness, fragment_kept, kept_fragment, read_damaged
from diffusekit.domains.molecules.structures import Structure, write_xyz

from command_line import run_toolkit as _run
from molecule_builders import embedded

TINY = ["network.hidden=16", "network.n_layers=2", "data.batch_size=4", "trainer.max_steps=2",
        "val_every=2", "checkpoint_every=2", "sample.val_n=0", "sample.steps=3",
        "trainer.limit_val_batches=1", "sample.batch_size=4", "trainer.progress_bar=false"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-step molecules run on a folder of eight RDKit-embedded molecules."""
    from molecule_builders import EMBEDDED

    folder = tmp_path_factory.mktemp("mols")
    for k, smiles in enumerate(EMBEDDED):
        write_xyz([embedded(smiles)], folder / f"m{k}.xyz")
    root = tmp_path_factory.mktemp("runs")
    assert cli.main(["train", "--domain", "molecules", f"data.source={folder}",
                     f"run_dir={root}", *TINY]) == 0
    (path,) = (root / "molecules").iterdir()
    return path


@pytest.fixture
def acid(tmp_path):
    """Acetic acid (8 atoms) as an SDF, moved far from the origin (its own frame)."""
    mol = Chem.AddHs(Chem.MolFromSmiles("CC(=O)O"))
    from rdkit.Chem import AllChem

    AllChem.EmbedMolecule(mol, randomSeed=3)
    conf = mol.GetConformer()
    for i in range(mol.GetNumAtoms()):
        p = conf.GetAtomPosition(i)
        conf.SetAtomPosition(i, (p.x + 7.25, p.y - 3.5, p.z + 1.0))
    path = tmp_path / "acid.sdf"
    Chem.MolToMolFile(mol, str(path))
    return path


@pytest.mark.parametrize(("method", "weight"), [("replace", 0), ("repaint", 0), ("replace", 3)],
                         ids=["replace", "repaint", "reconstruction-guided"])
def test_completions_keep_the_given_atoms(run, acid, tmp_path, capsys, monkeypatch, method, weight):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(capsys, "inpaint", "--run", str(run), str(acid), "--keep", "0-3",
                        "--method", method, "--steps", "4", "-n", "3", "--out", "out",
                        "inpaint.jump_length=2", "inpaint.resamplings=2", f"inpaint.reconstruction={weight}")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "acid-completions.png", "acid-completions.sdf", "acid-completions.xyz"]
    given = next(iter(Chem.SDMolSupplier(str(acid), removeHs=False, sanitize=False)))
    out = list(Chem.SDMolSupplier(str(tmp_path / "out" / "acid-completions.sdf"),
                                  removeHs=False, sanitize=False))
    assert len(out) == 3
    for mol in out:
        assert mol.GetNumAtoms() == given.GetNumAtoms()
        for i in range(4):
            assert mol.GetAtomWithIdx(i).GetSymbol() == given.GetAtomWithIdx(i).GetSymbol()
            np.testing.assert_allclose(mol.GetConformer().GetPositions()[i],
                                       given.GetConformer().GetPositions()[i], atol=1e-4)
    # as the sampler returns them (before any pasting): positions to 1e-5 in the input's frame
    model = load_model(run)
    model.cfg.inpaint.reconstruction = weight  # the domain's default is 10, for trained models
    damaged = read_damaged(acid, parse_region(keep="0-3"), model.cfg)
    samples = inpaint_model(model, damaged, steps=3, n=2, method=method, progress=False)
    known = damaged.known.expand(2, -1)
    batch = {"x0": damaged.batch["x0"].expand(2, -1, -1)}
    found = exactness(samples, batch, known)
    assert found["kept_max_position_error"] < 1e-5 and found["kept_features_exact"]
    positions = torch.from_numpy(given.GetConformer().GetPositions())
    torch.testing.assert_close(samples[:, :4, :3].double(), positions[:4].expand(2, -1, -1),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("args, words", [
    (["--keep", "0,8"], "out of range"),
    (["--keep", "0-x"], "list of indices"),
    (["--box", "0,0,1,1"], "does not take --box"),
    ([], "--keep"),
    (["--keep", "0-3", "--average", "2"], "cannot be averaged"),
])
def test_bad_input_is_one_line_and_a_nonzero_exit(run, acid, tmp_path, capsys, args, words):
    code, _, err = _run(capsys, "inpaint", "--run", str(run), str(acid), *args, "--out",
                        str(tmp_path / "o"))
    assert code != 0 and len(err) == 1 and err[0].startswith("error:"), err
    assert words in err[0]


def test_an_unreadable_input_is_one_line(run, tmp_path, capsys):
    (tmp_path / "junk.sdf").write_text("not a molecule\n$$$$\n")
    code, _, err = _run(capsys, "inpaint", "--run", str(run), str(tmp_path / "junk.sdf"),
                        "--keep", "0", "--out", str(tmp_path / "o"))
    assert code != 0 and len(err) == 1 and "no readable molecule" in err[0], err


def test_kept_fragments_are_connected_and_sized():
    molecule = embedded("NCC(=O)O")  # 10 atoms
    rng = np.random.default_rng(0)
    for share in (0.3, 0.5, 0.7):
        keep = kept_fragment(molecule, share, rng)
        assert int(keep.sum()) == round(share * molecule.n_atoms)
        assert fragment_kept(molecule, keep)  # the molecule itself is valid and holds it
    broken = Structure(molecule.elements, molecule.positions * 3.0)  # no bonds at all
    assert not fragment_kept(broken, kept_fragment(molecule, 0.5, rng))


def test_the_repair_benchmark_writes_its_record(run, tmp_path, capsys):
    folder = load_model(run).cfg.data.source
    results = tmp_path / "results"
    code, _, err = _run(capsys, "benchmark", "--domain", "molecules", "--repair", "--quick",
                        f"data.source={folder}", *TINY[:3], "trainer.progress_bar=false",
                        "repair.quick_train_steps=2", "repair.quick_n_test=4",
                        "repair.steps=[2,3]", "repair.repaint_steps=[2]", "repair.samplers=[ddpm]",
                        "repair.resamplings=[2]", "repair.jump_length=1",
                        "repair.reconstruction=[2]", "repair.reconstruction_steps=[2]",
                        "repair.unconditional_steps=[2]", "repair.figure_molecules=2",
                        f"repair.results_dir={results}")
    assert code == 0, err
    record = json.loads((results / "molecules_repair_quick.json").read_text())
    rows = record["metrics"]["rows"]
    assert [r["system"] for r in rows] == ["replace-2 (ddpm)", "replace-3 (ddpm)",
                                           "repaint-2x2-j1 (ddpm)", "replace-2 +rg2 (ddpm)"]
    assert [r["nfe"] for r in rows] == [2, 3, 3, 6]  # a guided call counts 3
    assert all(r["kept_max_position_error"] < 1e-5 and r["kept_features_exact"] for r in rows)
    assert record["metrics"]["target_kept_exact"] is True
    assert set(record["baselines"]) == {"unconditional_ddpm_2", "test_molecules"}
    assert (results / "molecules_repair_quick.png").is_file()
