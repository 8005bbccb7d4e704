"""nn.mnist.params: pydantic params and their one-line errors naming the dotted key."""

from typing import Annotated, Any, Literal

import pytest
from pydantic import AfterValidator, Field, ValidationError

from nn.mnist.params import Bool, Float, Int, Params, ParamsError, Str, finite, load_params, validate


class Inner(Params):
    rate: Annotated[Float, Field(gt=0, le=1)]
    kind: Literal["a", "b"] = "a"


class Outer(Params):
    count: Annotated[Int, Field(ge=1)]
    inner: Inner
    items: tuple[Inner, ...] = ()
    flag: Bool = False
    name: Str = "x"
    extra: Annotated[dict[Str, Any], AfterValidator(finite)] = {}
    limit: Annotated[Float | None, Field(gt=0)] = None


GOOD = {"count": 2, "inner": {"rate": 0.5}}


@pytest.mark.parametrize("change, message", [
    ({"count": 0}, "s.count: 0 must be >= 1"),
    ({"count": "2"}, "s.count: expected an integer, got '2'"),
    ({"count": True}, "s.count: expected an integer, got True"),
    ({"count": 2.0}, "s.count: expected an integer, got 2.0"),
    ({"inner": {"rate": 2}}, "s.inner.rate: 2.0 must be <= 1"),
    ({"inner": {"rate": float("nan")}}, "s.inner.rate: nan is not a finite number"),
    ({"inner": {"rate": float("-inf")}}, "s.inner.rate: -inf is not a finite number"),
    ({"inner": {"rate": 0.5, "kind": "c"}}, "s.inner.kind: 'c' is not one of 'a', 'b'"),
    ({"inner": {"rate": 0.5, "rte": 1}}, "s.inner.rte: unknown key (known: rate, kind)"),
    ({"inner": {}}, "s.inner.rate: missing"),
    ({"inner": [1]}, "s.inner: expected a mapping, got list"),
    ({"items": [{"rate": 0.5}, {"rate": 0}]}, "s.items[1].rate: 0.0 must be > 0"),
    ({"items": "ab"}, "s.items: expected a list, got str"),
    ({"flag": "yes"}, "s.flag: expected bool, got 'yes'"),
    ({"name": 3}, "s.name: expected str, got 3"),
    ({"extra": {"a": [1.0, {"b": float("inf")}]}}, "s.extra.a[1].b: inf is not a finite number"),
    ({"limit": -1}, "s.limit: -1.0 must be > 0"),
    ({"cuont": 1}, "s.cuont: unknown key (known: count, inner, items, flag, name, extra, limit)"),
])
def test_one_line_naming_the_dotted_key(change, message):
    with pytest.raises(ParamsError) as e:
        validate(Outer, {**GOOD, **change}, "s")
    assert str(e.value) == message


def test_a_misspelt_key_is_reported_before_the_missing_one():
    with pytest.raises(ParamsError, match=r"^s\.cont: unknown key"):
        validate(Outer, {"cont": 2, "inner": {"rate": 0.5}}, "s")


def test_params_are_frozen_and_typed():
    p = validate(Outer, {**GOOD, "limit": 1, "items": [{"rate": 1}]}, "s")
    assert p.limit == 1.0 and isinstance(p.limit, float) and isinstance(p.items, tuple)
    with pytest.raises(ValidationError, match="frozen"):
        p.count = 3


def test_load_params_reads_one_section(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("s:\n  count: 3\n  inner: {rate: .nan}\n")
    with pytest.raises(ParamsError, match=r"^s\.inner\.rate: nan is not a finite number$"):
        load_params(Outer, "s", path)
    with pytest.raises(ParamsError, match="no section 't'"):
        load_params(Outer, "t", path)
    with pytest.raises(ParamsError, match="not found"):
        load_params(Outer, "s", tmp_path / "none.yaml")
