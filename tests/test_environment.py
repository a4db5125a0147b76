"""The environment rules of the foundation issue: pinned torch, no torchvision/torchaudio, import costs."""

import importlib.util
import json
import subprocess
import sys

import pytest
import torch


def test_torch_is_the_pinned_cpu_build():
    assert torch.__version__.startswith("2.13.0")


@pytest.mark.parametrize("name", ["torchvision", "torchaudio"])
def test_no_torchvision_or_torchaudio(name):
    # transformers 5 imports them when present, and the builds that fit torch 2.13 fail to import.
    assert importlib.util.find_spec(name) is None, f"{name} must not be installed (see README)"


def _modules_after_import(module: str) -> set[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {m.split(".")[0] for m in json.loads(out)}


@pytest.mark.parametrize("module", ["graph_ext", "vision_ext", "omics_ext", "graftkit", "graftkit.cli"])
def test_light_packages_do_not_import_fairseq_or_transformers(module):
    assert not _modules_after_import(module) & {"fairseq", "transformers"}


def test_the_command_line_parser_does_not_import_torch():
    code = ("import json, sys; from graftkit.cli import build_parser; build_parser(); "
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "torch" not in json.loads(out)  # `graftkit --help` and argument errors answer at once


def test_hf_models_does_not_import_fairseq():
    assert "fairseq" not in _modules_after_import("hf_models")


def test_every_package_imports():
    subprocess.run([sys.executable, "-c", "import graph_ext, vision_ext, omics_ext, hf_models, plugins, graftkit"],
                   check=True)
