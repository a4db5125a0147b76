"""Atomic file writes, so an interrupted run never leaves a truncated checkpoint or report behind; checks that an
output can be written before the long work that produces it; safe checkpoint loading with a clear message."""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from graftkit.errors import GraftkitError


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path`` and rename it over ``path`` when done.

    The rename is atomic on POSIX file systems: readers see the old file or the new one, never half of it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a report or checkpoint is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save`` a state dict atomically."""
    return atomic_write(path, lambda handle: torch.save(state, handle))


def check_writable(path: str | os.PathLike, *, folder: bool = False, what: str = "output") -> Path:
    """Fail now, before the work that produces it, if ``path`` could not be written later by :func:`atomic_write`.

    ``path`` is a file to (over)write, or with ``folder`` a folder to create or write into. Nothing lasting is
    created: the nearest existing folder on the way gets a probe file that is removed at once.
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise GraftkitError(f"{what} {path} is an existing file, not a folder")
    if not folder and path.is_dir():
        raise GraftkitError(f"{what} {path} is a folder, not a file")
    existing = path if folder else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise GraftkitError(f"cannot write {what} {path}: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".graftkit-probe.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise GraftkitError(f"cannot write {what} {path}: {err.strerror or err} in {existing}") from None
    return path


def _why_unreadable(path: Path, err: Exception) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in words; never torch's advice to retry with
    ``weights_only=False``, which would run whatever code the file holds."""
    if path.stat().st_size == 0:
        return "the file is empty"
    message = str(err)
    foreign = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    if foreign:
        return (f"it holds a Python object of type {foreign.group(1)}; only tensors and plain values are "
                "loaded, since loading other objects could run code from the file")
    if isinstance(err, (pickle.UnpicklingError, EOFError)) or "PytorchStreamReader" in message \
            or "weights_only" in message:
        with path.open("rb") as handle:
            is_zip = handle.read(4) == b"PK\x03\x04"  # torch.save writes a zip archive
        return "a damaged or truncated torch.save archive" if is_zip else "not a file written by torch.save"
    return f"{type(err).__name__}: {message.splitlines()[0] if message else 'unreadable'}"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
                    kind: str = "graftkit checkpoint", allowed_classes: Iterable[type] = ()) -> Any:
    """Load a file written by ``torch.save`` (tensors and plain Python values, plus ``allowed_classes``).

    A missing, empty, damaged or foreign file is a GraftkitError saying that ``path`` is not a ``kind``.
    """
    path = Path(path)
    if not path.is_file():
        raise GraftkitError(f"{kind} not found: {path}")
    # only the classes not allowed yet: leaving the context removes them again, and must not remove one that
    # was allowed process-wide before (fairseq_compat allows argparse.Namespace for fairseq's own loading)
    extra = [cls for cls in allowed_classes if cls not in torch.serialization.get_safe_globals()]
    try:
        with torch.serialization.safe_globals(extra), warnings.catch_warnings():
            # a plain pickle makes torch warn about its protocol before failing: one error line is enough
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for a corrupt or foreign file
        raise unreadable_checkpoint(path, err, kind) from None


def unreadable_checkpoint(path: str | os.PathLike, err: Exception, kind: str) -> GraftkitError:
    """The error for a file that ``torch.load`` could not read: raise it ``from None``, so that torch's message,
    with its advice to load with ``weights_only=False``, never reaches the user."""
    path = Path(path)
    return GraftkitError(f"cannot read {path}: not a {kind} ({_why_unreadable(path, err)})")
