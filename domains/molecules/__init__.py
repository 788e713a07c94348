"""The molecule domain: E(3)-equivariant diffusion of 3D molecules on QM9 (EDM, Hoogeboom et al.
2022). Registered through the same hook as third-party plugins; the heavy parts (RDKit,
torch-geometric, Lightning) are imported only when used. The files follow the domain skeleton of
`diffusekit.domains` (no commands.py: the domain adds no command); besides it:

    structures.py  QM9 CSV, SDF and XYZ reading / writing
    charges.py     formal charges carried from QM9's SMILES onto its geometries' atoms
"""

from __future__ import annotations

from diffusekit.plugins import hookimpl


@hookimpl
def register_domains(register):
    """The "molecules" domain."""
    from diffusekit.domains.molecules.domain import MoleculeDomain

    register(MoleculeDomain())
