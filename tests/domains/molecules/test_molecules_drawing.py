"""molecules.png on a machine where RDKit cannot draw (its drawing code needs X rendering
libraries a headless GPU machine may lack): a note image instead, and the samples still written."""

import sys

import torch
from PIL import Image

from diffusekit.core.app import config
from diffusekit.domains.molecules.domain import MoleculeDomain


def test_without_rdkits_drawing_the_samples_are_written_with_a_note(tmp_path, monkeypatch):
    domain = MoleculeDomain()
    cfg = config.compose(domain.default_config(), domain="molecules")
    # importing rdkit.Chem.Draw raises ImportError, also when another test imported it already
    import rdkit.Chem

    monkeypatch.setitem(sys.modules, "rdkit.Chem.Draw", None)
    monkeypatch.delattr(rdkit.Chem, "Draw", raising=False)
    x = torch.zeros(1, 3, 9)
    x[0, :, :3] = torch.tensor([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    x[0, :, 3:] = torch.tensor([[0, 0, 0, 0.25, 0, 0.8], [0.25, 0, 0, 0, 0, 0.1],
                                [0.25, 0, 0, 0, 0, 0.1]])  # water: O, H, H
    paths = domain.write_samples(x, tmp_path, cfg)
    assert sorted(p.name for p in paths) == ["molecules.png", "samples.sdf", "samples.xyz"]
    assert Image.open(tmp_path / "molecules.png").size == (640, 60)
    assert "O" in (tmp_path / "samples.xyz").read_text()
