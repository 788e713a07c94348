"""Named registries: how every swappable component (schedule, sampler, weighting, ...) is chosen.

A component is picked by name from a `Registry`, never by an if/elif chain on strings. Built-ins
register themselves at import; plugins add entries through the same `register` call (the plugin
manager installs a *loader* that runs once, on the first look-up, so discovery stays lazy).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A look-up for a name nobody registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its argument; show the sentence as written
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """A name -> component table with helpful errors.

    `kind` is what the entries are ("sampler", "schedule"), used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._loaders: list[Callable[[], None]] = []

    def register(self, name: str, entry: T | None = None, *, replace: bool = False):
        """Register `entry` under `name`; without `entry`, return a decorator.

        A second registration of the same name is an error unless `replace=True`, so two
        plugins cannot silently shadow each other.
        """
        if entry is None:

            def decorator(obj: T) -> T:
                self.register(name, obj, replace=replace)
                return obj

            return decorator
        if not replace and name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def add_loader(self, loader: Callable[[], None]) -> None:
        """Run `loader()` once before the next look-up (used for lazy plugin discovery)."""
        self._loaders.append(loader)

    def _load(self) -> None:
        while self._loaders:
            self._loaders.pop(0)()

    def get(self, name: str) -> T:
        """The entry called `name`; `UnknownNameError` naming the closest match otherwise."""
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        known = sorted(self._entries)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; known: {', '.join(known)}"

    def names(self) -> list[str]:
        """All registered names, sorted."""
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
