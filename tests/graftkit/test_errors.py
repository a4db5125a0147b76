"""The shared config-value checks: what they accept, and that the message names the value."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch

from graftkit.errors import MAX_SEED, GraftkitError, check_input, check_int, check_number, check_seed, seed_argument


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


def test_every_seed_in_range_is_accepted_by_numpy_and_torch():
    """The seed range is what both take: numpy's RandomState (scikit-learn's random_state) and torch."""
    for seed in (0, MAX_SEED):
        assert seed_argument(str(seed)) == check_seed("seed", seed) == seed
        np.random.RandomState(seed)
        torch.Generator().manual_seed(seed)
    with pytest.raises(ValueError):
        np.random.RandomState(MAX_SEED + 1)


@pytest.mark.parametrize("text", ["-1", str(MAX_SEED + 1), str(10**20), "1.5", "abc", ""])
def test_seed_argument_refuses_the_rest_as_a_usage_error(text):
    with pytest.raises(argparse.ArgumentTypeError, match=rf"must be an integer in \[0, {MAX_SEED}\], got"):
        seed_argument(text)


@pytest.mark.parametrize("value", [-1, MAX_SEED + 1, True, 1.0, None])
def test_check_seed_refuses_the_rest_naming_the_value(value):
    with pytest.raises(GraftkitError, match=r"seed must be an integer in \[0, "):
        check_seed("seed", value)


def test_check_input_says_missing_folder_or_file(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    assert check_input(tmp_path / "f.txt", "--in") == tmp_path / "f.txt"
    assert check_input(tmp_path, "--dir", folder=True) == tmp_path
    with pytest.raises(GraftkitError, match=r"^--in not found: .*nope$"):
        check_input(tmp_path / "nope", "--in")
    with pytest.raises(GraftkitError, match=r"^--in .* is a folder, not a file$"):
        check_input(tmp_path, "--in")
    with pytest.raises(GraftkitError, match=r"^--dir .*f.txt is a file, not a folder$"):
        check_input(tmp_path / "f.txt", "--dir", folder=True)
