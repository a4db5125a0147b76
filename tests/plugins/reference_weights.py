"""Seeded random float64 state dicts under a reference implementation's parameter names (the converters' tests)."""

import torch


class ReferenceWeights(dict):
    """A state dict filled by name. LayerNorm scales sit away from 1 and shifts and biases away from 0 on purpose,
    so a parameter the converter maps to the wrong place, or drops, changes the outputs."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self._generator = torch.Generator().manual_seed(seed)

    def rand(self, *shape: int, scale: float = 0.3) -> torch.Tensor:
        return torch.randn(*shape, generator=self._generator, dtype=torch.float64) * scale

    def norm(self, name: str, size: int) -> None:
        self[f"{name}.weight"], self[f"{name}.bias"] = 1 + self.rand(size, scale=0.1), self.rand(size, scale=0.1)

    def linear(self, name: str, n_out: int, n_in: int) -> None:
        self[f"{name}.weight"], self[f"{name}.bias"] = self.rand(n_out, n_in), self.rand(n_out, scale=0.1)
