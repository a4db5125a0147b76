"""Checks on the values of a model's input tensors, skipped while ``torch.compile`` or ``torch.export`` trace.

Reading a tensor's values in Python (``.tolist()``, ``bool(t.all())``) is a data-dependent branch: it breaks
``torch.compile(fullgraph=True)`` and ``torch.export``. As transformers does with
``is_torchdynamo_compiling()``, such checks run in eager mode only; a traced graph trusts its inputs.
"""

from __future__ import annotations

import torch


def checking_values() -> bool:
    """True in eager mode; False while torch.compile or torch.export (strict or not) trace the model."""
    return not torch.compiler.is_compiling()


def check_index_ranges(*checks: tuple[str, torch.Tensor | None, int, str]) -> None:
    """Raise a ValueError unless every ``(name, indices, size, bound)`` has ``0 <= indices < size``.

    ``bound`` says where ``size`` comes from (e.g. ``"vocab_size=50"``); None or empty tensors are skipped.
    All tensors are read back in one device sync; nothing is read while compiling.
    """
    present = [(name, indices, size, bound) for name, indices, size, bound in checks
               if indices is not None and indices.numel()]
    if not present or not checking_values():
        return
    device = present[0][1].device
    ranges = torch.stack([torch.stack(torch.aminmax(indices)).to(device, torch.long) for _, indices, _, _ in present])
    for (name, _, size, bound), (low, high) in zip(present, ranges.tolist()):
        if low < 0 or high >= size:
            raise ValueError(f"{name} must lie in [0, {bound}), got values in [{low}, {high}]")
