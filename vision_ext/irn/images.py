"""Image files in and out with Pillow (no torchvision).

Conversions on reading (documented in the README, section IRN): grayscale (L), palette (P), CMYK and YCbCr images are
converted to RGB; an alpha channel (RGBA, LA, PA) is dropped (IRN models RGB only). 16-bit and float images
(modes I, I;16, F) are refused: convert them to 8-bit first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from graftkit.errors import GraftkitError
from vision_ext.irn.checks import check_values

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
_CONVERTIBLE_MODES = {"RGB", "RGBA", "RGBX", "L", "LA", "P", "PA", "CMYK", "YCbCr", "1"}
#: PNG text key where ``graftkit irn downscale`` stores the original HR size ("HxW").
SIZE_KEY = "irn:hr_size"


def load_image(path: str | Path) -> Tensor:
    """Read an image file as an RGB float tensor (3, H, W) in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise GraftkitError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode not in _CONVERTIBLE_MODES:
                raise GraftkitError(f"{path}: image mode {mode} (16-bit or float) is not supported; "
                                    "convert it to 8-bit RGB first")
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise GraftkitError(f"{path} is not a readable image file ({err})") from err
    array = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


def read_size_tag(path: str | Path) -> tuple[int, int] | None:
    """The original HR size stored by :func:`save_image` (``hr_size=``) in a PNG, or None."""
    from PIL import Image

    with Image.open(path) as img:
        tag = getattr(img, "text", {}).get(SIZE_KEY)
    if not tag:
        return None
    try:
        height, width = (int(v) for v in tag.split("x"))
    except ValueError as err:
        raise GraftkitError(f"{path}: malformed {SIZE_KEY} tag {tag!r}") from err
    return height, width


def to_uint8(image: Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] → (H, W, 3) uint8, rounded (values outside [0, 1] are clipped)."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise GraftkitError(f"expected an RGB image (3, H, W), got {tuple(image.shape)}")
    check_values(image, "the image to save")
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return array.permute(1, 2, 0).cpu().numpy()


def save_image(image: Tensor, path: str | Path, hr_size: tuple[int, int] | None = None) -> Path:
    """Write (3, H, W) in [0, 1] as an 8-bit RGB file (format from the suffix), atomically.

    ``hr_size`` is stored as a PNG text chunk so ``upscale`` can crop padding away (PNG only).
    """
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from graftkit.checkpoint import atomic_write

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise GraftkitError(f"unsupported output format {path.suffix!r}; use one of {', '.join(IMAGE_SUFFIXES)}")
    img = Image.fromarray(to_uint8(image), mode="RGB")
    fmt = Image.registered_extensions()[suffix]
    options: dict[str, object] = {}
    if hr_size is not None:
        if suffix != ".png":
            raise GraftkitError(f"the LR image must be a .png to keep the original size, got {path.name}")
        info = PngInfo()
        info.add_text(SIZE_KEY, f"{hr_size[0]}x{hr_size[1]}")
        options["pnginfo"] = info
    return atomic_write(path, lambda handle: img.save(handle, format=fmt, **options))


def list_images(folder: str | Path) -> list[Path]:
    """Image files (by suffix) directly in ``folder``, sorted; an error when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GraftkitError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise GraftkitError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files
