"""The built-in "image" domain: x4 super-resolution with a residual SR3 diffusion.

Registered through the same hook as a third-party plugin (entry point `image =
"diffusekit.domains.image"`, group "diffusekit"); the heavy parts load when used.
"""

from __future__ import annotations

from diffusekit.plugins import hookimpl


@hookimpl
def register_domains(register):
    """The "image" domain (`domain.ImageDomain`)."""
    from diffusekit.domains.image.domain import ImageDomain

    register(ImageDomain())
