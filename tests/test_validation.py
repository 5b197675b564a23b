"""activevlm.utils.validation: each check accepts good input (numpy, torch, lists) and
raises one ValueError naming the argument and the offending value."""

from __future__ import annotations

from enum import StrEnum

import numpy as np
import pytest
import torch

from activevlm.utils.validation import (
    check_choice,
    check_finite,
    check_in_range,
    check_indices,
    check_labels,
    check_nonempty,
    check_positive_int,
    check_same_length,
    check_shape,
)


@pytest.mark.parametrize("make", [np.zeros, torch.zeros])
def test_check_shape_returns_the_shape_and_names_the_argument(make):
    assert check_shape(make((4, 3)), "act", ("N", 3)) == (4, 3)
    assert check_shape(make((4, 3)), "act", (None, None)) == (4, 3)
    with pytest.raises(ValueError, match=r"^act must have shape \[N, 5\] to match the head, "
                                         r"got \[4, 3\]$"):
        check_shape(make((4, 3)), "act", ("N", 5), " to match the head")
    with pytest.raises(ValueError, match=r"act must have shape \[N, 3\], got \[4, 3, 1\]"):
        check_shape(make((4, 3, 1)), "act", ("N", 3))


def test_check_same_length_skips_none_and_names_both():
    assert check_same_length(a=np.zeros(3), b=[1, 2, 3], c=None) == 3
    with pytest.raises(ValueError, match="a has 3 rows but c has 2; they must have the same"):
        check_same_length(a=np.zeros((3, 2)), b=None, c=torch.zeros(2))


@pytest.mark.parametrize("make", [np.array, torch.tensor])
def test_check_labels_range_dtype_and_length(make):
    check_labels(make([0, 2, 1]), "labels", 3, 3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*found 3 at row 1"):
        check_labels(make([0, 3, -1]), "labels", 3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*found -1 at row 0"):
        check_labels(make([-1, 3]), "labels", 3)
    with pytest.raises(ValueError, match="labels must hold integers"):
        check_labels(make([0.0, 1.0]), "labels", 3)
    with pytest.raises(ValueError, match=r"labels must have shape \[4\], got \[3\]"):
        check_labels(make([0, 1, 2]), "labels", 3, 4)
    check_indices(make([4, 0]), "rows", 5)
    with pytest.raises(ValueError, match=r"rows must lie in \[0, 5\).*found 5 at row 0"):
        check_indices(make([5]), "rows", 5)


def test_check_finite_nonempty_and_scalars():
    check_finite(np.ones(3), "x")
    for bad in (np.array([1.0, np.nan]), torch.tensor([np.inf])):
        with pytest.raises(ValueError, match="x contains NaN or infinite values"):
            check_finite(bad, "x")
    assert check_nonempty(np.zeros((2, 3)), "txt") == 2
    with pytest.raises(ValueError, match="txt is empty: need at least one class"):
        check_nonempty(torch.zeros(0, 3), "txt", "at least one class")
    assert check_positive_int(np.int64(2), "k") == 2
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            check_positive_int(bad, "k")
    assert check_in_range(0.0, "f", 0.0, 1.0, high_inclusive=False) == 0.0
    with pytest.raises(ValueError, match=r"f must be in \[0.0, 1.0\), got 1.0"):
        check_in_range(1.0, "f", 0.0, 1.0, high_inclusive=False)
    check_in_range(1.0, "f", 0.0, 1.0)


class Mode(StrEnum):
    A = "a"
    B = "b"


def test_check_choice_lists_the_choices_and_returns_enum_members():
    assert check_choice("x", "mode", ("x", "y")) == "x"
    assert check_choice("b", "mode", Mode) is Mode.B
    assert check_choice(Mode.A, "mode", Mode) is Mode.A
    with pytest.raises(ValueError, match=r"mode must be one of \['a', 'b'\], got 'c'"):
        check_choice("c", "mode", Mode)
    with pytest.raises(ValueError, match=r"mode must be one of \['x', 'y'\], got 'z'"):
        check_choice("z", "mode", ("x", "y"))
