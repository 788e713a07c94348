"""The built-in text domain: a masked discrete diffusion language model (see `domain.TextDomain`).

Registered through the same hooks as any third-party plugin (entry point `text` in the group
"diffusekit"): the domain, and the command `toolkit text-generate` of commands.py; the heavier
modules are imported only when the domain is used. The files follow the domain skeleton of
`diffusekit.domains`; besides it: corpus.py (the Shakespeare corpus or a user's text),
tokenization.py (character and BPE tokenizers), generation.py (prompted generation and infilling).
"""

from __future__ import annotations

from diffusekit.plugins import hookimpl


@hookimpl
def register_domains(register):
    """The "text" domain."""
    from diffusekit.domains.text.domain import TextDomain

    register(TextDomain())


@hookimpl
def register_commands(cli):
    """`toolkit text-generate --run RUN --text "...[MASK]..."`: prompted generation and infilling."""
    from diffusekit.domains.text.commands import register

    register(cli)
