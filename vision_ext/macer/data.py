"""Image data for ``graftkit macer``: scikit-learn's bundled digits, or a user's ``.npz`` file.

- ``digits``: the 1797 real 8×8 handwritten digits (1 channel, values in [0, 1]), split once with a fixed
  seed into 1347 training and 450 test images, stratified by class.
- ``PATH.npz``: arrays ``images`` — (N, C, H, W) or (N, H, W), float in [0, 1] or uint8 in [0, 255]
  (divided by 255) — and ``labels`` (N,) integers in [0, num_classes). The whole file is one split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from graftkit.errors import GraftkitError

DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0


def digits_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``"train"`` or ``"test"`` part of scikit-learn's digits (fixed stratified split)."""
    from sklearn.model_selection import train_test_split

    from graftkit.data.images import digits

    if split not in ("train", "test"):
        raise GraftkitError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = digits()
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=DIGITS_TEST_FRACTION,
                                           random_state=DIGITS_SPLIT_SEED, stratify=labels.numpy())
    idx = torch.from_numpy(np.sort(train_idx if split == "train" else test_idx))
    return images[idx], labels[idx]


def load_npz(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, C, H, W) float32 in [0, 1] and labels (N,) int64 from an ``.npz`` file (format above)."""
    path = Path(path)
    if not path.is_file():
        raise GraftkitError(f"data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as err:
        raise GraftkitError(f"cannot read {path} as an .npz archive: {err}") from err
    missing = [key for key in ("images", "labels") if key not in arrays]
    if missing:
        raise GraftkitError(f"{path} lacks the array(s) {', '.join(missing)} "
                            f"(found: {', '.join(arrays) or 'none'})")
    images, labels = arrays["images"], arrays["labels"]
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise GraftkitError(f"{path}: images must be (N, C, H, W) or (N, H, W), got shape {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise GraftkitError(f"{path}: labels must be (N,) with N = {len(images)} images, "
                            f"got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise GraftkitError(f"{path}: labels must be integers, got {labels.dtype}")
    if len(labels) == 0:
        raise GraftkitError(f"{path}: no images")
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    elif np.issubdtype(images.dtype, np.floating):
        if not np.isfinite(images).all():
            raise GraftkitError(f"{path}: images contain NaN or infinite values")
        if images.min() < 0 or images.max() > 1:
            raise GraftkitError(f"{path}: float images must lie in [0, 1], "
                                f"got [{images.min()}, {images.max()}]")
    else:
        raise GraftkitError(f"{path}: images must be uint8 or float, got {images.dtype}")
    if labels.min() < 0:
        raise GraftkitError(f"{path}: labels must be >= 0, got {labels.min()}")
    images = np.ascontiguousarray(images, dtype=np.float32)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def load_images(data: str, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """``data`` = ``"digits"`` (``split`` picks train or test) or the path of an ``.npz`` file."""
    if data == "digits":
        return digits_split(split)
    if not str(data).endswith(".npz"):
        raise GraftkitError(f"--data must be 'digits' or a .npz file with 'images' and 'labels', "
                            f"got {data!r}")
    return load_npz(data)
