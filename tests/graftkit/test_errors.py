"""The shared config-value checks: what they accept, and that the message names the value."""

from __future__ import annotations

import math

import numpy as np
import pytest

from graftkit.errors import GraftkitError, check_int, check_number


def test_check_int_accepts_integers_at_or_above_the_minimum():
    assert check_int("k", 3) == 3
    assert check_int("k", np.int64(1)) == 1
    assert check_int("epochs", 0, minimum=0) == 0


@pytest.mark.parametrize("value", [0, -2, 2.0, True, "3", None])
def test_check_int_refuses_the_rest_naming_the_value(value):
    with pytest.raises(GraftkitError, match=r"k must be an integer >= 1, got"):
        check_int("k", value)


def test_check_number_bounds_and_strictness():
    assert check_number("lr", 0.0) == 0.0
    assert check_number("lr", 3) == 3.0
    assert check_number("beta", 1e-9, strict=True) == 1e-9
    with pytest.raises(GraftkitError, match=r"beta must be a finite number > 0, got 0"):
        check_number("beta", 0, strict=True)
    with pytest.raises(GraftkitError, match=r"ridge must be a finite number >= 0, got -1"):
        check_number("ridge", -1)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, True, "1", None])
def test_check_number_refuses_nan_inf_and_non_numbers(value):
    with pytest.raises(GraftkitError, match="w must be a finite number >= 0"):
        check_number("w", value)
