"""BERT-fused NMT end to end through fairseq's own command lines, the translate API, and 2-process training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from loopback import run_fairseq_train_on_two_ranks

from graftkit.data.parallel import ToyLanguagePair

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DIMS = ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
        "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2",
        "--decoder-attention-heads", "2"]
TRAIN = ["--cpu", "--optimizer", "adam", "--lr", "1e-3", "--max-tokens", "400", "--no-progress-bar",
         "--no-epoch-checkpoints", "--disable-validation", "--num-workers", "0"]


def fairseq(tool: str, *argv: str, stdin: str | None = None) -> str:
    result = subprocess.run([str(BIN / tool), *argv], cwd=REPO, input=stdin, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"{tool} failed:\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """Preprocess, `graftkit bertnmt prepare`, then fairseq-train a transformer and a BERT-fused model from it."""
    from graftkit.cli import main
    from plugins.bert_fused.toy import binarize, save_tiny_bert, write_toy_pair

    root = tmp_path_factory.mktemp("bert_fused_cli")
    pair = ToyLanguagePair(0)
    bert = save_tiny_bert(root / "bert", pair.monolingual_source(200, seed=3), hidden=16, layers=1, heads=2)
    raw = write_toy_pair(root / "raw", pair, {"train": 48, "valid": 8, "test": 6})
    data = binarize(raw, root / "bin")  # fairseq-preprocess, in-process
    assert main(["bertnmt", "prepare", "--bert-model", str(bert), "--source-lang", "src", "--trainpref",
                 f"{raw}/train", "--validpref", f"{raw}/valid", "--testpref", f"{raw}/test", "--destdir",
                 str(data)]) == 0
    fairseq("fairseq-train", str(data), "--arch", "transformer", *DIMS, *TRAIN, "--max-epoch", "2",
            "--save-dir", str(root / "nmt"))
    fairseq("fairseq-train", str(data), "--user-dir", "plugins", "--task", "translation_bert_fused",
            "--bert-model", str(bert), "--arch", "bert_fused", *DIMS, *TRAIN, "--max-epoch", "2",
            "--warmup-from-nmt", str(root / "nmt" / "checkpoint_last.pt"), "--save-dir", str(root / "fused"))
    return {"root": root, "bert": bert, "raw": raw, "data": data, "ckpt": root / "fused" / "checkpoint_last.pt"}


@pytest.mark.slow
def test_fairseq_generate_and_interactive(trained):
    out = fairseq("fairseq-generate", str(trained["data"]), "--user-dir", "plugins", "--task",
                  "translation_bert_fused", "--bert-model", str(trained["bert"]), "--path", str(trained["ckpt"]),
                  "--beam", "5", "--batch-size", "4", "--max-len-b", "12", "--cpu")
    assert sum(line.startswith("H-") for line in out.splitlines()) == 6
    sources = (trained["raw"] / "test.src").read_text().splitlines()[:3]
    out = fairseq("fairseq-interactive", str(trained["data"]), "--user-dir", "plugins", "--task",
                  "translation_bert_fused", "--bert-model", str(trained["bert"]), "--path", str(trained["ckpt"]),
                  "--beam", "5", "--max-len-b", "12", "--cpu", stdin="\n".join(sources) + "\n")
    assert sum(line.startswith("H-") for line in out.splitlines()) == 3


@pytest.mark.slow
def test_translate_api_on_a_loaded_model(trained):
    from graftkit.commands.bertfused import load_plugins

    load_plugins()
    from plugins.bert_fused import BertFusedModel

    hub = BertFusedModel.from_pretrained(str(trained["ckpt"].parent), checkpoint_file=trained["ckpt"].name,
                                         data_name_or_path=str(trained["data"]), bert_model=str(trained["bert"]))
    sources = (trained["raw"] / "test.src").read_text().splitlines()[:2]
    translations = hub.translate(sources, beam=5, max_len_b=12)
    assert len(translations) == 2 and all(isinstance(t, str) and t for t in translations)
    assert hub.translate(sources[0], beam=5, max_len_b=12) == translations[0]


@pytest.mark.slow
@pytest.mark.distributed
def test_fairseq_distributed_training_with_two_cpu_processes(trained):
    """fairseq's own distributed training: 2 processes, gloo, legacy_ddp (its CPU-capable DDP); both ranks end
    with identical weights (the frozen BERT has no gradient; bert_attn weights do)."""
    root = trained["root"]
    logs = run_fairseq_train_on_two_ranks(
        root, str(trained["data"]), "--task", "translation_bert_fused", "--bert-model", str(trained["bert"]), "--arch",
        "bert_fused", *DIMS, *TRAIN, "--max-update", "3", "--save-dir", str(root / "ddp"), "--seed", "3")
    assert "num_updates 3" in logs[0]
    assert (root / "ddp" / "checkpoint_last.pt").is_file()
