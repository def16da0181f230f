"""Type checks for configuration values that arrive from YAML or the command line.

``python -m monai.bundle run ... --freeze_text false`` passes the *string* ``'false'``, which is truthy;
a silently ignored override is worse than an error, so configuration entry points check what they get.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a real bool; otherwise a ``TypeError`` naming the key (``'false'`` strings included)."""
    if not isinstance(value, bool):
        hint = " (on the command line write False or True, not a lower-case string)" if isinstance(value, str) else ""
        raise TypeError(f"{name} must be true or false, got {value!r} of type {type(value).__name__}{hint}")
    return value


def _matches(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (tuple, list):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return isinstance(value, (tuple, list)) and all(_matches(v, args[0]) for v in value) if args else True
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, annotation) if isinstance(annotation, type) else True


def check_fields(cls: type, values: dict[str, Any]) -> None:
    """Raise ``ValueError`` for keys that are not fields of dataclass ``cls`` and ``TypeError`` for values
    whose type does not match the field's annotation, naming the key and the accepted type."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} option(s) {unknown}; known: {sorted(known)}")
    for key, value in values.items():
        if not _matches(value, hints[key]):
            raise TypeError(f"{cls.__name__}.{key} must be {hints[key]}, got {value!r} of type {type(value).__name__}")
