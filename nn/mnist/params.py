"""params.yaml as typed, validated models (pydantic): strict scalars, frozen sections with no
unknown keys, and every error as one line that names its dotted key."""

from __future__ import annotations

import math
import types
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

P = TypeVar("P", bound="Params")

# Scalars are strict: "10" is not an integer, 1.5 is not an integer, true is not a number.
# A float field takes an int (lr: 1 is 1.0); NaN and infinity are refused by the config below.
Int = Annotated[int, Field(strict=True)]
Float = Annotated[float, Field(strict=True)]
Bool = Annotated[bool, Field(strict=True)]
Str = Annotated[str, Field(strict=True)]


class ParamsError(ValueError):
    """params.yaml is missing, unreadable or has a bad value; the message names the key."""


class Params(BaseModel):
    """A section of params.yaml: frozen, no unknown keys, no NaN or infinity."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def param_error(key: str, message: str) -> PydanticCustomError:
    """An error about `key` inside the value being validated, e.g. a layer's "p"."""
    return PydanticCustomError("param", "{key}: {message}", {"key": key, "message": message})


def _first_nonfinite(value: Any, where: str = "") -> tuple[str, float] | None:
    """(relative key, value) of the first NaN or infinity in a YAML tree, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where, value
    items = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, (list, tuple)) else ()
    for k, v in items:
        found = _first_nonfinite(v, f"{where}[{k}]" if isinstance(k, int) else
                                 f"{where}.{k}" if where else str(k))
        if found:
            return found
    return None


def finite(tree: Any) -> Any:
    """A validator for free-form fields (dicts, lists): no NaN or infinity anywhere inside."""
    found = _first_nonfinite(tree)
    if found:
        raise param_error(found[0], f"{found[1]!r} is not a finite number")
    return tree


def read_yaml(path: str | Path) -> Any:
    from ruamel.yaml import YAML  # DVC's own YAML parser, so both read params.yaml alike
    from ruamel.yaml.error import YAMLError

    try:
        with open(path, encoding="utf-8") as f:
            return YAML(typ="safe", pure=True).load(f)
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found") from None
    except YAMLError as e:
        raise ParamsError(f"{path}: {yaml_problem(e)}") from None


def yaml_problem(e: Exception) -> str:
    """A YAML parser's error as one line: where (line and column, 1-based) and the reason."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    reason = " ".join((problem or str(e).splitlines()[0]).split())
    return f"invalid YAML at {where}{reason}" if where else f"invalid YAML: {reason}"


def _dotted(prefix: str, loc: tuple) -> str:
    return prefix + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def _number(x: Any) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else repr(x)


def _model_at(cls: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The params model found at `loc` below `cls` (None when the path leaves the models)."""
    for part in loc:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        candidates = [field.annotation]
        if typing.get_origin(field.annotation) in (typing.Union, types.UnionType):
            candidates = list(typing.get_args(field.annotation))
        cls = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)),
                   None)
        if cls is None:
            return None
    return cls


_COMPARE = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="),
            "less_than": ("lt", "<"), "less_than_equal": ("le", "<=")}
_EXPECTED = {"int_type": "an integer", "int_parsing": "an integer", "float_type": "a number",
             "float_parsing": "a number", "bool_type": "bool", "bool_parsing": "bool",
             "string_type": "str", "dict_type": "a mapping", "model_type": "a mapping",
             "tuple_type": "a list", "list_type": "a list"}


def describe(error: dict, cls: type[BaseModel], prefix: str) -> str:
    """One pydantic error as one line naming the dotted key: 'mlp.optimizer.lr: -0.1 must be > 0'."""
    kind, loc, value, ctx = error["type"], tuple(error["loc"]), error.get("input"), error.get("ctx") or {}
    key = _dotted(prefix, loc)
    if kind == "param":  # an error about a key inside this value
        sub = ctx["key"]
        return f"{key}{sub if sub.startswith('[') else '.' + sub}: {ctx['message']}"
    if kind == "extra_forbidden":
        model = _model_at(cls, loc[:-1])
        known = f" (known: {', '.join(model.model_fields)})" if model else ""
        return f"{key}: unknown key{known}"
    if kind == "missing":
        return f"{key}: missing"
    if kind in _COMPARE:
        name, op = _COMPARE[kind]
        limit = ctx[name]
        if isinstance(limit, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # a float field given an int: show the number it became
        return f"{key}: {value!r} must be {op} {_number(limit)}"
    if kind == "literal_error":
        head, _, last = ctx["expected"].rpartition(" or ")
        return f"{key}: {value!r} is not one of {f'{head}, {last}' if head else last}"
    if kind == "finite_number":
        return f"{key}: {value!r} is not a finite number"
    if kind == "too_short":
        return f"{key}: must list at least {ctx['min_length']} item(s)"
    if kind == "value_error":
        return f"{key}: {ctx['error']}"
    if kind in _EXPECTED:
        got = type(value).__name__ if kind in ("dict_type", "model_type", "tuple_type",
                                               "list_type") else repr(value)
        return f"{key}: expected {_EXPECTED[kind]}, got {got}"
    return f"{key}: {error['msg']}"


_ORDER = {"extra_forbidden": 0, "missing": 1}  # a misspelt key first: it explains a "missing"


def validate(cls: type[P], data: Any, prefix: str) -> P:
    """`data` as a `cls`, or ParamsError with the first problem as one line."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        errors = sorted(e.errors(), key=lambda err: _ORDER.get(err["type"], 2))
        raise ParamsError(describe(errors[0], cls, prefix)) from None


STAGE_SECTIONS = ("download", "prepare", "mnist100")  # the data stages' sections
SCORING_SECTIONS = ("evaluate",)  # after the models': how the evaluate stages score every model
TOOL_SECTIONS = ("tune",)  # read by `nn tune` only (nn/mnist/search_space.py checks it), never by a stage


def pipeline_models(dvc_yaml: str | Path) -> dict[str, str]:
    """model -> dataset folder name: dvc.yaml's `vars: models` map, the one the stages use."""
    found: dict[str, str] = {}
    for entry in (read_yaml(dvc_yaml) or {}).get("vars") or []:
        if isinstance(entry, dict) and isinstance(entry.get("models"), dict):
            found.update(entry["models"])
    return found


def dataset_of(model: str, dvc_yaml: str | Path) -> str:
    """The dataset folder name of `model` in dvc.yaml, or ParamsError listing the known ones."""
    found = pipeline_models(dvc_yaml)
    if model not in found:
        raise ParamsError(f"{dvc_yaml}: no model {model!r} in vars.models "
                          f"(known: {', '.join(found) or 'none'})")
    return found[model]


def known_sections(path: str | Path) -> list[str] | None:
    """The top-level sections params.yaml may have: the data stages' and one per model of the
    `models` map in the dvc.yaml beside it, then the evaluate stages' and the tools'; None
    without a dvc.yaml (a params file of its own)."""
    pipeline = Path(path).parent / "dvc.yaml"
    if not pipeline.is_file():
        return None
    known = list(STAGE_SECTIONS)
    known += [m for m in pipeline_models(pipeline) if m not in known]
    return known + [t for t in SCORING_SECTIONS + TOOL_SECTIONS if t not in known]


def load_params(cls: type[P], section: str, path: str | Path = "params.yaml") -> P:
    """Load and validate `section` of params.yaml into `cls`; unknown sections are refused."""
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    known = known_sections(path)
    unknown = [k for k in data if known is not None and k not in known]
    if unknown:
        raise ParamsError(f"{path}: unknown section {unknown[0]!r} (known: {', '.join(known)})")
    if section not in data:
        raise ParamsError(f"{path}: no section {section!r}")
    return validate(cls, data[section], section)
