"""The molecule domain: E(3)-equivariant diffusion of 3D molecules on QM9 (EDM, Hoogeboom et al.
2022). Registered through the same hook as third-party plugins; the heavy parts (RDKit,
torch-geometric, Lightning) are imported only when used.

    structures.py  QM9 CSV, SDF and XYZ reading / writing
    data.py        the QM9 cache, folders of structure files, the padded-batch data module
    network.py     the EGNN denoiser (Satorras et al. 2021)
    metrics.py     EDM's stability / validity / uniqueness / novelty
    domain.py      `MoleculeDomain`; benchmark.py: `toolkit benchmark --domain molecules`
"""

from __future__ import annotations

from diffusekit.plugins import hookimpl


@hookimpl
def register_domains(register):
    """The "molecules" domain."""
    from diffusekit.domains.molecules.domain import MoleculeDomain

    register(MoleculeDomain())
