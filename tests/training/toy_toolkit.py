"""`toolkit` with the test-only "toy" domain added, for tests that need a real process
(SIGKILL + resume, DDP): `python tests/training/toy_toolkit.py train --domain toy ...`.

The plugin manager's domains stay as installed; "toy" is looked up first.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from toy_domain import ToyDomain  # noqa: E402

from diffusekit.core.app import cli  # noqa: E402

TOY = ToyDomain()
_installed_get_domain = cli.get_domain


def get_domain(name: str):
    return TOY if name == TOY.name else _installed_get_domain(name)


cli.get_domain = get_domain
cli._domain_names = lambda: [TOY.name]

if __name__ == "__main__":
    sys.exit(cli.main())
