"""Pre-LN in fairseq: the named archs, the paper's schedule as fairseq-train flags, and the converter from a
fairseq RoBERTa checkpoint to hf_models.PreLNBertForMaskedLM (outputs equal within 1e-5)."""

import argparse
import subprocess
from pathlib import Path

import pytest
import torch
from loopback import run_fairseq

from graftkit.data.parallel import ToyLanguagePair, write_parallel_raw
from graftkit.data.text import english_sentences, words
from graftkit.errors import GraftkitError

TINY_ROBERTA = ("--task masked_lm --criterion masked_lm --encoder-layers 2 --encoder-embed-dim 32 "
                "--encoder-ffn-embed-dim 64 --encoder-attention-heads 4 --max-positions 64 --tokens-per-sample 64 "
                "--sample-break-mode complete --batch-size 16 --optimizer adam --lr 1e-3 --max-update 4 "
                "--no-epoch-checkpoints --log-format simple --cpu --seed 1").split()


def _run(tool: str, *args: str, user_dir: bool = True) -> subprocess.CompletedProcess:
    done = run_fairseq(tool, *args, user_dir=user_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _roberta_checkpoint(root: Path, arch: str) -> tuple[Path, Path]:
    """fairseq-train a 2-layer RoBERTa on real English for 4 updates; returns (checkpoint, data-bin)."""
    sentences = [" ".join(words(s)) for s in english_sentences()[:240]]
    (root / "train.txt").write_text("\n".join(sentences[:200]) + "\n")
    (root / "valid.txt").write_text("\n".join(sentences[200:]) + "\n")
    data = root / "bin"
    if not data.exists():
        _run("fairseq-preprocess", "--only-source", "--trainpref", str(root / "train.txt"), "--validpref",
             str(root / "valid.txt"), "--destdir", str(data), "--workers", "1", user_dir=False)
    save = root / arch
    _run("fairseq-train", str(data), "--arch", arch, *TINY_ROBERTA, "--save-dir", str(save))
    return save / "checkpoint_last.pt", data


@pytest.fixture(scope="module")
def preln_roberta(tmp_path_factory) -> tuple[Path, Path]:
    return _roberta_checkpoint(tmp_path_factory.mktemp("roberta"), "roberta_preln_base")


def test_archs_force_pre_ln_with_the_paper_sizes():
    from plugins import preln

    iwslt = argparse.Namespace()
    preln.transformer_preln_iwslt_de_en(iwslt)
    assert iwslt.encoder_normalize_before and iwslt.decoder_normalize_before
    assert (iwslt.encoder_layers, iwslt.decoder_layers, iwslt.encoder_embed_dim, iwslt.encoder_ffn_embed_dim,
            iwslt.encoder_attention_heads) == (6, 6, 512, 1024, 4)
    wmt = argparse.Namespace(encoder_normalize_before=False)  # even an explicit False is overridden
    preln.transformer_preln_wmt_en_de(wmt)
    assert wmt.encoder_normalize_before and wmt.decoder_normalize_before
    assert (wmt.encoder_layers, wmt.encoder_embed_dim, wmt.encoder_ffn_embed_dim, wmt.encoder_attention_heads) \
        == (6, 512, 2048, 8)
    bert = argparse.Namespace()
    preln.roberta_preln_base(bert)
    assert bert.encoder_normalize_before and bert.layernorm_embedding
    assert (bert.encoder_layers, bert.encoder_embed_dim, bert.encoder_ffn_embed_dim) == (12, 768, 3072)

    from fairseq.models import ARCH_MODEL_REGISTRY

    assert {a: ARCH_MODEL_REGISTRY[a] for a in preln.PAPER_SCHEDULES} == {
        "transformer_preln_iwslt_de_en": ARCH_MODEL_REGISTRY["transformer"],
        "transformer_preln_wmt_en_de": ARCH_MODEL_REGISTRY["transformer"],
        "roberta_preln_base": ARCH_MODEL_REGISTRY["roberta"]}


def test_paper_schedule_is_one_step_without_warmup():
    from plugins.preln import PAPER_SCHEDULES, PaperSchedule

    iwslt = PAPER_SCHEDULES["transformer_preln_iwslt_de_en"]
    assert iwslt.lr_per_epoch() == pytest.approx([5e-4] * 7 + [5e-5])
    flags = iwslt.fairseq_flags()
    assert flags[flags.index("--lr-scheduler") + 1] == "fixed"
    assert flags[flags.index("--warmup-updates") + 1] == "0"
    assert flags[flags.index("--lr") + 1] == ",".join(["0.0005"] * 7 + ["5e-05"])
    with pytest.raises(ValueError, match="decay_epoch"):
        PaperSchedule(lr=1e-3, decay_epoch=1)
    with pytest.raises(ValueError, match="shrink"):
        PaperSchedule(lr=1e-3, decay_epoch=3, shrink=2.0)


def test_fairseq_train_runs_the_preln_arch_with_the_paper_schedule(tmp_path):
    from plugins.preln import PaperSchedule

    pairs = ToyLanguagePair().sample(220, seed=1)
    write_parallel_raw(tmp_path / "raw", {"train": pairs[:200], "valid": pairs[200:]})
    _run("fairseq-preprocess", "--source-lang", "src", "--target-lang", "tgt", "--trainpref",
         str(tmp_path / "raw/train"), "--validpref", str(tmp_path / "raw/valid"), "--destdir",
         str(tmp_path / "bin"), "--workers", "1", user_dir=False)
    schedule = PaperSchedule(lr=5e-4, decay_epoch=2)  # the IWSLT rule, decayed at epoch 2 to see it happen
    done = _run("fairseq-train", str(tmp_path / "bin"), "--arch", "transformer_preln_iwslt_de_en",
                *"--encoder-layers 1 --decoder-layers 1 --encoder-embed-dim 32 --decoder-embed-dim 32 "
                 "--encoder-ffn-embed-dim 64 --decoder-ffn-embed-dim 64 --encoder-attention-heads 2 "
                 "--decoder-attention-heads 2 --max-tokens 2000 --max-epoch 2 --no-epoch-checkpoints "
                 "--criterion label_smoothed_cross_entropy --label-smoothing 0.1 --log-format simple "
                 "--cpu --seed 1".split(), *schedule.fairseq_flags(), "--save-dir", str(tmp_path / "ck"))
    train_lines = [line for line in (done.stdout + done.stderr).splitlines() if "| train | epoch" in line]
    assert [line.split("| lr ")[1].split(" |")[0] for line in train_lines] == ["0.0005", "5e-05"]
    state = torch.load(tmp_path / "ck/checkpoint_last.pt", weights_only=False)
    model_cfg = state["cfg"]["model"]
    assert model_cfg.encoder_normalize_before and model_cfg.decoder_normalize_before
    assert model_cfg.encoder_embed_dim == 32  # user flags still override the arch's sizes
    # the final LayerNorms after the last encoder and decoder layers exist only with Pre-LN
    assert {"encoder.layer_norm.weight", "decoder.layer_norm.weight"} <= set(state["model"])


def _fairseq_model(checkpoint: Path, data: Path):
    from fairseq import checkpoint_utils

    import plugins  # noqa: F401  (allows fairseq's checkpoint under torch >= 2.6)

    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)],
                                                                 arg_overrides={"data": str(data)})
    return models[0].eval()


def _assert_same_outputs(checkpoint: Path, data: Path, converted: Path) -> None:
    from hf_models import PreLNBertForMaskedLM

    fairseq_model = _fairseq_model(checkpoint, data)
    hf_model = PreLNBertForMaskedLM.from_pretrained(converted).eval()
    vocab = hf_model.config.vocab_size
    tokens = torch.randint(4, vocab, (3, 25))
    tokens[:, 0], tokens[:, -1] = 0, 2  # <s> ... </s>
    tokens[1, 18:] = 1  # right padding, as fairseq pads
    keep = tokens != 1
    with torch.no_grad():
        expected = fairseq_model(tokens)[0]
        got = hf_model(tokens, attention_mask=keep.long()).logits
        expected_features = fairseq_model(tokens, features_only=True)[0]
        got_features = hf_model.bert(tokens, attention_mask=keep.long()).last_hidden_state
    assert torch.allclose(got[keep], expected[keep], atol=1e-5, rtol=0)
    assert torch.allclose(got_features[keep], expected_features[keep], atol=1e-5, rtol=0)
    assert expected[keep].std() > 0.1  # a trained, non-degenerate model


def test_converted_preln_roberta_gives_the_same_outputs(preln_roberta, tmp_path):
    from plugins.convert_preln import convert_fairseq_roberta_to_preln_bert

    checkpoint, data = preln_roberta
    out = convert_fairseq_roberta_to_preln_bert(checkpoint, tmp_path / "hf")
    config = __import__("json").loads((out / "config.json").read_text())
    assert config["layer_norm_position"] == "pre" and config["embedding_layer_norm"] is True
    assert (out / "model.safetensors").is_file()
    _assert_same_outputs(checkpoint, data, out)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hf.")]  # no temporary folder left


def test_converted_folder_tokenizes_as_fairseq_and_fills_masks(preln_roberta, tmp_path):
    from fairseq.data import Dictionary
    from transformers import AutoTokenizer, pipeline

    import hf_models  # noqa: F401  (registers preln_bert with the Auto classes)
    from plugins.convert_preln import convert_fairseq_roberta_to_preln_bert

    checkpoint, data = preln_roberta
    out = convert_fairseq_roberta_to_preln_bert(checkpoint, tmp_path / "hf")  # dict.txt found via the checkpoint
    tokenizer = AutoTokenizer.from_pretrained(out)
    dictionary = Dictionary.load(str(data / "dict.txt"))
    mask_id = dictionary.add_symbol("<mask>")  # as fairseq's masked_lm task does

    def fairseq_ids(line: str) -> list[int]:  # what fairseq-preprocess + masked_lm feed the model
        return [dictionary.bos()] + dictionary.encode_line(line, add_if_not_exist=False).tolist()

    sentence = (data.parent / "train.txt").read_text().splitlines()[0]  # every word in the dictionary
    assert tokenizer(sentence + " zxqvw")["input_ids"] == fairseq_ids(sentence + " zxqvw")
    assert fairseq_ids("zxqvw")[1] == dictionary.unk()
    assert (tokenizer.mask_token_id, tokenizer.pad_token_id, len(tokenizer)) == (mask_id, dictionary.pad(),
                                                                                len(dictionary))
    words = sentence.split()[:8]
    words[3] = "<mask>"
    masked = " ".join(words)
    predictions = pipeline("fill-mask", model=str(out), top_k=5)(masked)
    fairseq_model = _fairseq_model(checkpoint, data)
    with torch.no_grad():
        probs = fairseq_model(torch.tensor([fairseq_ids(masked)]))[0][0, 4].softmax(-1)
    top = probs.topk(5)
    assert [p["token"] for p in predictions] == top.indices.tolist()
    assert [p["score"] for p in predictions] == pytest.approx(top.values.tolist(), abs=1e-6)
    assert predictions[0]["sequence"] == masked.replace("<mask>", dictionary[top.indices[0]])


def test_tokenizer_from_a_fairseq_dictionary_and_its_errors(tmp_path):
    from plugins.convert_preln import _dictionary_of, fairseq_dictionary_tokenizer

    (tmp_path / "dict.txt").write_text("the 9\ncat 4\nsat 2 #fairseq:overwrite\nmadeupword0000 0\n")
    tokenizer = fairseq_dictionary_tokenizer(tmp_path / "dict.txt", vocab_size=9, model_max_length=32)
    # <s> 0, <pad> 1, </s> 2, <unk> 3, the file's symbols from 4, <mask> last; whitespace split as fairseq
    assert tokenizer("the  cat\tdog sat")["input_ids"] == [0, 4, 5, 3, 6, 2]
    assert tokenizer("the", "cat")["input_ids"] == [0, 4, 2, 2, 5, 2]  # RoBERTa's pair template
    assert tokenizer("the <mask>")["input_ids"] == [0, 4, 8, 2]
    assert tokenizer.model_max_length == 32 and "token_type_ids" not in tokenizer("the")
    with pytest.raises(GraftkitError, match="gives 9 ids .* the model has 10 token embeddings"):
        fairseq_dictionary_tokenizer(tmp_path / "dict.txt", vocab_size=10, model_max_length=32)
    (tmp_path / "gpt2.txt").write_text("13 850314647\n262 800385005\n")
    with pytest.raises(GraftkitError, match="GPT-2 BPE ids .* --no-tokenizer"):
        fairseq_dictionary_tokenizer(tmp_path / "gpt2.txt", vocab_size=7, model_max_length=32)
    (tmp_path / "bad.txt").write_text("the\n")
    with pytest.raises(GraftkitError, match="bad.txt:1 is not a fairseq dictionary line"):
        fairseq_dictionary_tokenizer(tmp_path / "bad.txt", vocab_size=6, model_max_length=32)
    with pytest.raises(GraftkitError, match="cannot read fairseq dictionary"):
        fairseq_dictionary_tokenizer(tmp_path / "missing.txt", vocab_size=6, model_max_length=32)
    (tmp_path / "ckpt").mkdir()
    with pytest.raises(GraftkitError, match="no fairseq dictionary found .* --dict DICT.*--no-tokenizer"):
        _dictionary_of(tmp_path / "ckpt" / "checkpoint.pt", {"data": str(tmp_path / "gone")})
    assert _dictionary_of(tmp_path / "ckpt" / "checkpoint.pt", {"data": str(tmp_path)}) == tmp_path / "dict.txt"


def test_cli_convert_tokenizer_options(preln_roberta, tmp_path, capsys):
    from graftkit.cli import main

    checkpoint, data = preln_roberta
    assert main(["preln", "convert", str(checkpoint), str(tmp_path / "bare"), "--no-tokenizer"]) == 0
    assert not (tmp_path / "bare" / "tokenizer.json").exists() and (tmp_path / "bare" / "config.json").exists()
    assert main(["preln", "convert", str(checkpoint), str(tmp_path / "hf"), "--dict", str(data / "dict.txt")]) == 0
    assert "AutoTokenizer" in capsys.readouterr().out and (tmp_path / "hf" / "tokenizer.json").is_file()
    (tmp_path / "short.txt").write_text("the 3\n")
    assert main(["preln", "convert", str(checkpoint), str(tmp_path / "x"), "--dict", str(tmp_path / "short.txt")]) == 2
    assert "not the dictionary this model was trained with" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing written


@pytest.mark.slow
def test_converted_post_ln_roberta_gives_the_same_outputs(preln_roberta, tmp_path):
    from plugins.convert_preln import convert_fairseq_roberta_to_preln_bert

    _, data = preln_roberta
    checkpoint, _ = _roberta_checkpoint(data.parent, "roberta")  # fairseq's Post-LN RoBERTa
    out = convert_fairseq_roberta_to_preln_bert(checkpoint, tmp_path / "hf")
    assert '"layer_norm_position": "post"' in (out / "config.json").read_text()
    _assert_same_outputs(checkpoint, data, out)


def test_cli_convert_and_its_errors(preln_roberta, tmp_path, capsys):
    from graftkit.cli import main

    checkpoint, _ = preln_roberta
    assert main(["preln", "convert", str(checkpoint), str(tmp_path / "hf")]) == 0
    assert "wrote" in capsys.readouterr().out
    # refuses to overwrite, names the problem, exit 2
    assert main(["preln", "convert", str(checkpoint), str(tmp_path / "hf")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["preln", "convert", str(tmp_path / "missing.pt"), str(tmp_path / "x")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["preln", "convert", str(tmp_path / "junk.pt"), str(tmp_path / "y")]) == 2
    assert capsys.readouterr().err == (f"graftkit: error: cannot read {tmp_path / 'junk.pt'}: not a fairseq "
                                       "checkpoint (not a file written by torch.save)\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    assert main(["preln", "convert", str(tmp_path / "empty.pt"), str(tmp_path / "y")]) == 2
    assert capsys.readouterr().err == (f"graftkit: error: cannot read {tmp_path / 'empty.pt'}: not a fairseq "
                                       "checkpoint (the file is empty)\n")
    assert not (tmp_path / "y").exists()


def test_converter_rejects_what_prelnbert_cannot_represent(preln_roberta, tmp_path):
    from plugins.convert_preln import _load, preln_config_from_fairseq

    weights, cfg = _load(preln_roberta[0])
    for key, value in (("no_scale_embedding", False), ("encoder_learned_pos", False)):
        with pytest.raises(GraftkitError, match=key):
            preln_config_from_fairseq(weights, {**cfg, key: value})
    with pytest.raises(GraftkitError, match="activation_fn"):
        preln_config_from_fairseq(weights, {**cfg, "activation_fn": "relu_squared"})
    translation = {k.replace("sentence_encoder.", ""): v for k, v in weights.items()}
    with pytest.raises(GraftkitError, match="not a fairseq RoBERTa checkpoint"):
        preln_config_from_fairseq(translation, cfg)
