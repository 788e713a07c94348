"""diffusekit-example: a complete third-party diffusekit plugin.

This module is the plugin: the entry point `example = "diffusekit_example"` (group "diffusekit",
see this distribution's pyproject.toml) points here, and diffusekit calls the `@hookimpl`
functions below. Keep it light: every `toolkit` command imports it during discovery, so the
heavier parts (the Lightning data module) are imported only when they are used.

    register_domains   the "example" domain (`domain.ShapesDomain`): 2-D toy shapes
    register_samplers  "midpoint" (`sampler.sample_midpoint`): DPM-Solver++(2S), r = 1/2
    register_commands  `toolkit example-shapes`: list the shapes and preview them as a PNG
"""

from __future__ import annotations

from diffusekit.plugins import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_domains(register):
    """The "example" domain."""
    from diffusekit_example.domain import ShapesDomain

    register(ShapesDomain())


@hookimpl
def register_samplers(register):
    """The exponential midpoint sampler, "midpoint"."""
    from diffusekit_example.sampler import sample_midpoint

    register("midpoint", sample_midpoint)


@hookimpl
def register_commands(cli):
    """`toolkit example-shapes [--out FILE.png]`."""
    import click

    @cli.command("example-shapes")
    @click.option("--out", type=click.Path(dir_okay=False), default=None,
                  help="Also write a PNG preview of every shape to this file.")
    @click.option("-n", "n_per_shape", type=int, default=500, show_default=True,
                  help="Points per shape in the preview.")
    def example_shapes(out, n_per_shape):
        """List the example domain's shapes (and preview them)."""
        import torch

        from diffusekit_example.shapes import SHAPES

        names = SHAPES.names()
        for name in names:
            click.echo(f"{name:14s} {(SHAPES.get(name).__doc__ or '').splitlines()[0]}")
        if out:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure

            fig = Figure(figsize=(2.5 * len(names), 2.5))
            FigureCanvasAgg(fig)
            for i, name in enumerate(names):
                pts = SHAPES.get(name)(n_per_shape, torch.Generator().manual_seed(i)).numpy()
                ax = fig.add_subplot(1, len(names), i + 1)
                ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5, linewidths=0)
                ax.set(title=name, aspect="equal", xlim=(-2.5, 2.5), ylim=(-2.5, 2.5))
            fig.tight_layout()
            fig.savefig(out)
            click.echo(f"wrote {out}")
