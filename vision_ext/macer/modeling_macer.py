"""The MACER objective (Zhai et al., ICLR 2020) and Cohen et al.'s Gaussian-augmentation baseline.

For an input x with label y, draw k noisy copies x + δ_j, δ_j ~ N(0, σ²I), and let f be the base classifier's
logits. MACER minimises, over a batch of B inputs,

    L = (1/B) · [ Σ_i l_C(x_i) + λ · l_R ]
    l_C(x) = −log ẑ_y(x),                  ẑ(x)  = (1/k) Σ_j softmax(f(x + δ_j))
    l_R    = (σ/2) · Σ_{i ∈ S} (γ − ξ_i),  ẑ^β(x) = (1/k) Σ_j softmax(β · f(x + δ_j))
    ξ_i    = Φ⁻¹(ẑ^β_y(x_i)) − Φ⁻¹(max_{c≠y} ẑ^β_c(x_i))

where S holds the inputs whose top β-class is y (correctly classified) and whose ξ is finite and ≤ γ (the
hinge: beyond γ the radius surrogate no longer needs pushing; ξ = ∞ when ẑ^β saturates at 1 or 0). As in the
reference code, ξ is evaluated a second time on the kept inputs only: masking a ξ computed on all inputs
would back-propagate 0·∞ = NaN through Φ⁻¹ at 0 or 1. Φ⁻¹ is ``torch.special.ndtri`` (the reference's
``Normal.icdf`` goes through erfinv(2p − 1), which loses the lower tail below ≈1e-7 in float32).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.nn import functional as F

from vision_ext.macer.configuration_macer import MacerConfig


class LossTerms(NamedTuple):
    """``loss`` is what to back-propagate; the two terms are batch sums, detached, for logging."""

    loss: torch.Tensor
    classification: torch.Tensor
    robustness: torch.Tensor


def noisy_copies(x: torch.Tensor, k: int, sigma: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, ...) → (B·k, ...): the k noisy copies of input i are rows i·k … i·k + k − 1."""
    copies = x.repeat_interleave(k, dim=0)
    noise = torch.randn(copies.shape, generator=generator, device=x.device, dtype=x.dtype)
    return copies.add_(noise.mul_(sigma))


def macer_loss(logits: torch.Tensor, targets: torch.Tensor, sigma: float, lbd: float, beta: float,
               gamma: float) -> LossTerms:
    """MACER loss from the logits of the k noisy copies, ``logits`` (B, k, C), ``targets`` (B,)."""
    batch = logits.shape[0]
    mean_softmax = F.softmax(logits, dim=2).mean(1)
    # 1e-10 as the reference: log(0) when a class gets no mass under any copy
    classification = F.nll_loss(torch.log(mean_softmax + 1e-10), targets, reduction="sum")

    tempered = F.softmax(beta * logits, dim=2).mean(1)
    top2, top2_idx = tempered.topk(2, dim=1)
    correct = top2_idx[:, 0] == targets
    p1, p2 = top2[correct, 0], top2[correct, 1]
    with torch.no_grad():
        xi = torch.special.ndtri(p1) - torch.special.ndtri(p2)
        keep = torch.isfinite(xi) & (xi <= gamma)
    p1, p2 = p1[keep], p2[keep]
    robustness = (sigma / 2) * (gamma - (torch.special.ndtri(p1) - torch.special.ndtri(p2))).sum()

    loss = (classification + lbd * robustness) / batch
    return LossTerms(loss, classification.detach(), robustness.detach())


def gaussian_augmentation_loss(logits: torch.Tensor, targets: torch.Tensor) -> LossTerms:
    """Cohen et al.'s training: cross-entropy of every noisy copy, averaged over the B·k copies."""
    batch, k, classes = logits.shape
    per_input = F.cross_entropy(logits.reshape(batch * k, classes), targets.repeat_interleave(k),
                                reduction="none").view(batch, k).mean(1)
    return LossTerms(per_input.mean(), per_input.sum().detach(), logits.new_zeros(()))


def smoothed_training_loss(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                           config: MacerConfig, generator: torch.Generator | None = None) -> LossTerms:
    """One forward pass of ``model`` over k noisy copies of ``inputs`` and the configured objective."""
    logits = model(noisy_copies(inputs, config.k, config.sigma, generator))
    logits = logits.view(inputs.shape[0], config.k, -1)
    if config.objective == "gaussian":
        return gaussian_augmentation_loss(logits, targets)
    return macer_loss(logits, targets, config.sigma, config.lbd, config.beta, config.gamma)
