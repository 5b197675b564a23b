"""Input checks shared by the library: each raises one ``ValueError`` naming the argument.

Arrays may be numpy arrays, torch tensors or anything with a ``shape`` (pool shards); values
are read only where the check needs them (labels, finiteness).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Any, TypeVar

import numpy as np
import torch

Dim = int | str | None
"""An expected size: a number, a symbol (``"N"``, any size, shown in the message) or None."""
E = TypeVar("E", bound=Enum)


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in (x.shape if hasattr(x, "shape") else np.shape(x)))


def _show(dims: Sequence[Any]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def check_shape(x: Any, name: str, expected: Sequence[Dim], why: str = "") -> tuple[int, ...]:
    """``x``'s shape, after checking its rank and every numeric size of ``expected``
    (e.g. ``("N", 512)``); ``why`` is added to the message (``" to match the head"``)."""
    shape = _shape(x)
    if len(shape) != len(expected) or any(
            isinstance(want, int) and got != want for got, want in zip(shape, expected,
                                                                         strict=False)):
        raise ValueError(f"{name} must have shape {_show(expected)}{why}, "
                         f"got {_show(shape)}")
    return shape


def check_same_length(**arrays: Any) -> int:
    """The common length of the named arrays (None entries are skipped); an error names the
    first that differs: ``check_same_length(image_act=a, residual=r)``."""
    named = [(name, len(x) if not hasattr(x, "shape") else _shape(x)[0])
             for name, x in arrays.items() if x is not None]
    first, n = named[0]
    for name, m in named[1:]:
        if m != n:
            raise ValueError(f"{first} has {n} rows but {name} has {m}; they must have the "
                             "same length")
    return n


def check_labels(y: Any, name: str, num_classes: int, n: int | None = None) -> None:
    """``y`` is ``[n]`` integer class ids in ``[0, num_classes)``; the error shows the first
    value out of range and its row."""
    check_shape(y, name, ("N",) if n is None else (n,))
    values = y.detach().cpu().numpy() if torch.is_tensor(y) else np.asarray(y)
    if not np.issubdtype(values.dtype, np.integer) and values.size:
        raise ValueError(f"{name} must hold integers (class ids), got dtype {values.dtype}")
    bad = np.flatnonzero((values < 0) | (values >= num_classes))
    if bad.size:
        raise ValueError(f"{name} must lie in [0, {num_classes}) (one per class), found "
                         f"{values[bad[0]]} at row {bad[0]}")


def check_indices(idx: Any, name: str, n: int) -> None:
    """``idx`` is 1-D integer row ids in ``[0, n)``."""
    check_labels(idx, name, n)


def check_nonempty(x: Any, name: str, need: str = "at least one row") -> int:
    """``len(x) > 0``; returns the length. ``need`` says why (``"at least one class"``)."""
    n = _shape(x)[0] if hasattr(x, "shape") else len(x)
    if n == 0:
        raise ValueError(f"{name} is empty: need {need}")
    return n


def check_finite(x: Any, name: str) -> None:
    """No NaN or infinite value in ``x``."""
    finite = bool(torch.isfinite(x).all()) if torch.is_tensor(x) else bool(
        np.isfinite(np.asarray(x, dtype=np.float64)).all())
    if not finite:
        raise ValueError(f"{name} contains NaN or infinite values")


def check_in_range(value: float, name: str, low: float, high: float, *,
                   high_inclusive: bool = True) -> float:
    """``low <= value <= high`` (``< high`` with ``high_inclusive=False``); returns it."""
    ok = low <= value <= high if high_inclusive else low <= value < high
    if not ok:
        closing = "]" if high_inclusive else ")"
        raise ValueError(f"{name} must be in [{low}, {high}{closing}, got {value!r}")
    return value


def check_positive_int(value: Any, name: str) -> int:
    """``value`` is an int ≥ 1 (bools refused); returns it."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_choice(value: Any, name: str, choices: type[E] | Iterable[Any]) -> Any:
    """``value`` is one of ``choices`` (an iterable, or an Enum class whose member or value
    it may be: the member is returned); the error lists the choices."""
    if isinstance(choices, type) and issubclass(choices, Enum):
        try:
            return choices(value)
        except ValueError:
            options = [m.value for m in choices]
    else:
        options = list(choices)
        if value in options:
            return value
    raise ValueError(f"{name} must be one of {options}, got {value!r}")
