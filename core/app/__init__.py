"""diffusekit.core.app: the application layer on top of the engine.

The engine (`diffusekit.core`: schedules, parameterisations, losses, samplers, spaces, discrete
diffusion) imports torch only and never imports this package. This package is what turns the
engine into a program, and it may import the engine, `diffusekit.plugins` and third-party
libraries (Lightning, OmegaConf, click, matplotlib):

    config.py           compose a run's configuration (toolkit defaults, domain defaults, files,
                        key=value overrides) with OmegaConf
    training/           the Lightning module, EMA, callbacks, run folders, train / sample / evaluate
    cli.py              the `toolkit` command line (click)
    results.py          benchmark records: benchmarks/results/<name>.{json,md,png}
    debian_packages.py  a data source: Debian packages unpacked without root (apt-get download)

Nothing here is imported by `import diffusekit.core`.
"""
