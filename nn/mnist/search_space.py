"""`nn tune`'s search space: tune.MODEL of params.yaml, checked against the params it
searches, and each distribution asked of an Optuna trial."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Annotated, Any

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
        elif any(v is not None and not isinstance(v, (bool, int, float, str)) for v in self.choice):
            raise ValueError("choice: each value must be a number, a string, true/false or null")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    def holds(self, value: Any) -> bool:
        """Whether `value` is one this distribution can give."""
        if self.kind == "choice":
            return value in self.choice
        low, high = getattr(self, self.kind)
        ok = isinstance(value, int) if self.kind == "int_uniform" else isinstance(value, (int, float))
        return ok and not isinstance(value, bool) and low <= value <= high

    def extremes(self) -> tuple[Any, ...]:
        """Values that stand for all this distribution can give: each choice, or a range's two
        ends (every bound a params model sets is an interval, so the ends decide)."""
        return self.choice if self.kind == "choice" else tuple(getattr(self, self.kind))

    def suggest(self, trial, path: str) -> Any:
        """This param's value for an Optuna trial (`optuna.Trial`), named by its path."""
        if self.kind == "choice":
            return trial.suggest_categorical(path, list(self.choice))
        if self.kind == "int_uniform":
            return trial.suggest_int(path, *self.int_uniform)
        return trial.suggest_float(path, *getattr(self, self.kind), log=self.kind == "log_uniform")


class SearchSettings(Params):
    """tune.MODEL in params.yaml: read by `nn tune` only, so editing it reruns no stage."""

    trials: Annotated[Int, Field(ge=1)]
    workers: Annotated[Int, Field(ge=1)] = 1
    seed: Annotated[Int, Field(ge=0)] = 0
    budget: dict[Str, Any] = {}          # dotted path -> value, for the trials only
    space: Annotated[dict[Str, Distribution], Field(min_length=1)]

    def signature(self, model: str) -> str:
        """What a study is bound to (the model, the budget and the space): two runs with the
        same signature may share a study, and a study never mixes two."""
        return json.dumps({"model": model, "budget": self.budget,
                           "space": {k: v.model_dump(exclude_defaults=True)
                                     for k, v in self.space.items()}}, sort_keys=True)


def lookup(tree: Any, path: str) -> Any:
    """The value at a dotted path ("mlp.layers.4.p": list items by index), or KeyError."""
    node = tree
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(path)
    return node


def with_values(tree: dict, values: dict[str, Any]) -> dict:
    """A copy of params.yaml's tree with each dotted path set to its value."""
    tree = copy.deepcopy(tree)
    for path, value in values.items():
        *parents, last = path.split(".")
        node = lookup(tree, ".".join(parents)) if parents else tree
        node[int(last) if isinstance(node, list) else last] = value
    return tree


def expand(space: dict[str, Distribution], params: dict[str, Any]) -> dict[str, Any]:
    """A trial's params (path -> value) with the `also` paths set alike."""
    return {p: value for path, value in params.items()
            for p in (path, *(space[path].also if path in space else ()))}


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


def check_values(settings: SearchSettings, tree: dict, model: str, check) -> None:
    """Every value the space and the budget can give, checked by `check(section, prefix)` (the
    params model a training run validates with), before anything runs: ParamsError naming the
    tune key and the value. Each searched value is tried with the others at params.yaml's."""
    section = f"tune.{model}"
    check(tree[model], model)  # params.yaml's own section first: its errors are its own
    base = with_values(tree, settings.budget)
    try:
        check(base[model], model)
    except ParamsError as e:
        raise ParamsError(f"{section}.budget: {e}") from None
    for path, d in settings.space.items():
        for value in d.extremes():
            try:
                check(with_values(base, expand(settings.space, {path: value}))[model], model)
            except ParamsError as e:
                raise ParamsError(f"{section}.space.{path}: the value {value!r} fails: {e}") from None
