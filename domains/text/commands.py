"""The text domain's command, added to `toolkit` by the `register_commands` hook:

    toolkit text-generate --run runs/text/<ts> --text "O Romeo, [MASK] art thou" -n 4

The work is `generation.generate_from_text` (prompts, [MASK] spans, semi-autoregressive blocks).
"""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    """Add `toolkit text-generate` to the command group `cli`."""

    @cli.command("text-generate")
    @click.option("--run", "run_dir", required=True, type=click.Path(), help="A text run folder.")
    @click.option("--text", default="", help="A prompt; every [MASK] in it is a span to infill "
                  "(--span tokens). The rest of the sequence after the text is generated.")
    @click.option("--span", type=click.IntRange(min=1), default=16, show_default=True,
                  help="Tokens each [MASK] stands for.")
    @click.option("--steps", type=click.IntRange(min=1), default=None, help="Sampler steps.")
    @click.option("-n", "n", type=click.IntRange(min=1), default=4, show_default=True,
                  help="Samples.")
    @click.option("--block-size", type=click.IntRange(min=1), default=None,
                  help="Semi-autoregressive blocks of this many tokens.")
    @click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")
    def text_generate(run_dir, text, span, steps, n, block_size, seed):
        """Fill in a text run's samples around a prompt or masked spans; print them ([[...]]
        marks what the model wrote) and write them to RUN/samples/generate-<steps>/."""
        from diffusekit.domains.text.generation import generate_from_text

        for line in generate_from_text(run_dir, text, span=span, steps=steps, n=n,
                                       block_size=block_size, seed=seed):
            click.echo(line)
