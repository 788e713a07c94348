"""The built-in "image" domain: x4 super-resolution with a residual SR3 diffusion.

Registered through the same hook as a third-party plugin (entry point `image =
"diffusekit.domains.image"`, group "diffusekit"); the heavy parts load when used. The files
follow the domain skeleton of `diffusekit.domains` (no commands.py: the domain adds no command);
besides it: degradation.py (the degradation model and colour conversion), tiling.py (whole
images through the network in overlapping tiles), figures.py (PNGs, grids and plots).
"""

from __future__ import annotations

from diffusekit.plugins import hookimpl


@hookimpl
def register_domains(register):
    """The "image" domain (`domain.ImageDomain`)."""
    from diffusekit.domains.image.domain import ImageDomain

    register(ImageDomain())
