"""Typed JSON files: a dict from ``json.load`` in, nested dataclasses out, every field checked.

A bundle's ``manifest.json`` and a checkpoint's ``config.json`` are read by people's tools and
edited by people's hands, so a file that is valid JSON of the wrong shape (a list, a string where a
number belongs, ``n_head: 0``) must be a one-line error naming the field, never a ``TypeError``
deep in a stage. The dataclasses' type hints are the schema: ``from_json`` walks them, and a
class may add range rules with a ``problems()`` method that yields ``(field, what is wrong)``.
Unknown keys are refused, except in a class whose ``ignores_unknown_fields`` (a ``ClassVar``) is
true: there they are skipped, since a newer writer may record more.

Standard library only: the runtime reads bundles with it on devices without torch.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import PurePosixPath
from typing import Any, Iterator, TypeVar, Union

from gptedge.errors import UserError

T = TypeVar("T")


class SchemaError(Exception):
    """``field`` (a dotted path such as ``variants.int8.size_bytes``) is wrong: ``problem``."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field or 'the file'} {problem}")
        self.field, self.problem = field, problem


def from_json(cls: type[T], data: Any, where: str = "") -> T:
    """``data`` as an instance of the dataclass ``cls``; raises ``SchemaError`` naming the first
    field of the wrong type, a missing or unknown field, or a value a ``problems()`` rule refuses."""
    return _convert(cls, data, where)


def to_json(obj: Any) -> Any:
    """A dataclass (nested) as plain JSON values; tuples become lists."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_json(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_json(v) for k, v in obj.items()}
    return obj


def check(obj: Any, where: str = "") -> None:
    """Check the fields of ``obj`` against their type hints and run the ``problems()`` rules of
    ``obj`` and of every dataclass inside it (for writers: a value built in code is checked by the
    same rules as one read from a file). ``obj`` itself is not rebuilt, so its ``__post_init__``
    may call this."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        _convert(hints[f.name], to_json(getattr(obj, f.name)), _join(where, f.name))
    _problems(obj, where)


def is_inside(name: str) -> bool:
    """Whether a file name from a manifest stays inside its folder: relative, no ``..``, no
    backslash or drive (a manifest may come from anywhere; it must never point the reader at
    ``/etc/passwd`` or ``../../secret``)."""
    p = PurePosixPath(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts and "\\" not in name and ":" not in name


def describe(value: Any) -> str:
    """``repr`` cut to one short line: a message stays one line even for a big wrong value."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, where)
            except SchemaError as e:
                errors.append(e)
        raise errors[0] if len(errors) == 1 else SchemaError(where, f"has an unexpected value {describe(value)}")
    if dataclasses.is_dataclass(tp):
        return _dataclass(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise SchemaError(where, f"must be a list, not {describe(value)}")
        item = typing.get_args(tp)[0]
        items = [_convert(item, x, f"{where}[{i}]") for i, x in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(where, f"must be an object ({{...}}), not {describe(value)}")
        item = typing.get_args(tp)[1]
        return {k: _convert(item, v, f"{where}.{k}" if where else k) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise SchemaError(where, f"must be true or false, not {describe(value)}")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise SchemaError(where, f"must be a whole number, not {describe(value)}")
        return value
    if tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise SchemaError(where, f"must be a number, not {describe(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SchemaError(where, f"must be a string, not {describe(value)}")
        return value
    if tp is Any:
        return value
    raise TypeError(f"schema: no rule for the type {tp!r} of {where}")  # a bug in a dataclass, not in the file


def _dataclass(cls: type, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise SchemaError(where, f"must be an object ({{...}}), not {describe(value)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(value) - set(fields))
    if unknown and not getattr(cls, "ignores_unknown_fields", False):  # a newer writer may record more
        raise SchemaError(_join(where, unknown[0]), "is not a known field")
    kwargs = {}
    for name, f in fields.items():
        if name not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SchemaError(_join(where, name), "is missing")
            continue
        kwargs[name] = _convert(hints[name], value[name], _join(where, name))
    try:
        obj = cls(**kwargs)
    except UserError as e:  # the class's own checks (GenerationSettings validates itself)
        raise SchemaError(where, f"is invalid: {e}") from None
    _problems(obj, where)
    return obj


def _problems(obj: Any, where: str) -> None:
    for name, problem in getattr(obj, "problems", lambda: ())():
        raise SchemaError(_join(where, name), problem)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


# Rules the problems() methods share.


def positive(obj: Any, *names: str) -> Iterator[tuple[str, str]]:
    for name in names:
        if getattr(obj, name) <= 0:
            yield name, f"must be > 0, not {getattr(obj, name)!r}"


def not_negative(obj: Any, *names: str) -> Iterator[tuple[str, str]]:
    for name in names:
        value = getattr(obj, name)
        if value is not None and not value >= 0:  # NaN fails too
            yield name, f"must be >= 0, not {value!r}"


def one_of(obj: Any, name: str, allowed: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    if getattr(obj, name) not in allowed:
        yield name, f"is {getattr(obj, name)!r}, not one of {', '.join(allowed)}"


def file_name(obj: Any, *names: str) -> Iterator[tuple[str, str]]:
    for name in names:
        value = getattr(obj, name)
        if value is not None and not is_inside(value):
            yield name, f"{value!r} leaves the folder (absolute, '..' or empty): use a plain file name"


def sha256(obj: Any, *names: str) -> Iterator[tuple[str, str]]:
    for name in names:
        value = getattr(obj, name)
        if value and not (len(value) == 64 and all(c in "0123456789abcdef" for c in value)):
            yield name, f"must be 64 lowercase hex digits, not {describe(value)}"
