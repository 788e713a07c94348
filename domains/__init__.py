"""The built-in domains: audio, image, text, molecules. Each is a plugin like a third party's
(an entry point of the group "diffusekit", see `diffusekit.plugins`), and each has the same files
with the same roles, the domain skeleton:

    __init__.py   the pluggy hook implementations only (`register_domains`, and
                  `register_commands` where the domain adds commands), which import the rest
    domain.py     the `diffusekit.plugins.Domain` subclass only: it ties the parts below together
    config.yaml   the domain's default config (every key the modules read)
    data.py       the data: preparing the cache, the datasets, the Lightning data module
    network.py    the denoiser network(s) and how a config builds them
    process.py    the diffusion process: how the network is trained and how samples are generated
    metrics.py    the quality measures `evaluate` and the benchmark report
    benchmark.py  `toolkit benchmark --domain <name>`: the benchmark and its result record
    commands.py   the domain's own `toolkit` commands (click), only where it adds some

Further modules are named for what they hold (e.g. audio's features.py, image's tiling.py,
text's tokenization.py, molecules' structures.py). tests/domains/test_domain_skeleton.py checks
this layout.
"""
