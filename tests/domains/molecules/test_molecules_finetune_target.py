"""The molecule domain's customisation target: QM9's molecules with fluorine, cut along the base's
split (fluorine only, at most 10% of the base's training molecules, no test molecule the base
trained on), and fluorine_fraction. A tiny QM9-like cache (80 embedded molecules, the split sizes
patched to 60 / 10 / 10) stands in for QM9: nothing is downloaded, the real cache is never read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusekit.core.app import config
from diffusekit.core.errors import DataError
from diffusekit.domains.molecules import data as molecule_data
from diffusekit.domains.molecules.data import FeatureCodec, MoleculeDataModule, MoleculeSet
from diffusekit.domains.molecules.domain import MoleculeDomain
from diffusekit.domains.molecules.fluorine import (FLUORINE_FOLDER, MAX_SHARE, TARGET_FILE,
                                                   build_fluorine, fluorine_mask)
from diffusekit.domains.molecules.metrics import fluorine_fraction
from diffusekit.domains.molecules.structures import Structure
from molecule_builders import embedded, methane

TINY_SPLIT = (60, 10, 10)
KINDS = ["CCO", "CF", "CC#N", "FC(F)F", "c1ccncc1", "OCCF"]  # half of them hold fluorine
TINY = ["network.hidden=16", "network.n_layers=1", "data.batch_size=8", "sample.steps=4",
        "trainer.progress_bar=false"]


@pytest.fixture(scope="module")
def kinds() -> list[Structure]:
    return [embedded(s) for s in KINDS]


def write_tiny_qm9(kinds: list[Structure], cache: Path) -> Path:
    """A QM9-like cache of 80 molecules in `cache` (a data cache's molecules folder). Every
    molecule is one of `KINDS` moved by its own offset, so each is told apart by its positions."""
    structures = [Structure(kinds[k % len(kinds)].elements,
                            kinds[k % len(kinds)].positions + [0.5 * k, 0.0, 0.0])
                  for k in range(sum(TINY_SPLIT))]
    smiles = [KINDS[k % len(KINDS)] for k in range(sum(TINY_SPLIT))]
    cache.mkdir(parents=True, exist_ok=True)
    MoleculeSet.from_structures(structures, smiles).save(cache / molecule_data.QM9_CACHE)
    return cache / molecule_data.QM9_CACHE


@pytest.fixture
def tiny_qm9(monkeypatch, tmp_path, kinds) -> Path:
    """The tiny QM9 in tmp_path's data cache, split 60 / 10 / 10."""
    monkeypatch.setenv("DIFFUSEKIT_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(molecule_data, "QM9_SPLIT", TINY_SPLIT)
    return write_tiny_qm9(kinds, tmp_path / "data" / "molecules")


def molecules_config(*overrides: str):
    return config.compose(MoleculeDomain().default_config(), domain="molecules",
                          overrides=[*TINY, *overrides])


def found_in(molecules: MoleculeSet, reference: MoleculeSet) -> list[int | None]:
    """For each molecule, the index of the same one in `reference` (same elements, positions
    within 1e-3 A: the SDF keeps 4 decimals), or None."""
    out = []
    for k in range(len(molecules)):
        s = molecules.structure(k)
        out.append(next((j for j in range(len(reference))
                         if reference.structure(j).elements == s.elements
                         and np.abs(reference.structure(j).positions - s.positions).max() < 1e-3),
                        None))
    return out


def splits_of(cfg) -> dict[str, MoleculeSet]:
    datamodule = MoleculeDataModule.from_config(cfg)
    datamodule.setup()
    return datamodule.splits


@pytest.mark.parametrize("seed", [0, 3])
def test_the_target_is_fluorine_molecules_held_out_from_the_base(tiny_qm9, seed):
    cfg = molecules_config(f"data.seed={seed}")
    target = MoleculeDomain().finetune_target(cfg)
    assert (target["metric"], target["higher_is_better"]) == ("test_loss", False)
    folder = tiny_qm9.parent / FLUORINE_FOLDER
    assert f"data.source={folder}" in target["overrides"] and "data.limit=null" in target[
        "overrides"]
    assert sorted(p.name for p in folder.iterdir()) == [TARGET_FILE]

    on_target = splits_of(config.override(cfg, overrides=target["overrides"]))
    base = splits_of(cfg)
    assert {k: len(v) for k, v in base.items()} == dict(zip(("train", "val", "test"), TINY_SPLIT))
    for name, molecules in on_target.items():
        assert len(molecules) > 0 and fluorine_mask(molecules).all(), name
    # at most 10% of the base's 60 training molecules; the cap binds here (30 hold fluorine)
    assert len(on_target["train"]) == int(MAX_SHARE * TINY_SPLIT[0]) == 6
    assert fluorine_mask(base["train"]).sum() > 6
    # every held-out molecule comes from the base's own held-out split, never its training one
    assert found_in(on_target["test"], base["train"]) == [None] * len(on_target["test"])
    assert found_in(on_target["val"], base["train"]) == [None] * len(on_target["val"])
    for name in ("val", "test"):
        with_fluorine = np.flatnonzero(fluorine_mask(base[name])).tolist()
        assert found_in(on_target[name], base[name]) == with_fluorine, name
    assert None not in found_in(on_target["train"], base["train"])


def test_the_target_is_rebuilt_the_same_and_follows_the_base_limit(tiny_qm9):
    cfg = molecules_config()
    first = build_fluorine(cfg)
    content = (first.folder / TARGET_FILE).read_bytes()
    again = build_fluorine(cfg)
    assert (again.folder / TARGET_FILE).read_bytes() == content
    assert again.folder_split == first.folder_split and again.base_train == 60

    limited = build_fluorine(molecules_config("data.limit=30"))
    assert limited.base_train == 30 and len(limited.splits["train"]) == 3
    trained_on = splits_of(molecules_config("data.limit=30"))["train"]
    assert found_in(limited.splits["test"], trained_on) == [None] * len(limited.splits["test"])


def test_a_base_without_room_or_fluorine_and_a_foreign_file_are_refused(tiny_qm9, tmp_path):
    with pytest.raises(DataError, match="at most 10%"):
        build_fluorine(molecules_config("data.limit=9"))

    plain = tmp_path / "plain"
    plain.mkdir()
    from diffusekit.domains.molecules.structures import write_xyz

    write_xyz([Structure(methane().elements, methane().positions + k) for k in range(40)],
              plain / "methanes.xyz")
    with pytest.raises(DataError, match="no molecule with fluorine"):
        build_fluorine(molecules_config(f"data.source={plain}"), tmp_path / "target")

    folder = tmp_path / "target"
    assert not folder.exists()  # a refused target leaves nothing behind
    folder.mkdir()
    (folder / "mine.sdf").write_text("my own molecule")
    with pytest.raises(DataError, match="mine.sdf"):
        build_fluorine(molecules_config(), folder)
    assert (folder / "mine.sdf").read_text() == "my own molecule"
    assert not (folder / TARGET_FILE).exists()


def test_fluorine_fraction_counts_molecules_with_an_f_atom(kinds):
    fluoromethane, ethanol = kinds[KINDS.index("CF")], kinds[KINDS.index("CCO")]
    empty = Structure((), np.zeros((0, 3)))
    assert fluorine_fraction([fluoromethane, ethanol, methane(), empty]) == 25.0
    assert fluorine_fraction([fluoromethane, kinds[KINDS.index("FC(F)F")]]) == 100.0
    assert fluorine_fraction([]) == 0.0

    # the domain's evaluate decodes the samples' atom types and reports it beside EDM's metrics
    cfg = molecules_config("evaluate.novelty=false")
    structures = [fluoromethane, ethanol, methane(), kinds[KINDS.index("OCCF")]]
    n = max(s.n_atoms for s in structures)
    pos = torch.zeros(4, n, 3)
    types = torch.zeros(4, n, dtype=torch.long)
    mask = torch.zeros(4, n, dtype=torch.bool)
    index = {e: i for i, e in enumerate(molecule_data.ELEMENTS)}
    for b, s in enumerate(structures):
        pos[b, : s.n_atoms] = torch.from_numpy(s.positions).float()
        types[b, : s.n_atoms] = torch.tensor([index[e] for e in s.elements])
        mask[b, : s.n_atoms] = True
    samples = FeatureCodec().encode(pos, types, mask)
    scores = MoleculeDomain().evaluate({"mask": mask}, samples, cfg)
    assert scores["fluorine_fraction"] == 50.0 and scores["validity"] == 100.0


def test_the_finetune_benchmark_runs_on_the_fluorine_target(toolkit, tmp_path, monkeypatch,
                                                            kinds):
    monkeypatch.setattr(molecule_data, "QM9_SPLIT", TINY_SPLIT)
    write_tiny_qm9(kinds, tmp_path / "cache" / "molecules")  # the toolkit fixture's data cache
    code, out, err = toolkit("benchmark", "--domain", "molecules", "--finetune", "--quick",
                             "finetune.quick_base_steps=3", "finetune.quick_steps=2",
                             "finetune.quick_eval_n=4", f"finetune.results_dir={tmp_path}/res",
                             *TINY)
    assert code == 0, err
    metrics = json.loads((tmp_path / "res" / "molecules_finetune_quick.json").read_text())[
        "metrics"]
    assert metrics["metric"] == "test_loss" and metrics["higher_is_better"] is False
    assert metrics["target"][0] == "data.source=$DIFFUSEKIT_DATA/molecules/fluorine"
    for name in ("base", "lora", "full", "scratch"):
        scores = metrics["scores"][name]
        assert 0 < scores["test_loss"] < float("inf")
        assert 0 <= scores["fluorine_fraction"] <= 100
    assert any("6 training molecules with fluorine" in line for line in err)
