"""Declared parameter constraints for config dataclasses, checked at construction.

After scikit-learn's ``_parameter_constraints``: a config class declares, per field, the list
of what a value may be, and its ``__post_init__`` calls :func:`check_constraints`::

    _constraints = {"budget": [Interval(1, None, integer=True)], "batch": [BatchRule],
                    "balance_within": [None, Interval(1, None)]}

An entry is ``None`` (the value may be None), a type (``bool``, ``str``, ...), a ``str``
:class:`~enum.Enum` (strings are converted to the member, so YAML and the CLI may give
``"topk"``) or an :class:`Interval`. The first that accepts the value wins; the error names
the class, the field, the value and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, is_dataclass
from enum import Enum
from numbers import Integral, Real
from typing import Any, get_type_hints


@dataclass(frozen=True)
class Interval:
    """A closed interval of numbers (None = unbounded on that side); ``integer=True`` asks
    for whole numbers."""

    low: float | None
    high: float | None
    integer: bool = False
    open_low: bool = False
    open_high: bool = False

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, Integral if self.integer else Real):
            return False
        if not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.open_low else value >= self.low)
        below = self.high is None or (value < self.high if self.open_high else
                                      value <= self.high)
        return above and below

    def __str__(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            return (f"{kind} in {'(' if self.open_low else '['}{self.low}, {self.high}"
                    f"{')' if self.open_high else ']'}")
        if self.low is not None:
            return f"{kind} {'>' if self.open_low else '>='} {self.low}"
        if self.high is not None:
            return f"{kind} {'<' if self.open_high else '<='} {self.high}"
        return kind


def _describe(allowed) -> str:
    if allowed is None:
        return "None"
    if isinstance(allowed, type) and issubclass(allowed, Enum):
        return "one of " + ", ".join(repr(m.value) for m in allowed)
    if isinstance(allowed, type):
        return f"a {allowed.__name__}"
    return str(allowed)


def _convert(value: Any, allowed) -> tuple[bool, Any]:
    """``(accepted, value converted)`` for one allowed kind."""
    if allowed is None:
        return value is None, value
    if isinstance(allowed, Interval):
        return allowed.accepts(value), value
    if isinstance(allowed, type) and issubclass(allowed, Enum):
        try:
            return True, allowed(value)
        except ValueError:
            return False, value
    if allowed is float and isinstance(value, Integral) and not isinstance(value, bool):
        return True, float(value)
    return isinstance(value, allowed), value


def check_constraints(obj: Any) -> None:
    """Check (and convert, e.g. strings to enum members) every field of the dataclass
    ``obj`` that its class's ``_constraints`` names; the error reads ``Class.field must be
    ..., got value``."""
    name = type(obj).__name__
    for field_name, options in type(obj)._constraints.items():
        value = getattr(obj, field_name)
        for allowed in options:
            ok, converted = _convert(value, allowed)
            if ok:
                if converted is not value:
                    object.__setattr__(obj, field_name, converted)
                break
        else:
            choices = " or ".join(_describe(a) for a in options)
            raise ValueError(f"{name}.{field_name} must be {choices}, got {value!r}")


def config_from_dict(cls: type, raw: dict | None, where: str | None = None):
    """Build the config dataclass ``cls`` from plain data (YAML, JSON, CLI): nested config
    fields from mappings; an unknown key is an error naming it and the known ones."""
    where = where or cls.__name__
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a mapping of options, got {raw!r}")
    hints = get_type_hints(cls)
    known = [f.name for f in fields(cls) if f.init]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"unknown {where} option(s) {unknown}; known: {sorted(known)}")
    values = {}
    for key, value in raw.items():
        kind = hints[key]
        if is_dataclass(kind) and (value is None or isinstance(value, dict)):
            value = config_from_dict(kind, value, f"{where}.{key}")
        values[key] = value
    return cls(**values)


def config_to_dict(config) -> dict:
    """Plain data (JSON-ready: enums as their values) of a config dataclass."""
    def plain(value):
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    return plain(asdict(config))


def deep_merge(base: dict, override: dict | None) -> dict:
    """``base`` updated by ``override``, mappings merged key by key (neither is changed)."""
    out = dict(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            value = deep_merge(out[key], value)
        out[key] = value
    return out
