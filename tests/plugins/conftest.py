"""Fixtures shared by the fairseq plugin tests."""

from pathlib import Path

import pytest
from loopback import run_fairseq_ok

from graftkit.data.text import english_sentences, words


@pytest.fixture(scope="session")
def english_mlm_bin(tmp_path_factory) -> Path:
    """A tiny word-level masked-LM corpus binarized by fairseq-preprocess (200 train, 40 valid sentences of the
    bundled English text); tests write their checkpoints beside it, under names of their own."""
    root = tmp_path_factory.mktemp("english_mlm")
    sentences = [" ".join(words(s)) for s in english_sentences()[:240]]
    (root / "train.txt").write_text("\n".join(sentences[:200]) + "\n")
    (root / "valid.txt").write_text("\n".join(sentences[200:]) + "\n")
    run_fairseq_ok("fairseq-preprocess", "--only-source", "--trainpref", str(root / "train.txt"), "--validpref",
                   str(root / "valid.txt"), "--destdir", str(root / "bin"), "--workers", "1", user_dir=False)
    return root / "bin"
