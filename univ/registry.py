"""One registry mechanism for every family of variants (SAE kinds, similarity measures, attacks, matching
methods, models): a name -> object mapping whose unknown names raise a ValueError listing the valid ones,
and a ``register`` call, so that a new variant is one class (or function) and one registry line.

    SAE_KINDS = Registry("SAE kind")
    @SAE_KINDS.register("topk")
    class TopKSAE(SAE): ...
    SAE_KINDS["topk"]          # the class;  SAE_KINDS["tpok"] -> ValueError naming the closest valid names
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def close_matches(name: str, options: Iterable[str], n: int = 5) -> list[str]:
    """The options most similar to ``name`` (for 'did you mean' messages)."""
    options = list(options)
    hits = difflib.get_close_matches(name, options, n=n, cutoff=0.4)
    if not hits:
        hits = [o for o in options if name.split(".")[-1] in o][:n]
    return hits


def unknown_name_error(kind: str, name: str, options: Iterable[str]) -> ValueError:
    """A ValueError for an unknown ``name``, listing the closest valid ones (or all, when few)."""
    options = list(options)
    close = close_matches(name, options)
    msg = f"unknown {kind} {name!r}"
    if close:
        msg += f"; closest valid names: {close}"
    if len(options) <= 30:
        msg += f"; all valid names: {options}"
    else:
        msg += f" ({len(options)} valid names in total)"
    return ValueError(msg)


class Registry(dict):
    """A dict of name -> variant whose failed lookups say what exists.

    kind: what the entries are, for messages ("SAE kind", "metric", "attack").
    """

    def __init__(self, kind: str, entries: dict[str, Any] | None = None):
        super().__init__()
        self.kind = kind
        for name, obj in (entries or {}).items():
            self.register(name, obj)

    def __missing__(self, name):
        raise unknown_name_error(self.kind, name, list(self))

    def register(self, name: str, obj: T | None = None, *, replace: bool = False) -> T | Callable[[T], T]:
        """Add ``obj`` under ``name``; without ``obj``, a decorator. Re-registering a taken name raises
        unless ``replace=True`` (so a typo cannot silently shadow a built-in)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"name: a {self.kind} needs a non-empty string name, got {name!r}")

        def add(o: T) -> T:
            if name in self and not replace and self[name] is not o:
                raise ValueError(f"name: a {self.kind} named {name!r} is already registered "
                                 f"({self[name]!r}); pass replace=True to override it")
            dict.__setitem__(self, name, o)
            return o

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests that register a toy variant clean up with this)."""
        if name not in self:
            raise unknown_name_error(self.kind, name, list(self))
        dict.__delitem__(self, name)
