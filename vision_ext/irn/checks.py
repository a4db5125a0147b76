"""Value checks on the tensors the IRN entry points take (the model, the resizer, the metrics, the writer).

A NaN passes silently through convolutions, resizing and PSNR, and a 0–255 image saturates the quantizer:
each public entry point checks its inputs here and raises one ``GraftkitError`` naming the problem. The
checks read tensor values, so they are skipped while ``torch.compile``/``torch.export`` trace (a
data-dependent branch would break a full-graph capture); eager calls always run them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from graftkit.errors import GraftkitError


def check_values(x: Tensor, what: str, unit_range: bool = False) -> None:
    """Raise when ``x`` holds NaN or inf or, with ``unit_range``, values outside [0, 1]."""
    if torch.compiler.is_compiling():
        return
    if not torch.isfinite(x).all():
        raise GraftkitError(f"{what} contains NaN or infinite values")
    if unit_range and x.numel():
        low, high = (float(v) for v in torch.aminmax(x.detach()))
        if low < 0.0 or high > 1.0:
            hint = "; 8-bit values (0-255)? divide by 255" if low >= 0.0 and high <= 255.0 else ""
            raise GraftkitError(f"{what} must hold values in [0, 1] (float RGB), got values in "
                                f"[{low:g}, {high:g}]{hint}")
