"""Name -> factory registries with discoverable names and close-match suggestions.

Everything a config can name (model sources, datasets, methods) is looked up here, so a
typo gets an answer such as ``unknown method 'gradcm'; did you mean 'gradcam'?``.
"""

from __future__ import annotations

import difflib
from typing import Callable, Dict, Generic, Iterator, List, Optional, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that is not registered; the message lists close matches."""

    def __init__(self, kind: str, name: str, known: List[str]):
        self.kind, self.name, self.known = kind, name, known
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listing = ", ".join(sorted(known)) if known else "none registered"
        super().__init__(f"unknown {kind} {name!r}{hint} (known: {listing})")

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return self.args[0]


class Registry(Generic[T]):
    """A named collection of entries with a one-line description each."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, T] = {}
        self._descriptions: Dict[str, str] = {}

    def register(self, name: str, description: str = "") -> Callable[[T], T]:
        def decorator(entry: T) -> T:
            self.add(name, entry, description)
            return entry

        return decorator

    def add(self, name: str, entry: T, description: str = "") -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        self._descriptions[name] = description or (getattr(entry, "__doc__", "") or "").strip().split("\n")[0]

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, list(self._entries)) from None

    def check(self, name: str) -> Optional[str]:
        """The error message for an unknown name, or None when it is known."""
        return None if name in self._entries else str(UnknownNameError(self.kind, name, list(self._entries)))

    def names(self) -> List[str]:
        return sorted(self._entries)

    def describe(self, name: str) -> str:
        return self._descriptions.get(name, "")

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
