"""fairseq (the ve-fairseq 0.12.3 fork) with torch >= 2.6: `--user-dir plugins` makes resume and generate work."""

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from loopback import run_fairseq

from graftkit.data.parallel import ToyLanguagePair, write_parallel_raw

TINY = ("--arch transformer --encoder-layers 1 --decoder-layers 1 --encoder-embed-dim 32 --decoder-embed-dim 32 "
        "--encoder-ffn-embed-dim 64 --decoder-ffn-embed-dim 64 --encoder-attention-heads 2 "
        "--decoder-attention-heads 2 --optimizer adam --lr 1e-3 --max-tokens 2000 --no-epoch-checkpoints "
        "--log-format simple --disable-validation --cpu --seed 1").split()


@pytest.fixture(scope="module")
def binarized(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fairseq")
    pairs = ToyLanguagePair().sample(240, seed=1)
    write_parallel_raw(root / "raw", {"train": pairs[:200], "valid": pairs[200:220], "test": pairs[220:]})
    raw = root / "raw"
    done = run_fairseq("fairseq-preprocess", "--source-lang", "src", "--target-lang", "tgt", "--trainpref",
                str(raw / "train"), "--validpref", str(raw / "valid"), "--testpref", str(raw / "test"),
                "--destdir", str(root / "bin"), "--workers", "1", user_dir=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "bin"


@pytest.mark.slow
def test_train_resume_and_generate(binarized, tmp_path):
    save = str(tmp_path / "ck")
    first = run_fairseq("fairseq-train", str(binarized), *TINY, "--max-epoch", "1", "--save-dir", save)
    assert first.returncode == 0, first.stderr[-2000:]
    resumed = run_fairseq("fairseq-train", str(binarized), *TINY, "--max-epoch", "2", "--save-dir", save)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    log = resumed.stdout + resumed.stderr
    assert "Loaded checkpoint" in log and "(epoch 2 @ 1 updates)" in log
    generated = run_fairseq("fairseq-generate", str(binarized), "--path", f"{save}/checkpoint_last.pt", "--cpu",
                     "--beam", "2", "--batch-size", "16")
    assert generated.returncode == 0, generated.stderr[-2000:]
    # all 20 test sentences: the fork alone drops the last batch when it is not a multiple of 8
    assert sum(line.startswith("H-") for line in generated.stdout.splitlines()) == 20


def test_batch_by_size_keeps_the_last_short_batch():
    import numpy as np
    from fairseq.data import data_utils

    import plugins  # noqa: F401  (installs the fix)

    batches = data_utils.batch_by_size(np.arange(20), lambda i: 5, max_sentences=8, required_batch_size_multiple=8)
    assert [len(b) for b in batches] == [8, 8, 4]
    assert sorted(np.concatenate(batches).tolist()) == list(range(20))


def test_eos_blocks_work_on_numpy_2():
    import torch
    from fairseq.data import TokenBlockDataset

    import plugins  # noqa: F401  (installs the fix)

    sentences = [torch.tensor([5, 6, 2]), torch.tensor([7, 2]), torch.tensor([8, 9, 10, 2])]
    blocks = TokenBlockDataset(sentences, [3, 2, 4], block_size=8, pad=1, eos=2, break_mode="eos")
    assert [blocks[i].tolist() for i in range(len(blocks))] == [[5, 6, 2], [7, 2], [8, 9, 10, 2]]


@pytest.mark.slow
def test_without_the_plugins_torch_refuses_fairseq_checkpoints(binarized, tmp_path):
    """Guards the reason for the plugins' allow-list: if torch or fairseq change, this tells us."""
    save = str(tmp_path / "ck")
    assert run_fairseq("fairseq-train", str(binarized), *TINY, "--max-epoch", "1", "--save-dir", save).returncode == 0
    generated = run_fairseq("fairseq-generate", str(binarized), "--path", f"{save}/checkpoint_last.pt", "--cpu",
                     user_dir=False)
    assert generated.returncode != 0 and "argparse.Namespace" in generated.stderr


@pytest.mark.parametrize("load", ["import plugins",
                                  "from graftkit.commands.bertfused import load_plugins; load_plugins()"])
def test_importing_the_plugins_leaves_the_users_logging_alone(load):
    code = f"import logging; {load}; print(logging.getLogger().level, len(logging.getLogger().handlers))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(logging.WARNING), "0"]  # the fork alone leaves DEBUG and a handler
