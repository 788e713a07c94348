"""The built-in "audio" domain: mel-spectrogram speech denoising (see `domain.AudioDomain`).

Registered through the same hooks a third-party plugin uses (the domain, and the command
`toolkit audio-enhance` of commands.py); the heavier modules (torchaudio, Lightning) are imported
only when they are used. The files follow the domain skeleton of `diffusekit.domains`; besides
it: features.py (log-mels and back to waveforms), baselines.py (spectral subtraction, the
one-step regression), outputs.py (what `toolkit sample` writes), enhance.py (whole recordings),
corpus.py / noise.py / recordings.py (the speech and noise data), torchaudio_cpu.py.
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
    from diffusekit.domains.audio.commands import register

    register(cli)
