"""The built-in "audio" domain: mel-spectrogram speech denoising (see `domain.AudioDomain`).

Registered through the same hook a third-party plugin uses; the heavier modules (torchaudio,
Lightning) are imported only when the domain is used.
"""

from __future__ import annotations

from diffusekit.plugins import hookimpl


@hookimpl
def register_domains(register):
    """The "audio" domain."""
    from diffusekit.domains.audio.domain import AudioDomain

    register(AudioDomain())
