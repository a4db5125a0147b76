"""TUPE in fairseq: the archs, fairseq-train --task masked_lm end to end on a tiny binarized corpus, sentence
prediction heads, and the converter to hf_models.TupeForMaskedLM (outputs equal within 1e-5)."""

import argparse
from pathlib import Path

import pytest
import torch
from loopback import run_fairseq_ok as _run
from loopback import run_fairseq_train_on_two_ranks

from graftkit.errors import GraftkitError

TINY_MLM = ("--task masked_lm --criterion masked_lm --tokens-per-sample 64 --max-positions 64 "
            "--sample-break-mode complete --batch-size 16 --optimizer adam --lr 1e-3 --max-update 4 "
            "--no-epoch-checkpoints --log-format simple "
            "--cpu --seed 1").split()


def _train(data: Path, arch: str, save: Path, *extra: str) -> Path:
    _run("fairseq-train", str(data), "--arch", arch, *TINY_MLM, *extra, "--save-dir", str(save))
    return save / "checkpoint_last.pt"


@pytest.fixture(scope="module")
def tupe_r_checkpoint(english_mlm_bin) -> Path:
    return _train(english_mlm_bin, "tupe_r_tiny", english_mlm_bin.parent / "tupe_r")


def test_archs_set_the_sizes_and_the_mode():
    from fairseq.models import ARCH_MODEL_REGISTRY

    from plugins import tupe

    base = argparse.Namespace()
    tupe.tupe_base_architecture(base)
    assert (base.encoder_layers, base.encoder_embed_dim, base.encoder_ffn_embed_dim,
            base.encoder_attention_heads, base.tupe_position_mode) == (12, 768, 3072, 12, "absolute")
    assert not base.encoder_normalize_before and base.tupe_relative_buckets == 32
    relative = argparse.Namespace(tupe_relative_max_distance=64)
    tupe.tupe_r_tiny_architecture(relative)
    assert (relative.encoder_layers, relative.encoder_embed_dim, relative.tupe_position_mode,
            relative.tupe_relative_max_distance) == (2, 64, "relative", 64)
    assert {ARCH_MODEL_REGISTRY[a] for a in ("tupe_base", "tupe_r_base", "tupe_tiny", "tupe_r_tiny")} == {
        tupe.TupeRobertaModel}


def _fairseq_model(checkpoint: Path, data: Path):
    from fairseq import checkpoint_utils

    import plugins  # noqa: F401

    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)],
                                                                 arg_overrides={"data": str(data)})
    return models[0].eval()


def _assert_same_outputs(checkpoint: Path, data: Path, converted: Path) -> None:
    from hf_models import TupeForMaskedLM

    fairseq_model = _fairseq_model(checkpoint, data)
    hf_model = TupeForMaskedLM.from_pretrained(converted).eval()
    tokens = torch.randint(4, hf_model.config.vocab_size, (3, 25))
    tokens[:, 0], tokens[:, -1] = 0, 2  # <s> ... </s>
    tokens[1, 18:] = 1  # right padding, as fairseq pads
    keep = tokens != 1
    with torch.no_grad():
        expected = fairseq_model(tokens)[0]
        got = hf_model(tokens, attention_mask=keep.long()).logits
    torch.testing.assert_close(got[keep], expected[keep], atol=1e-5, rtol=0)
    assert expected[keep].std() > 0.1  # a trained, non-degenerate model


def test_fairseq_train_masked_lm_and_convert_tupe_r(tupe_r_checkpoint, english_mlm_bin, tmp_path):
    from plugins.tupe import convert_fairseq_tupe_to_hf

    state = torch.load(tupe_r_checkpoint, weights_only=False)
    assert state["cfg"]["model"].tupe_position_mode == "relative"
    assert "encoder.sentence_encoder.tupe.positional_bias.relative_bias.weight" in state["model"]
    out = convert_fairseq_tupe_to_hf(tupe_r_checkpoint, tmp_path / "hf")
    config = __import__("json").loads((out / "config.json").read_text())
    assert config["position_mode"] == "relative" and config["untie_cls"] is True and config["pad_token_id"] == 1
    _assert_same_outputs(tupe_r_checkpoint, english_mlm_bin, out)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hf.")]
    with pytest.raises(GraftkitError, match="exists and is not empty"):
        convert_fairseq_tupe_to_hf(tupe_r_checkpoint, out)


@pytest.mark.slow
def test_fairseq_train_tupe_a_without_untying_and_convert(english_mlm_bin, tmp_path):
    from plugins.tupe import convert_fairseq_tupe_to_hf

    checkpoint = _train(english_mlm_bin, "tupe_tiny", tmp_path / "ck", "--tupe-no-untie-cls",
                        "--encoder-normalize-before")
    out = convert_fairseq_tupe_to_hf(checkpoint, tmp_path / "hf")
    config = __import__("json").loads((out / "config.json").read_text())
    assert (config["position_mode"], config["untie_cls"], config["layer_norm_position"]) == (
        "absolute", False, "pre")
    _assert_same_outputs(checkpoint, english_mlm_bin, out)


def test_converted_folder_has_the_tokenizer_and_fills_masks(tupe_r_checkpoint, english_mlm_bin, tmp_path):
    """The folder of graftkit's own arch carries the fairseq dictionary's tokenizer (found through the
    checkpoint's data setting): AutoTokenizer and the fill-mask pipeline load it, with fairseq's predictions."""
    from fairseq.data import Dictionary
    from transformers import AutoTokenizer, pipeline

    import hf_models  # noqa: F401  (registers tupe with the Auto classes)
    from plugins.tupe import convert_fairseq_tupe_to_hf

    out = convert_fairseq_tupe_to_hf(tupe_r_checkpoint, tmp_path / "hf")
    dictionary = Dictionary.load(str(english_mlm_bin / "dict.txt"))
    mask_id = dictionary.add_symbol("<mask>")  # as fairseq's masked_lm task does
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert (tokenizer.mask_token_id, tokenizer.pad_token_id, len(tokenizer)) == (mask_id, 1, len(dictionary))
    words = (english_mlm_bin.parent / "train.txt").read_text().split()[:8]
    words[3] = "<mask>"
    masked = " ".join(words)
    ids = [dictionary.bos()] + dictionary.encode_line(masked, add_if_not_exist=False).tolist()
    assert tokenizer(masked)["input_ids"] == ids
    predictions = pipeline("fill-mask", model=str(out), top_k=5)(masked)
    with torch.no_grad():
        top = _fairseq_model(tupe_r_checkpoint, english_mlm_bin)(torch.tensor([ids]))[0][0, 4].softmax(-1).topk(5)
    assert [p["token"] for p in predictions] == top.indices.tolist()
    assert [p["score"] for p in predictions] == pytest.approx(top.values.tolist(), abs=1e-6)


def test_sentence_prediction_head_and_bad_settings(tupe_r_checkpoint, english_mlm_bin):
    model = _fairseq_model(tupe_r_checkpoint, english_mlm_bin)
    model.register_classification_head("sentence_classification_head", num_classes=3)
    tokens = torch.randint(4, 20, (2, 7))
    tokens[:, 0] = 0
    logits, _ = model(tokens, classification_head_name="sentence_classification_head")
    assert logits.shape == (2, 3)

    from plugins.tupe import tupe_config_from_args

    cfg = dict(vars(model.args))
    with pytest.raises(GraftkitError, match="activation-dropout"):
        tupe_config_from_args({**cfg, "activation_dropout": 0.1}, 30, 1)
    with pytest.raises(GraftkitError, match="relative_attention_num_buckets"):
        tupe_config_from_args({**cfg, "tupe_relative_buckets": 7}, 30, 1)


def test_converter_refuses_other_checkpoints(tmp_path):
    from plugins.tupe import convert_fairseq_tupe_to_hf

    torch.save({"model": {"encoder.sentence_encoder.embed_tokens.weight": torch.zeros(4, 2)},
                "args": argparse.Namespace(arch="roberta_base")}, tmp_path / "roberta.pt")
    with pytest.raises(GraftkitError, match="not a fairseq TUPE checkpoint"):
        convert_fairseq_tupe_to_hf(tmp_path / "roberta.pt", tmp_path / "out")
    with pytest.raises(GraftkitError, match="not found"):
        convert_fairseq_tupe_to_hf(tmp_path / "missing.pt", tmp_path / "out")


def test_cli_convert(tupe_r_checkpoint, tmp_path, capsys):
    from graftkit.cli import main

    assert main(["tupe", "convert", str(tupe_r_checkpoint), str(tmp_path / "hf")]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "hf" / "positional.py").is_file()
    assert main(["tupe", "convert", str(tmp_path / "missing.pt"), str(tmp_path / "x")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.distributed
def test_fairseq_distributed_training_with_two_cpu_processes(english_mlm_bin, tmp_path):
    """fairseq's own distributed training (2 processes, gloo, legacy_ddp) of TUPE-R: 3 updates, and both ranks
    end with identical weights."""
    logs = run_fairseq_train_on_two_ranks(tmp_path, str(english_mlm_bin), "--arch", "tupe_r_tiny", *TINY_MLM,
                                          "--max-update", "3", "--save-dir", str(tmp_path / "ddp"))
    assert "num_updates 3" in logs[0]
    state = torch.load(tmp_path / "ddp" / "checkpoint_last.pt", weights_only=False)
    assert state["cfg"]["distributed_training"]["distributed_world_size"] == 2
