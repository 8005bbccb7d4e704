"""`nn tune`'s search space: tune.MODEL of params.yaml, checked against the params it
searches, and seeded sampling into `dvc exp run -S path=value` overrides."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import Field, model_validator

from nn.mnist.params import Float, Int, Params, ParamsError, Str, read_yaml, validate

KINDS = ("log_uniform", "uniform", "int_uniform", "choice")


class Distribution(Params):
    """One searched param: exactly one of the four kinds; `also` lists paths that get the same
    value (a layer's width is also the next layer's input)."""

    log_uniform: tuple[Float, Float] | None = None
    uniform: tuple[Float, Float] | None = None
    int_uniform: tuple[Int, Int] | None = None
    choice: Annotated[tuple[Any, ...], Field(min_length=1)] | None = None
    also: tuple[Str, ...] = ()

    @model_validator(mode="after")
    def _one_kind(self):
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(KINDS)} (got {len(given)})")
        if self.kind != "choice":
            low, high = getattr(self, self.kind)
            if not low < high:
                raise ValueError(f"{self.kind}: low {low} must be < high {high}")
            if self.kind == "log_uniform" and low <= 0:
                raise ValueError(f"log_uniform: low {low} must be > 0")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    def draw(self, rng: np.random.Generator) -> Any:
        """One value; floats kept to 4 significant digits so that names and tables stay short."""
        if self.kind == "choice":
            return self.choice[int(rng.integers(len(self.choice)))]
        if self.kind == "int_uniform":
            return int(rng.integers(self.int_uniform[0], self.int_uniform[1] + 1))
        low, high = getattr(self, self.kind)
        if self.kind == "log_uniform":
            value = math.exp(rng.uniform(math.log(low), math.log(high)))
        else:
            value = rng.uniform(low, high)
        return float(f"{min(max(value, low), high):.4g}")


class SearchSettings(Params):
    """tune.MODEL in params.yaml: read by `nn tune` only, so editing it reruns no stage."""

    trials: Annotated[Int, Field(ge=1)]
    workers: Annotated[Int, Field(ge=1)] = 1
    seed: Annotated[Int, Field(ge=0)] = 0
    budget: dict[Str, Any] = {}          # dotted path -> value, for the trials only
    space: Annotated[dict[Str, Distribution], Field(min_length=1)]


def lookup(tree: Any, path: str) -> Any:
    """The value at a dotted path as `dvc exp run -S` takes it ("mlp.layers.4.p"), or KeyError."""
    node = tree
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(path)
    return node


def load_settings(model: str, params: Path) -> tuple[SearchSettings, dict]:
    """tune.MODEL, checked against params.yaml: every path exists and belongs to MODEL."""
    tree = read_yaml(params)
    section = f"tune.{model}"
    data = (tree or {}).get("tune", {}).get(model) if isinstance(tree, dict) else None
    if data is None:
        raise ParamsError(f"{params}: no section {section!r} (the search space of {model})")
    settings = validate(SearchSettings, data, section)
    paths = [("budget", p) for p in settings.budget]
    paths += [("space", p) for d_path, d in settings.space.items() for p in (d_path, *d.also)]
    for where, path in paths:
        if not path.startswith(f"{model}."):
            raise ParamsError(f"{section}.{where}: {path}: must be a param of {model} "
                              f"(start with '{model}.')")
        try:
            lookup(tree, path)
        except KeyError:
            raise ParamsError(f"{section}.{where}: {path}: no such param in {params} "
                              f"(list items by index: {model}.layers.4.p)") from None
    return settings, tree


def sample(space: dict[str, Distribution], trials: int, seed: int) -> list[dict[str, Any]]:
    """`trials` dicts of path -> value (the `also` paths included), from one seeded generator."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(trials):
        trial = {}
        for path, dist in space.items():
            value = dist.draw(rng)
            for p in (path, *dist.also):
                trial[p] = value
        out.append(trial)
    return out


def yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def set_args(overrides: dict[str, Any]) -> list[str]:
    return [a for path, value in overrides.items() for a in ("-S", f"{path}={yaml_value(value)}")]
