"""Named registries: strategies, backbone families and tasks register themselves; a lookup names close matches."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from tlops.errors import TlopsError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one kind by name, in registration order.

    Args:
        kind: What the entries are, in words (``"strategy"``), for messages.
        option: The option users choose an entry with (``"--strategy"``), for messages.
    """

    def __init__(self, kind: str, option: str) -> None:
        self.kind, self.option = kind, option
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def add(self, name: str, entry: T, aliases: tuple[str, ...] = ()) -> T:
        """Register ``entry`` under ``name`` (and ``aliases``); a second entry of one name is a bug."""
        if name in self._entries or name in self._aliases:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        self._aliases.update(dict.fromkeys(aliases, name))
        return entry

    def register(self, name: str, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator form of :meth:`add`: ``@STRATEGIES.register("partial")``."""
        return lambda entry: self.add(name, entry, aliases)

    def canonical(self, name: str) -> str:
        """The registered name ``name`` stands for (an alias resolves to its entry's name).

        Raises:
            TlopsError: for an unknown name, listing the close ones (or all of them).
        """
        name = self._aliases.get(name, name)
        if name in self._entries:
            return name
        close = difflib.get_close_matches(name, [*self._entries, *self._aliases], n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}?" if close else f"choose one of {', '.join(self._entries)}"
        raise TlopsError(f"unknown {self.kind} {name!r} for {self.option}: {hint}")

    def get(self, name: str) -> T:
        """The entry of ``name`` (or of an alias); see :meth:`canonical` for unknown names."""
        return self._entries[self.canonical(name)]

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order (aliases not included)."""
        return tuple(self._entries)

    def aliases(self) -> dict[str, str]:
        """Alias -> registered name."""
        return dict(self._aliases)

    def __iter__(self) -> Iterator[tuple[str, T]]:
        return iter(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases
