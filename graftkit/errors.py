"""The one exception type for user mistakes, and the checks of config values that raise it.

The CLI prints a GraftkitError's message as one line and exits non-zero. It subclasses ValueError so library
callers can catch bad input the usual way.
"""

from __future__ import annotations

import math
import numbers


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
