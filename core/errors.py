"""The toolkit's own error types: bad input that the command line reports in one line.

Everything the user can get wrong (a config key, a run folder, a checkpoint, a data file) or that
stops a run for a reason they must act on (a non-finite loss) raises a subclass of
`DiffusekitError`. `diffusekit.core.app.cli.main` prints these as one `error: ...` line and exits
non-zero; a genuine bug still shows its traceback. Registry look-ups of unknown names raise
`diffusekit.core.registry.UnknownNameError` (a KeyError), which the command line treats alike.

Domains and plugins may raise these too (e.g. `DataError` for a file they cannot read).
"""

from __future__ import annotations


class DiffusekitError(Exception):
    """Base class: a problem the user can fix; its message is one self-contained sentence."""

    exit_code = 2


class ConfigError(DiffusekitError):
    """A configuration that cannot be composed: an unreadable file, a malformed override."""


class UnknownConfigKeyError(ConfigError):
    """An override or config file names a key that no default defines.

    `key` is the dotted key as written, `closest` the nearest existing dotted key (or None)."""

    def __init__(self, key: str, closest: str | None, source: str) -> None:
        self.key, self.closest, self.source = key, closest, source
        hint = f"; did you mean {closest!r}?" if closest else ""
        super().__init__(f"unknown config key {key!r} in {source}{hint}")


class RunDirError(DiffusekitError):
    """A run folder that does not exist or lacks what the command needs (config, weights)."""


class CheckpointError(DiffusekitError):
    """A checkpoint or exported weight file that is missing, unreadable or does not match."""


class DataError(DiffusekitError):
    """A data file or folder that cannot be read (domains raise it from their data modules)."""


class NonFiniteLossError(DiffusekitError):
    """The training loss became NaN or infinite; the run stops (its last checkpoint stays)."""

    exit_code = 3
