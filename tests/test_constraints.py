"""Declared config constraints: checks, conversions, nested from_dict, merge, plain data."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum

import pytest

from activevlm.loop import LoopConfig
from activevlm.runs import SelectConfig
from activevlm.utils.constraints import (
    Interval,
    check_constraints,
    config_from_dict,
    config_to_dict,
    deep_merge,
)


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Inner:
    colour: Colour = Colour.RED
    _constraints = {"colour": [Colour]}

    def __post_init__(self) -> None:
        check_constraints(self)


@dataclass(frozen=True)
class Outer:
    k: int = 1
    rate: float = 0.5
    limit: float | None = None
    inner: Inner = field(default_factory=Inner)
    _constraints = {"k": [Interval(1, None, integer=True)],
                    "rate": [Interval(0, 1, open_low=True, open_high=True)],
                    "limit": [None, Interval(None, 10)], "inner": [Inner]}

    def __post_init__(self) -> None:
        check_constraints(self)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"k": 0}, "Outer.k must be an integer >= 1, got 0"),
    ({"k": 1.5}, "Outer.k must be an integer >= 1, got 1.5"),
    ({"k": True}, "Outer.k must be an integer >= 1, got True"),
    ({"rate": 0.0}, r"Outer.rate must be a number in \(0, 1\), got 0.0"),
    ({"rate": 1}, r"Outer.rate must be a number in \(0, 1\), got 1"),
    ({"rate": float("nan")}, "Outer.rate must be"),
    ({"limit": 11}, "Outer.limit must be None or a number <= 10, got 11"),
])
def test_violations_name_class_field_and_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Outer(**kwargs)


def test_accepted_values_and_enum_conversion():
    assert Outer(k=3, rate=0.999, limit=-4).limit == -4
    inner = Inner(colour="blue")
    assert inner.colour is Colour.BLUE
    with pytest.raises(ValueError, match="Inner.colour must be one of 'red', 'blue', got 'green'"):
        Inner(colour="green")


def test_from_dict_builds_nested_configs_and_names_unknown_keys():
    cfg = config_from_dict(Outer, {"k": 2, "inner": {"colour": "blue"}})
    assert cfg == Outer(k=2, inner=Inner(Colour.BLUE))
    with pytest.raises(ValueError, match=r"unknown Outer.inner option\(s\) \['shade'\]"):
        config_from_dict(Outer, {"inner": {"shade": 1}})
    with pytest.raises(ValueError, match="Outer must be a mapping"):
        config_from_dict(Outer, ["k"])
    plain = config_to_dict(cfg)
    assert plain == {"k": 2, "rate": 0.5, "limit": None, "inner": {"colour": "blue"}}
    assert type(plain["inner"]["colour"]) is str and json.loads(json.dumps(plain)) == plain
    assert config_from_dict(Outer, plain) == cfg


def test_deep_merge_merges_mappings_key_by_key_without_changing_inputs():
    base = {"a": 1, "b": {"x": 1, "y": 2}}
    over = {"b": {"y": 3}, "c": 4}
    assert deep_merge(base, over) == {"a": 1, "b": {"x": 1, "y": 3}, "c": 4}
    assert base == {"a": 1, "b": {"x": 1, "y": 2}} and over == {"b": {"y": 3}, "c": 4}


def test_loop_options_keep_the_loops_defaults():
    cfg = LoopConfig.from_dict({"select": {"strategy": "epig", "batch": {"rule": "greedy"}}})
    assert cfg.select.budget == LoopConfig().select.budget == 50  # not select's 500
    assert SelectConfig().budget == 500
    assert cfg.select.batch.rule == "greedy" and cfg.rounds == LoopConfig().rounds
