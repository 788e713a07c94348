"""The audio domain's command, added to `toolkit` by the `register_commands` hook:

    toolkit audio-enhance --run runs/audio/<ts> noisy.wav [more.wav ...] --out enhanced/

The work is `enhance.enhance_files` (see enhance.py for chunking, memory and skipped files).
"""

from __future__ import annotations

import click

from diffusekit.domains.audio.enhance import enhance_files


def register(cli: click.Group) -> None:
    """Add `toolkit audio-enhance` to the command group `cli`."""

    @cli.command("audio-enhance")
    @click.option("--run", "run_path", required=True, help="A run folder of the audio domain.")
    @click.option("--out", "out_dir", default="enhanced", show_default=True,
                  help="Folder for the enhanced files.")
    @click.option("--sampler", default=None, help="Sampler (default: the run's).")
    @click.option("--steps", type=click.IntRange(min=1), default=None,
                  help="Sampler steps (default: the run's sample.steps).")
    @click.option("--batch-size", "batch_size", type=click.IntRange(min=1), default=None,
                  help="Chunks per network batch (default: the run's reconstruct.chunk_batch); "
                       "bounds the memory: a 10-minute file peaks at about 1 GB at 8.")
    @click.argument("inputs", nargs=-1, required=True)
    def audio_enhance(run_path, out_dir, sampler, steps, batch_size, inputs):
        """Denoise speech recordings of any length with a trained audio run.

        Each output is a mono float WAV at its input's sample rate (several channels are mixed
        down). A file that cannot be enhanced (unreadable, shorter than 32 ms, ...) is skipped
        with a warning; the exit status is non-zero only when no file was enhanced.
        """
        written, skipped = enhance_files(run_path, list(inputs), out_dir, sampler, steps,
                                         batch_size)
        note = f"; skipped {skipped} of {len(inputs)} (see the warnings)" if skipped else ""
        click.echo(f"enhanced {len(written)} file(s) into {out_dir}{note}")
