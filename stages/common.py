"""What every stage shares: typed, validated params and one-line fatal errors."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, Iterator, Literal, TypeVar

T = TypeVar("T")


class ParamsError(ValueError):
    """params.yaml is missing, unreadable or has a bad value; the message names the key."""


def read_yaml(path: str | Path) -> Any:
    from ruamel.yaml import YAML  # DVC's own YAML parser, so both read params.yaml alike
    from ruamel.yaml.error import YAMLError

    try:
        with open(path, encoding="utf-8") as f:
            return YAML(typ="safe", pure=True).load(f)
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found") from None
    except YAMLError as e:
        raise ParamsError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None


def range_(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False, default: Any = dataclasses.MISSING) -> Any:
    """A dataclass field whose value must lie in [lo, hi] (or open at either end)."""
    meta = {"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open}
    return dataclasses.field(default=default, metadata=meta)


def _check_range(key: str, value: Any, meta: typing.Mapping) -> None:
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and (value <= lo if meta["lo_open"] else value < lo):
        raise ParamsError(f"{key}: {value!r} must be {'>' if meta['lo_open'] else '>='} {lo}")
    if hi is not None and (value >= hi if meta["hi_open"] else value > hi):
        raise ParamsError(f"{key}: {value!r} must be {'<' if meta['hi_open'] else '<='} {hi}")


def _convert(key: str, tp: Any, value: Any) -> Any:
    """Check `value` against the annotation `tp`; return it converted (lists to tuples)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(key, inner[0], value)
    if origin is Literal:
        if value not in args:
            raise ParamsError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise ParamsError(f"{key}: expected a list, got {type(value).__name__}")
        item = args[0] if args else Any
        return tuple(_convert(f"{key}[{i}]", item, v) for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{key}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp in (bool, str):
        if not isinstance(value, tp):
            raise ParamsError(f"{key}: expected {tp.__name__}, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")


def build(cls: type[T], data: Any, prefix: str) -> T:
    """Build the frozen dataclass `cls` from a mapping, rejecting unknown, missing and bad keys."""
    if not isinstance(data, dict):
        raise ParamsError(f"{prefix}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ParamsError(f"{prefix}.{unknown[0]}: unknown key (known: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}"
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ParamsError(f"{key}: missing")
            continue
        values[name] = _convert(key, hints[name], data[name])
        if f.metadata and values[name] is not None:
            _check_range(key, values[name], f.metadata)
    obj = cls(**values)
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except ValueError as e:
            raise ParamsError(f"{prefix}.{e}") from None
    return obj


def load_params(cls: type[T], section: str, path: str | Path = "params.yaml") -> T:
    """Load and validate `section` of params.yaml into `cls`."""
    data = read_yaml(path)
    if not isinstance(data, dict) or section not in data:
        raise ParamsError(f"{path}: no section {section!r}")
    return build(cls, data[section], section)


@contextlib.contextmanager
def fatal_errors(stage: str, *errors: type[BaseException]) -> Iterator[None]:
    """Turn the expected errors of a stage into one line on stderr and exit status 1."""
    try:
        yield
    except (ParamsError, *errors) as e:
        print(f"{stage}: error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
