"""The built-in text domain: a masked discrete diffusion language model (see `domain.TextDomain`).

Registered through the same hook as any third-party plugin (entry point `text` in the group
"diffusekit"); the heavier modules are imported only when the domain is used.
"""

from __future__ import annotations

from diffusekit.plugins import hookimpl


@hookimpl
def register_domains(register):
    """The "text" domain."""
    from diffusekit.domains.text.domain import TextDomain

    register(TextDomain())
