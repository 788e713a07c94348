"""Distilling the molecule generator (a folder of structure files, a tiny EGNN, CPU): the student
keeps EDM's zero centre of mass, and the distillation benchmark scores it with EDM's metrics."""

from __future__ import annotations

import json

import torch

from diffusekit.core.app import config as configuration
from diffusekit.core.app.distill_benchmark import run_distill_benchmark
from diffusekit.core.app.training.models import load_model
from diffusekit.domains.molecules.domain import MoleculeDomain

TINY = ["network.hidden=16", "network.n_layers=2", "data.batch_size=4", "val_every=2", "checkpoint_every=2",
        "sample.val_n=0", "trainer.limit_val_batches=1", "sample.batch_size=4", "trainer.progress_bar=false",
        "distill.grid_steps=4"]


def test_a_molecule_student_keeps_zero_centre_of_mass(toolkit, molecule_folder, tmp_path):
    source = f"data.source={molecule_folder}"
    assert toolkit("prepare", "--domain", "molecules", source)[0] == 0
    code, out, err = toolkit("train", "--domain", "molecules", source, *TINY, "trainer.max_steps=2")
    assert code == 0, err
    (teacher,) = (tmp_path / "runs" / "molecules").iterdir()
    code, out, err = toolkit("distill", "--run", str(teacher), *TINY, "distill.max_steps=2", "distill.steps=2")
    assert code == 0, err
    (student,) = set((tmp_path / "runs" / "molecules").iterdir()) - {teacher}
    model = load_model(student)
    sizes = torch.tensor([5, 3])
    mask = torch.arange(5)[None, :] < sizes[:, None]
    batch = {"x0": torch.zeros(2, 5, 3 + model.network.n_features), "mask": mask, "cond": {"node_mask": mask}}
    x = model.process.generate(model.network, batch, generator=torch.Generator().manual_seed(0))
    centre = (x[..., :3] * mask[..., None]).sum(1) / sizes[:, None]
    assert centre.abs().max() < 1e-5 and torch.all(x[~mask] == 0)


def test_the_distillation_benchmark_scores_molecules(molecule_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    domain = MoleculeDomain()
    cfg = configuration.compose(domain.default_config(), domain="molecules", overrides=[
        f"data.source={molecule_folder}", f"run_dir={tmp_path / 'runs'}", *TINY,
        "distill.benchmark.teacher_steps=2", "distill.benchmark.student_steps=2", "distill.benchmark.n=4",
        "distill.benchmark.nfe=[1,2]", "distill.benchmark.target_nfe=2", "distill.benchmark.reference_nfe=3",
        "distill.benchmark.samplers=[ddim]", "distill.benchmark.renoise_max=[1.0]", "distill.benchmark.grids=[uniform]", "distill.benchmark.teacher_overrides=[]",
        f"distill.benchmark.results_dir={tmp_path / 'out'}"])
    domain.prepare(cfg)
    metrics = run_distill_benchmark(domain, cfg)
    assert metrics["metric"] == "atom_stability" and metrics["higher_is_better"]
    assert len(metrics["rows"]) == 2 + 3 and all("validity" in r for r in metrics["rows"])
    assert json.loads((tmp_path / "out" / "molecules_distill.json").read_text())["name"] == "molecules_distill"
