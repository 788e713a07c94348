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


@hookimpl
def register_commands(cli):
    """`toolkit text-generate --run RUN --text "...[MASK]..."`: prompted generation and infilling."""
    import click

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
