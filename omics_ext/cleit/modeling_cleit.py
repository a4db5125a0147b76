"""CLEIT's networks and losses: the omics autoencoder, the multi-output drug regressor, the contrastive
transmission loss and the masked scale-invariant MSE (XieResearchGroup/CLEIT ``ae.py``,
``multi_out_mlp.py``, ``loss_and_metrics.py``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from graftkit.errors import GraftkitError, check_number
from omics_ext.cleit.configuration_cleit import REGRESSOR_ACTIVATIONS, check_simse

_ACTIVATIONS: dict[str, type[nn.Module]] = {"selu": nn.SELU, "relu": nn.ReLU}


class OmicsAutoEncoder(nn.Module):
    r"""Fully connected autoencoder of one omics level.

    Encoder: ``[Linear → SELU → Dropout]`` for each hidden size, then ``Dropout → Linear(hidden[-1], latent)``;
    decoder: the mirror, ``Linear(latent, hidden[-1]) → SELU → Dropout``, ..., then ``Linear(hidden[0], input)``.
    Loss: :math:`\mathrm{MSE}(\hat x, x)` averaged over samples and genes.
    """

    def __init__(self, input_dim: int, hidden_dims: tuple[int, ...] = (512, 256), latent_dim: int = 128,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.input_dim, self.hidden_dims, self.latent_dim, self.dropout = input_dim, hidden_dims, latent_dim, dropout
        sizes = (input_dim, *hidden_dims)
        blocks: list[nn.Module] = [nn.Sequential(nn.Linear(a, b), nn.SELU(), nn.Dropout(dropout))
                                   for a, b in zip(sizes[:-1], sizes[1:])]
        self.encoder = nn.Sequential(*blocks, nn.Dropout(dropout), nn.Linear(hidden_dims[-1], latent_dim))
        back = (latent_dim, *reversed(hidden_dims))
        self.decoder = nn.Sequential(*[nn.Sequential(nn.Linear(a, b), nn.SELU(), nn.Dropout(dropout))
                                       for a, b in zip(back[:-1], back[1:])],
                                     nn.Linear(hidden_dims[0], input_dim))

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(reconstruction, code)``."""
        code = self.encoder(x)
        return self.decoder(code), code

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.input_dim} → {' → '.join(map(str, self.hidden_dims))} → "
                f"{self.latent_dim}, SELU, dropout={self.dropout})")


class PerDrugLinear(nn.Module):
    r"""``D`` independent linear maps applied at once: :math:`y_{b,d} = x_{b,d} W_d + b_d`.

    Input ``[B, D, in]`` (or ``[B, in]``, shared by all drugs), output ``[B, D, out]``. Each ``W_d`` is
    initialised like ``nn.Linear(in, out)``.
    """

    def __init__(self, n_drugs: int, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.n_drugs, self.in_features, self.out_features = n_drugs, in_features, out_features
        self.weight = nn.Parameter(torch.empty(n_drugs, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(n_drugs, out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features)  # nn.Linear's default: kaiming_uniform(a=√5) and its bias
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.einsum("bi,dio->bdo", x, self.weight) if x.dim() == 2 else \
            torch.einsum("bdi,dio->bdo", x, self.weight)
        return out + self.bias if self.bias is not None else out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(drugs={self.n_drugs}, {self.in_features} → {self.out_features})"


class MultiOutputRegressor(nn.Module):
    """Shared ``Linear(latent, shared) → act → Dropout``, then one tower per drug
    ``shared → towers[0] → ... → towers[-1] → 1`` (act and dropout between layers). Output ``[B, n_drugs]``.

    ``activation``: ``"selu"`` (default) as the reference's final ``multi_out_mlp.py`` (``MoMLP``,
    ``act_fn=nn.SELU``), or ``"relu"``, its early MoMLP's default (and this package's earlier one).
    """

    def __init__(self, latent_dim: int, n_drugs: int, shared_dim: int = 128, tower_dims: tuple[int, ...] = (64, 32),
                 dropout: float = 0.1, activation: str = "selu") -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise GraftkitError(f"MultiOutputRegressor: activation must be one of {', '.join(REGRESSOR_ACTIVATIONS)}, "
                                f"got {activation!r}")
        act = _ACTIVATIONS[activation]
        self.n_drugs, self.activation = n_drugs, activation
        self.shared = nn.Sequential(nn.Linear(latent_dim, shared_dim), act(), nn.Dropout(dropout))
        sizes = (shared_dim, *tower_dims)
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [PerDrugLinear(n_drugs, a, b), act(), nn.Dropout(dropout)]
        self.towers = nn.Sequential(*layers, PerDrugLinear(n_drugs, tower_dims[-1], 1))

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear | PerDrugLinear):
                module.reset_parameters()

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.towers(self.shared(code)).squeeze(-1)


class EncoderRegressor(nn.Module):
    """An omics encoder followed by the multi-output regressor: omics profile → one prediction per drug."""

    def __init__(self, encoder: nn.Module, regressor: MultiOutputRegressor) -> None:
        super().__init__()
        self.encoder, self.regressor = encoder, regressor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.regressor(self.encoder(x))


def cosine_similarity_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``S[i, j] = cos(a_i, b_j)``."""
    return F.normalize(a, p=2, dim=1) @ F.normalize(b, p=2, dim=1).T


def contrastive_loss(teacher_codes: torch.Tensor, student_codes: torch.Tensor, temperature: float = 1.0
                     ) -> torch.Tensor:
    r"""CLEIT's transmission loss between the teacher's expression codes and the mutation codes of a batch.

    With :math:`S_{ij} = \cos(z^{expr}_i, z^{mut}_j) / \tau`,

    .. math:: L = -\frac{1}{B}\sum_k \Big[S_{kk} - \log\Big(\sum_{i\neq k} e^{S_{ik}}
              + \sum_{j\neq k} e^{S_{kj}}\Big)\Big]

    (the reference's ``contrastive_loss``; :math:`\tau = 1` there). Needs a batch of at least 2 and a finite
    :math:`\tau > 0` (τ = 0 divides by zero, a negative τ rewards misalignment).
    """
    check_number("contrastive_loss: temperature", temperature, strict=True)
    if teacher_codes.shape != student_codes.shape or teacher_codes.dim() != 2:
        raise ValueError(f"contrastive_loss needs two [B, d] code matrices of the same shape, got "
                         f"{tuple(teacher_codes.shape)} and {tuple(student_codes.shape)}")
    if teacher_codes.shape[0] < 2:
        raise ValueError("contrastive_loss needs a batch of at least 2 samples (it contrasts against the others)")
    sim = cosine_similarity_matrix(teacher_codes, student_codes) / temperature
    off_diagonal = ~torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
    exp = sim.exp() * off_diagonal
    log_denominator = (exp.sum(dim=0) + exp.sum(dim=1)).log()
    return -(sim.diagonal() - log_denominator).mean()


def masked_simse(preds: torch.Tensor, labels: torch.Tensor, penalty: float = 0.1, over: str = "drug"
                 ) -> torch.Tensor:
    r"""Masked scale-invariant MSE over the labelled entries (NaN = missing), the reference's ``masked_simse``.

    With ``over="drug"`` (the default: the reference's final ``loss_and_metrics.py`` as the project's
    reference notes give it; the commits we could read have the per-line form), per drug :math:`d`
    with :math:`n_d` labelled cell lines and residuals :math:`r_{id}`:

    .. math:: L = \frac{1}{D'}\sum_d \Big[\frac{1}{n_d}\sum_i r_{id}^2
              - \lambda\Big(\frac{1}{n_d}\sum_i r_{id}\Big)^2\Big]

    with :math:`\lambda` = ``penalty`` (0.1 there) and :math:`D'` the drugs with at least one label in the
    batch. ``over="cell_line"`` takes the same per cell line across its labelled drugs (the reference's early
    form, with :math:`\lambda = 1`): it is blind to a constant added to all of a line's predictions, i.e.
    to the line's overall sensitivity. Groups without a label are left out (the reference's division gives
    NaN for them). ``penalty`` must lie in [0, 1]: above 1 the loss has no lower bound.
    """
    check_simse(penalty, over, "masked_simse: ")
    if preds.shape != labels.shape or preds.dim() != 2:
        raise ValueError(f"masked_simse: predictions {tuple(preds.shape)} and labels {tuple(labels.shape)} must be "
                         f"[samples, drugs] matrices of the same shape")
    mask = ~torch.isnan(labels)
    residual = torch.where(mask, preds - torch.nan_to_num(labels), torch.zeros_like(preds))
    axis = 0 if over == "drug" else 1  # reduce over cell lines (rows) for each drug, or over drugs per line
    counts = mask.sum(dim=axis)
    has_label = counts > 0
    if not has_label.any():
        return preds.sum() * 0.0  # keeps the graph; a batch without labels teaches nothing
    k = counts[has_label].to(preds.dtype)
    mse = residual.square().sum(dim=axis)[has_label] / k
    mean_residual = residual.sum(dim=axis)[has_label] / k
    return (mse - penalty * mean_residual.square()).mean()
