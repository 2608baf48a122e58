"""Reading one YAML mapping field by field: typed values, dotted paths in errors, no unknown keys."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any


class Section:
    """Reads fields from one mapping, remembering which keys were asked for.

    Every problem is a ValueError whose message starts with the dotted path of the field, so the
    loader can prefix the file name and hand the user one line that points at the mistake.
    """

    def __init__(self, data: object, where: str, *, root: str = "recipe") -> None:
        if not isinstance(data, Mapping):
            raise ValueError(f"{where or root}: must be a mapping")
        for key in data:
            if not isinstance(key, str):
                raise ValueError(f"{where or root}: keys must be strings, found {key!r}")
        self.data: Mapping[str, Any] = data
        self.where = where
        self.known: set[str] = set()

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, default: Any = None, *, required: bool = False) -> Any:
        self.known.add(key)
        if key not in self.data:
            if required:
                raise ValueError(f"{self.path(key)}: is required")
            return default
        return self.data[key]

    def at(self, key: str, converter: Callable[[Any, str], Any], default: Any = None, *, required: bool = False) -> Any:
        """Convert a present value with `converter(value, dotted path)`; absent keys give `default`."""
        value = self.get(key, default, required=required)
        return converter(value, self.path(key)) if key in self.data else value

    def convert(self, key: str, converter: Callable[[Any], Any], default: Any = None, *, required: bool = False) -> Any:
        """Convert a present value with `converter(value)`, prefixing its ValueError with the field."""

        def prefixed(value: Any, path: str) -> Any:
            try:
                return converter(value)
            except ValueError as exc:
                message = str(exc)
                raise ValueError(message if message.startswith(path) else f"{path}: {message}") from exc

        return self.at(key, prefixed, default, required=required)

    def typed(self, key: str, kind: type | tuple[type, ...], default: Any = None, *, required: bool = False) -> Any:
        """A value that must be an instance of `kind` (a YAML boolean never passes for a number or text)."""
        kinds = kind if isinstance(kind, tuple) else (kind,)

        def check(value: Any, path: str) -> Any:
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise ValueError(f"{path}: must be {_kind_name(kinds)}")
            return value

        return self.at(key, check, default, required=required)

    def finish(self) -> None:
        """Refuse any key nobody asked for, suggesting the near miss."""
        known = sorted(self.known)
        for key in self.data:
            if key not in self.known:
                close = difflib.get_close_matches(key, known, n=1)
                suggestion = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"{self.path(key)}: unknown key{suggestion}")


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", list: "a list", dict: "a mapping"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)
