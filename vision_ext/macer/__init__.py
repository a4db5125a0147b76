"""MACER (Zhai et al., ICLR 2020) and randomized-smoothing certification (Cohen et al., ICML 2019).

- :class:`Smooth`: ``predict`` (binomial test, may abstain) and ``certify`` (Clopper–Pearson bound, radius).
- :func:`macer_loss`, :func:`gaussian_augmentation_loss`: the two training objectives on k noisy copies.
- :func:`train_smoothed`: one training loop for both (checkpoints, resume, DistributedDataParallel).
"""

from vision_ext.macer.configuration_macer import MacerConfig
from vision_ext.macer.modeling_macer import (
    LossTerms,
    gaussian_augmentation_loss,
    macer_loss,
    noisy_copies,
    smoothed_training_loss,
)
from vision_ext.macer.smoothing import (
    ABSTAIN,
    Smooth,
    average_certified_radius,
    certified_accuracy,
    certified_radius,
    clopper_pearson_lower,
    radius_grid,
)
from vision_ext.macer.training import TrainSettings, train_smoothed

__all__ = [
    "ABSTAIN",
    "LossTerms",
    "MacerConfig",
    "Smooth",
    "TrainSettings",
    "average_certified_radius",
    "certified_accuracy",
    "certified_radius",
    "clopper_pearson_lower",
    "gaussian_augmentation_loss",
    "macer_loss",
    "noisy_copies",
    "radius_grid",
    "smoothed_training_loss",
    "train_smoothed",
]
