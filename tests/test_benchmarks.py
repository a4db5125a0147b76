"""Every benchmark still runs end to end (tiny sizes): the scripts are not imported by anything else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

# script → (tiny arguments, a string its report must contain)
RUNS = {
    "bench_bertfused.py": (["--sizes", "toy", "--rounds", "1", "--sentences", "8", "--batch-size", "8"],
                           "goal >= 0.7x"),
    "bench_cleit.py": ([], "time ratio CLEIT / RidgeCV"),
    "bench_graphnorm.py": (["--repeats", "1"], "speed-up = PyG / graph_ext"),
    "bench_irn.py": (["--size", "32", "--reference-size", "32", "--repeats", "1"], "goal: IRN within 1.2x"),
    "bench_macer.py": (["--repeats", "1"], "ResNet-20"),
    "bench_mcbert.py": (["--hidden", "24", "--layers", "1", "--heads", "6", "--divider", "3", "--vocab", "50",
                         "--batch", "2", "--seq-len", "16", "--rounds", "1", "--steps", "1"], "MC-BERT / RTD"),
    "bench_pretraining.py": (["--hidden", "24", "--layers", "1", "--heads", "6", "--vocab", "50", "--batch", "2",
                               "--seq-len", "16", "--rounds", "1", "--steps", "1", "--rare-words", "50"],
                              "product of its parts"),
    "bench_preln.py": (["--hidden", "32", "--layers", "1", "--heads", "2", "--batch", "2", "--seq-len", "16",
                        "--rounds", "1", "--steps", "1"], "RobertaPreLayerNormModel (HF)"),
    "bench_tupe.py": (["--hidden", "32", "--layers", "1", "--heads", "2", "--batch", "2", "--seq-lens", "16,32",
                       "--rounds", "1", "--steps", "1"], "TupeModel R (graftkit)"),
    "bench_tnf.py": (["--hidden", "32", "--layers", "1", "--heads", "2", "--batch", "2", "--seq-len", "16",
                      "--rounds", "1", "--steps", "1", "--rare-words", "50"], "time ratio TNF / BERT"),
    "bench_td.py": (["--n", "500", "--dim", "16", "--tasks", "1", "--repeats", "1"], "speed-up (best vs best)"),
}


def test_every_benchmark_is_covered():
    assert sorted(p.name for p in BENCHMARKS.glob("bench_*.py")) == sorted(RUNS)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(RUNS))
def test_benchmark_runs(script):
    args, expected = RUNS[script]
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                          cwd=BENCHMARKS.parent, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert expected in done.stdout
