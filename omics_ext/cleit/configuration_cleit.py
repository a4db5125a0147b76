"""CLEIT hyperparameters, defaulting to the reference's ``train_params.json`` and the paper."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from graftkit.errors import GraftkitError, check_int, check_number

#: Activations of the regressor: the reference's final ``multi_out_mlp.py`` uses SELU (its early MoMLP ReLU).
REGRESSOR_ACTIVATIONS = ("selu", "relu")
#: What the scale-invariant term of the fine-tuning loss is taken over: each drug's residuals across cell
#: lines (the reference's final ``loss_and_metrics.py``, per the project's reference notes) or each cell
#: line's across drugs (its early commits, e.g. 32c4d68 and dff86bd, the ones we could read).
SIMSE_OVER = ("drug", "cell_line")


def check_simse(penalty: float, over: str, prefix: str) -> None:
    """The SIMSE penalty λ must lie in [0, 1]: the loss is Var(r) + (1 − λ)·mean(r)², which has no lower
    bound for λ > 1 (all predictions shifted far off lower it without limit); ``over`` one of SIMSE_OVER.
    Errors name ``{prefix}penalty`` / ``{prefix}over``."""
    check_number(f"{prefix}penalty", penalty)
    if penalty > 1.0:
        raise GraftkitError(f"{prefix}penalty must be in [0, 1] (above 1 the loss has no lower bound), "
                            f"got {penalty!r}")
    if over not in SIMSE_OVER:
        raise GraftkitError(f"{prefix}over must be one of {', '.join(SIMSE_OVER)}, got {over!r}")


@dataclass
class CLEITConfig:
    """Every knob of the three CLEIT stages; validated on construction.

    Defaults follow XieResearchGroup/CLEIT ``train_params.json`` and its final code: encoders
    input→512→256→128 (SELU, dropout 0.1), regressor shared 128→128 then per-drug towers 128→64→32→1 (SELU
    as the final ``multi_out_mlp.py``; ``regressor_activation="relu"`` gives its early MoMLP's ReLU;
    dropout 0.1), AdamW with lr 1e-4, batch 64 for the autoencoders and 32 for fine-tuning, up to 2000
    fine-tuning epochs with gradual unfreezing (patience 10 × number of resets, lr × 0.1 per unfrozen
    layer). Fine-tuning loss: the masked scale-invariant MSE per drug with penalty 0.1, the final
    ``loss_and_metrics.py`` as the project's reference notes give it (the commits of that file we could
    read take it per cell line with penalty 1: ``simse_over="cell_line"``, ``simse_penalty=1``, the early
    February-2021 form, which cannot see a line's overall sensitivity — what the per-drug Pearson ranks).
    """

    encoder_hidden_dims: tuple[int, ...] = (512, 256)
    latent_dim: int = 128
    regressor_shared_dim: int = 128
    regressor_tower_dims: tuple[int, ...] = (64, 32)
    regressor_activation: str = "selu"
    dropout: float = 0.1
    lr: float = 1e-4
    weight_decay: float = 0.01  # AdamW's default, as the reference uses it
    pretrain_batch_size: int = 64
    finetune_batch_size: int = 32
    expression_pretrain_epochs: int = 1000
    transmission_epochs: int = 1000
    finetune_epochs: int = 2000
    patience: int = 10
    decay_coefficient: float = 0.1
    temperature: float = 1.0
    contrastive_weight: float = 1.0
    simse_penalty: float = 0.1
    simse_over: str = "drug"
    validation_metric: str = "dpearsonr"
    validation_fraction: float = 0.2

    def __post_init__(self) -> None:
        self.encoder_hidden_dims = tuple(int(d) for d in self.encoder_hidden_dims)
        self.regressor_tower_dims = tuple(int(d) for d in self.regressor_tower_dims)
        for name in ("latent_dim", "regressor_shared_dim", "pretrain_batch_size", "finetune_batch_size", "patience"):
            check_int(f"CLEITConfig.{name}", getattr(self, name))
        for name in ("expression_pretrain_epochs", "transmission_epochs", "finetune_epochs"):
            check_int(f"CLEITConfig.{name}", getattr(self, name), minimum=0)
        if not self.encoder_hidden_dims or min(self.encoder_hidden_dims) < 1:
            raise GraftkitError(f"CLEITConfig.encoder_hidden_dims must be positive sizes, got "
                                f"{self.encoder_hidden_dims!r}")
        if not self.regressor_tower_dims or min(self.regressor_tower_dims) < 1:
            raise GraftkitError(f"CLEITConfig.regressor_tower_dims must be positive sizes, got "
                                f"{self.regressor_tower_dims!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise GraftkitError(f"CLEITConfig.dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("lr", "temperature"):
            check_number(f"CLEITConfig.{name}", getattr(self, name), strict=True)
        for name in ("weight_decay", "contrastive_weight"):
            check_number(f"CLEITConfig.{name}", getattr(self, name))
        check_simse(self.simse_penalty, self.simse_over, "CLEITConfig.simse_")
        if self.regressor_activation not in REGRESSOR_ACTIVATIONS:
            raise GraftkitError(f"CLEITConfig.regressor_activation must be one of {', '.join(REGRESSOR_ACTIVATIONS)}, "
                                f"got {self.regressor_activation!r}")
        if not 0.0 < self.decay_coefficient <= 1.0:
            raise GraftkitError(f"CLEITConfig.decay_coefficient must be in (0, 1], got {self.decay_coefficient!r}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise GraftkitError(f"CLEITConfig.validation_fraction must be in (0, 1), got "
                                f"{self.validation_fraction!r}")
        if self.validation_metric not in ("dpearsonr", "cpearsonr", "loss"):
            raise GraftkitError(f"CLEITConfig.validation_metric must be dpearsonr, cpearsonr or loss, got "
                                f"{self.validation_metric!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
