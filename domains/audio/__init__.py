"""The built-in "audio" domain: mel-spectrogram speech denoising (see `domain.AudioDomain`).

Registered through the same hooks a third-party plugin uses (the domain, and the command
`toolkit audio-enhance`); the heavier modules (torchaudio, Lightning) are imported only when
they are used.
"""

from __future__ import annotations

from diffusekit.plugins import hookimpl


@hookimpl
def register_domains(register):
    """The "audio" domain."""
    from diffusekit.domains.audio.domain import AudioDomain

    register(AudioDomain())


@hookimpl
def register_commands(cli):
    """`toolkit audio-enhance --run RUN FILE.wav ...`: denoise recordings of any length."""
    from diffusekit.domains.audio.enhance import register

    register(cli)
