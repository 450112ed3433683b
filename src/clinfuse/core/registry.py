"""One ``Registry`` type, filled by decorator, with a helpful error for unknown names."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from clinfuse.core.errors import UnknownNameError, suggest

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object mapping for one kind of component (methods, builders, corruptions, ...).

    Example:
        >>> R = Registry("colour")
        >>> @R.register("red")
        ... class Red: ...
        >>> R.get("red").__name__
        'Red'
        >>> R.get("rde")
        Traceback (most recent call last):
        ...
        clinfuse.core.errors.UnknownNameError: unknown colour 'rde'
          expected: one of: red
          found:    'rde'
          fix:      did you mean: red?
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register an object under ``name`` (a name may be registered once)."""

        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """The object registered as ``name``; unknown names raise with close matches."""
        try:
            return self._items[name]
        except KeyError:
            fix = suggest(name, self._items, "`clinfuse ls` lists them")
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}",
                expected=f"one of: {', '.join(sorted(self._items)) or '(none registered)'}",
                found=repr(name),
                fix=fix,
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
