"""Write a model's code next to its weights so the folder loads with ``trust_remote_code=True`` anywhere.

HF's remote-code loader wants a flat folder whose modules import each other with single-dot relative imports.
graftkit's model modules import the core as ``from ..core.<module> import ...`` (and the core imports TUPE's
positional term as ``from ..tupe.positional import ...``); the copies written here say ``from .<module> import
...`` instead. The core's modules and TUPE's ``positional.py`` (every model on the core can use TUPE's positions,
``position_embedding_type``) are copied beside the model's modules. Inside a loaded remote-code folder the
rewrite is a no-op, so a model loaded that way saves a working folder again.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path

CORE_MODULES = ("activations", "attention", "checks", "config", "embeddings", "encoder", "heads", "modeling",
                "remote_code")
#: modules of other graftkit packages the core asks for (TUPE's term: the core builds it from the config)
SHARED_MODULES = ("tupe.positional",)
_PACKAGE_IMPORT = re.compile(r"^(\s*)from \.\.\w+\.(\w+) import", flags=re.MULTILINE)


def remote_auto_map(classes: dict[str, type]) -> dict[str, str]:
    """``{"AutoModel": PreLNBertModel}`` -> ``{"AutoModel": "modeling_preln_bert.PreLNBertModel"}``."""
    return {auto: f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}" for auto, cls in classes.items()}


def write_remote_code(folder: str | os.PathLike, classes: list[type]) -> list[Path]:
    """Copy the modules defining ``classes``, the core modules and :data:`SHARED_MODULES` into ``folder``;
    return the files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sources = dict.fromkeys(Path(sys.modules[cls.__module__].__file__) for cls in classes)
    # inside hf_models the shared modules are the core's siblings' (..tupe.positional); in a loaded remote-code
    # folder they sit beside the core's (.positional)
    in_graftkit = __package__ == "hf_models.core"
    names = [f".{name}" for name in CORE_MODULES] + [
        f"..{name}" if in_graftkit else f".{name.rsplit('.', 1)[-1]}" for name in SHARED_MODULES]
    sources.update(dict.fromkeys(Path(importlib.import_module(name, __package__).__file__) for name in names))
    written = []
    for source in sources:
        target = folder / source.name
        target.write_text(_PACKAGE_IMPORT.sub(r"\1from .\2 import", source.read_text(encoding="utf-8")),
                          encoding="utf-8")
        written.append(target)
    return written
