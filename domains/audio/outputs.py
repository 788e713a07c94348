"""What `toolkit sample` writes for the audio domain besides the WAV files (see
`domain.AudioDomain.write_samples`):

    written_clips(cfg, generated)     how many clips are written as WAVs (`outputs.write_n`)
    spectrogram_figure(noisy, enhanced, clean, png, cfg)   spectrograms.png: one row per clip,
                                                           columns noisy | enhanced | clean
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig
from torch import Tensor

from diffusekit.core.errors import ConfigError


def written_clips(cfg: DictConfig, generated: int) -> int:
    """How many of `generated` clips `write_samples` writes: all of them, or `outputs.write_n`
    when that is a number (a `ConfigError` naming the key when it is not a whole number >= 0)."""
    cap = cfg.outputs.get("write_n")
    if cap is None:
        return generated
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
        raise ConfigError(f"config key 'outputs.write_n' must be null or a whole number >= 0, "
                          f"got {cap!r}")
    return min(cap, generated)


def spectrogram_figure(noisy: Tensor, enhanced: Tensor, clean: Tensor, png: Path,
                       cfg: DictConfig) -> Path:
    """A grid of log-mel images: one row per clip, columns noisy | enhanced | clean."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = noisy.shape[0]
    fig = Figure(figsize=(11, 2.2 * rows), dpi=100)
    FigureCanvasAgg(fig)
    hop_s = int(cfg.features.hop) / int(cfg.features.sample_rate)
    for r in range(rows):
        for c, (title, x) in enumerate((("noisy", noisy), ("enhanced", enhanced),
                                        ("clean", clean))):
            ax = fig.add_subplot(rows, 3, 3 * r + c + 1)
            img = x[r, 0].detach().cpu().float().numpy()
            ax.imshow(img, origin="lower", aspect="auto", vmin=-2.0, vmax=3.0, cmap="magma",
                      extent=(0, img.shape[1] * hop_s, 0, img.shape[0]))
            if r == 0:
                ax.set_title(title)
            ax.set_xlabel("s" if r == rows - 1 else "")
            ax.set_ylabel("mel bin" if c == 0 else "")
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(png)
    return png

