"""Real images that ship with installed packages: scikit-learn's digits and sample images, scikit-image's
photos. Nothing is downloaded."""

from __future__ import annotations

import numpy as np
import torch

from graftkit.errors import GraftkitError

#: scikit-image photos bundled in its wheel (RGB, uint8), usable offline.
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 handwritten digits: images (N, 1, 8, 8) float32 in [0, 1] and labels (N,) int64."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return images, torch.tensor(data.target, dtype=torch.int64)


def photo(name: str) -> np.ndarray:
    """One real RGB photo (H, W, 3) uint8: a scikit-image photo name, or ``china``/``flower`` (scikit-learn)."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    if name not in SKIMAGE_PHOTOS:
        raise GraftkitError(f"unknown photo {name!r}; choose from china, flower, {', '.join(SKIMAGE_PHOTOS)}")
    import skimage.data

    return getattr(skimage.data, name)()
