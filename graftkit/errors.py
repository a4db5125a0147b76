"""The one exception type for user mistakes, and the checks of config values that raise it.

The CLI prints a GraftkitError's message as one line and exits non-zero. It subclasses ValueError so library
callers can catch bad input the usual way. Every command's seed and input paths are checked here, the same way.
"""

from __future__ import annotations

import argparse
import math
import numbers
import os
from pathlib import Path


class GraftkitError(ValueError):
    """A problem with the user's input (a path, a config value, data): the message names it."""


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` if it is an integer (a bool is not) >= ``minimum``; else a GraftkitError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise GraftkitError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_number(name: str, value: object, minimum: float = 0.0, *, strict: bool = False) -> float:
    """``value`` if it is a finite real >= ``minimum`` (> with ``strict``); else a GraftkitError naming ``name``.

    NaN and inf are refused: a NaN weight or rate passes every ``<`` comparison and poisons training silently.
    """
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
          and (value > minimum if strict else value >= minimum))
    if not ok:
        raise GraftkitError(f"{name} must be a finite number {'>' if strict else '>='} {minimum:g}, got {value!r}")
    return float(value)


#: The largest seed: numpy's legacy ``RandomState`` (which scikit-learn's ``random_state`` uses) takes seeds in
#: [0, 2**32 - 1]; torch takes [-2**63, 2**64 - 1]. Seeds derived by adding to or multiplying the base seed
#: go to torch or ``numpy.random.default_rng`` (any non-negative integer), never to ``RandomState``.
MAX_SEED = 2**32 - 1


def check_seed(name: str, value: object) -> int:
    """``value`` if it is an integer seed in [0, MAX_SEED]; else a GraftkitError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value <= MAX_SEED:
        raise GraftkitError(f"{name} must be an integer in [0, {MAX_SEED}], got {value!r}")
    return int(value)


def seed_argument(text: str) -> int:
    """The argparse ``type`` of every ``--seed`` option: an integer in [0, MAX_SEED], refused before any work
    as one usage-error line (``argument --seed: must be ...``)."""
    try:
        return check_seed("", int(text))
    except ValueError:  # not an integer (int), or out of range (GraftkitError is a ValueError)
        raise argparse.ArgumentTypeError(f"must be an integer in [0, {MAX_SEED}], got {text!r}") from None


def check_input(path: str | os.PathLike, what: str, *, folder: bool = False) -> Path:
    """``path`` if it exists and is a file (with ``folder``: a folder); else one GraftkitError naming ``what``
    and saying which it is: not found, a folder where a file is expected, or a file where a folder is."""
    path = Path(path)
    if not path.exists():
        raise GraftkitError(f"{what} not found: {path}")
    if folder and not path.is_dir():
        raise GraftkitError(f"{what} {path} is a file, not a folder")
    if not folder and path.is_dir():
        raise GraftkitError(f"{what} {path} is a folder, not a file")
    return path
