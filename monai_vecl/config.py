"""Type checks for configuration values that arrive from YAML or the command line.

``python -m monai.bundle run ... --freeze_text false`` passes the *string* ``'false'``, which is truthy;
a silently ignored override is worse than an error, so configuration entry points check what they get.
"""

from __future__ import annotations

import dataclasses
import inspect
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
        args = typing.get_args(annotation)
        return isinstance(value, dict) and (not args or all(
            _matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items()))
    return isinstance(value, annotation) if isinstance(annotation, type) else True


def _type_name(annotation: Any) -> str:
    """``int``, ``float | None``, ``tuple[str, ...]``: how a YAML or command-line user reads a type."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # "Augmentation | None", not its module path
        return " | ".join("None" if a is type(None) else _type_name(a) for a in typing.get_args(annotation))
    return annotation.__name__ if isinstance(annotation, type) and not typing.get_args(annotation) else \
        str(annotation).replace("typing.", "").replace("pathlib.", "")


def check_fields(cls: type, values: dict[str, Any], name: str | None = None) -> None:
    """Raise ``ValueError`` for keys that are not fields of dataclass ``cls`` and ``TypeError`` for values
    whose type does not match the field's annotation, naming the key and the accepted type.

    ``name`` (default: the class name) is what the messages call the section, e.g. ``deploy.selection``.
    """
    name = name or cls.__name__
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {name} option(s) {unknown}; known: {sorted(known)}")
    for key, value in values.items():
        if not _matches(value, hints[key]):
            raise _type_error(f"{name}.{key}", value, hints[key])


def _type_error(name: str, value: Any, annotation: Any) -> TypeError:
    return TypeError(f"{name} must be {_type_name(annotation)}, got {value!r} of type {type(value).__name__}")


def check_dataclass(obj: Any, name: str | None = None) -> None:
    """:func:`check_fields` on a dataclass instance's own values (for ``__post_init__``: direct construction is
    checked as well as mappings)."""
    check_fields(type(obj), {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, name)


def check_choice(name: str, value: Any, choices: typing.Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``; otherwise a ``ValueError`` naming the key and the accepted values."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_arguments(func: typing.Callable[..., Any], values: typing.Mapping[str, Any]) -> None:
    """``TypeError`` for a value of ``values`` whose type does not match the annotation of ``func``'s parameter of
    that name, naming ``Owner.parameter`` and the accepted type: ``check_arguments(Cls.__init__, locals())`` first
    thing in ``__init__`` checks a class that is not a dataclass."""
    owner = func.__qualname__.removesuffix(".__init__")
    hints = typing.get_type_hints(func)
    for name in inspect.signature(func).parameters:
        if name in hints and name in values and not _matches(values[name], hints[name]):
            raise _type_error(f"{owner}.{name}", values[name], hints[name])


def check_min(name: str, value: int | float, minimum: int | float) -> int | float:
    """``value`` if it is at least ``minimum``; otherwise a ``ValueError`` naming the key and the bound."""
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value
