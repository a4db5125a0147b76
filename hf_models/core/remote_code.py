"""Write a model's code next to its weights so the folder loads with ``trust_remote_code=True`` anywhere.

HF's remote-code loader wants a flat folder whose modules import each other with single-dot relative imports.
graftkit's model modules import the core as ``from ..core.<module> import ...``; the copies written here say
``from .<module> import ...`` instead, and the core's modules (which import each other, torch and transformers) are
copied beside them unchanged. Inside a loaded remote-code folder the rewrite is a no-op, so a model loaded
that way saves a working folder again.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path

CORE_MODULES = ("activations", "attention", "checks", "config", "embeddings", "encoder", "heads", "modeling",
                "remote_code")
_CORE_IMPORT = re.compile(r"^(\s*)from \.\.core\.(\w+) import", flags=re.MULTILINE)


def remote_auto_map(classes: dict[str, type]) -> dict[str, str]:
    """``{"AutoModel": PreLNBertModel}`` -> ``{"AutoModel": "modeling_preln_bert.PreLNBertModel"}``."""
    return {auto: f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}" for auto, cls in classes.items()}


def write_remote_code(folder: str | os.PathLike, classes: list[type]) -> list[Path]:
    """Copy the modules defining ``classes`` and the core modules into ``folder``; return the files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sources = dict.fromkeys(Path(sys.modules[cls.__module__].__file__) for cls in classes)
    sources.update(dict.fromkeys(Path(importlib.import_module(f".{name}", __package__).__file__)
                                 for name in CORE_MODULES))
    written = []
    for source in sources:
        target = folder / source.name
        target.write_text(_CORE_IMPORT.sub(r"\1from .\2 import", source.read_text(encoding="utf-8")),
                          encoding="utf-8")
        written.append(target)
    return written
