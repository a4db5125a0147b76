"""graftkit's own fairseq compositions -> HF (issue 25): `--task mc_bert` with any objective, position encoding
and LayerNorm placement -> McBert; `--task masked_lm_tnf` on RoBERTa (Post-/Pre-LN) or the TUPE encoder ->
TnfForMaskedLM with its notes.

Each checkpoint is the plugin's own model, built by the task from the command-line flags (as fairseq-train
builds it), in float64 with every weight moved off its initial value; the converted model's outputs equal the
fairseq model's to 1e-12 where fairseq runs graftkit's modules (MC-BERT; TNF's TUPE encoder and its notes), and
to 1e-5 where it runs its own RoBERTa modules (TNF's RoBERTa encoder, the LM head of both), which compute GELU
and the attention softmax in float32 whatever the weights' dtype (``fairseq.modules.gelu``,
``fairseq.utils.softmax``). For TNF a training step's note mix and note update are compared too. The slow
tests train with fairseq-train and convert with the CLI.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from loopback import run_fairseq_ok

from graftkit.errors import GraftkitError

MC_BERT = ("--task mc_bert --criterion mc_bert --arch mc_bert_small --encoder-layers 2 --encoder-embed-dim 32 "
           "--encoder-ffn-embed-dim 64 --encoder-attention-heads 4 --tokens-per-sample 32 --num-candidates 4").split()
TUPE_FLAGS = "--tupe-relative-buckets 8 --tupe-relative-max-distance 16".split()  # refused with absolute positions
TNF = ("--task masked_lm_tnf --criterion masked_lm --encoder-layers 2 --encoder-embed-dim 32 "
       "--encoder-ffn-embed-dim 64 --encoder-attention-heads 4 --max-positions 32 --tokens-per-sample 32 "
       "--tnf-min-count 3 --tnf-max-count 12 --tnf-half-window 2 --tnf-note-weight 0.3 --tnf-note-momentum 0.2 "
       "--dropout 0 --attention-dropout 0").split()
TRAIN = ("--sample-break-mode complete --batch-size 16 --optimizer adam --lr 1e-3 --max-update 3 "
         "--no-epoch-checkpoints --log-format simple --cpu --seed 1 --disable-validation").split()
EXACT = {"atol": 1e-12, "rtol": 0}
FAIRSEQ_FLOAT32 = {"atol": 1e-5, "rtol": 0}  # fairseq's RoBERTa modules: GELU and softmax in float32
# config.json entries that say how and when a folder was written, not what the model computes
WRITTEN = ("architectures", "auto_map", "dtype", "transformers_version")


def _build(data: Path, *flags: str):
    """(task, model, model settings, task settings) as fairseq-train builds them from ``flags``."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from omegaconf import OmegaConf

    import plugins  # noqa: F401

    args = options.parse_args_and_arch(options.get_training_parser(), [str(data), *flags])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    return task, model, cfg.model, OmegaConf.to_container(cfg.task)


def _float64_checkpoint(path: Path, model, model_cfg: argparse.Namespace, task_cfg: dict) -> Path:
    """``model`` in float64 with every parameter and the notes moved off their start, saved as fairseq does."""
    generator = torch.Generator().manual_seed(0)
    model.double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
        notes = getattr(model, "tnf_notes", None)
        if notes is not None:
            notes.notes.copy_(torch.randn(notes.notes.shape, generator=generator, dtype=torch.float64))
            notes.has_note.copy_(torch.rand(notes.num_words, generator=generator) < 0.7)
            notes.has_note[0] = True  # the first rare word has a note: the tests mix it
    torch.save({"model": model.state_dict(), "cfg": {"model": model_cfg, "task": task_cfg}}, path)
    return path


def _tokens(vocab_size: int, pad: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A right-padded batch (<s> ... </s>) and its attention mask."""
    tokens = torch.randint(4, vocab_size - 2, (3, 20), generator=torch.Generator().manual_seed(1))
    tokens[:, 0], tokens[:, -1] = 0, 2
    tokens[1, 14:] = pad
    return tokens, tokens.ne(pad).long()


def _config_dict(config) -> dict:
    return {k: v for k, v in config.to_dict().items() if k not in WRITTEN}


MC_BERT_COMPOSITIONS = [  # objective, position encoding, LN placement: each value of each at least twice
    ("mc", "tupe_relative", "pre"), ("mc", "absolute", "post"), ("rtd", "tupe_absolute", "post"),
    ("rtd", "tupe_relative", "pre"), ("mlm", "absolute", "pre"), ("mlm", "tupe_absolute", "post"),
]


@pytest.mark.parametrize("objective, positions, layer_norm", MC_BERT_COMPOSITIONS)
def test_mc_bert_compositions_convert_with_their_config_and_outputs(english_mlm_bin, tmp_path, objective,
                                                                     positions, layer_norm):
    from hf_models import McBertForPreTraining, McBertModel
    from plugins.convert_mcbert import convert_mcbert_to_hf

    flags = [*MC_BERT, "--objective", objective, "--position-embedding-type", positions,
             *(TUPE_FLAGS if positions != "absolute" else [])]
    task, model, model_cfg, task_cfg = _build(english_mlm_bin, *flags,
                                              *(["--encoder-normalize-before"] if layer_norm == "pre" else []))
    checkpoint = _float64_checkpoint(tmp_path / "ck.pt", model, model_cfg, task_cfg)
    model.eval()
    trained = model.pretraining.config
    assert (trained.objective, trained.position_embedding_type, trained.layer_norm_position) == (
        objective, positions, layer_norm)

    encoder_folder = convert_mcbert_to_hf(checkpoint, tmp_path / "encoder")
    full_folder = convert_mcbert_to_hf(checkpoint, tmp_path / "full", with_controller=True)
    for folder in (encoder_folder, full_folder):
        assert _config_dict(McBertModel.config_class.from_pretrained(folder)) == _config_dict(trained)
        assert json.loads((folder / "config.json").read_text())["dtype"] == "float64"

    tokens, mask = _tokens(trained.vocab_size)
    encoder = McBertModel.from_pretrained(encoder_folder, dtype=torch.float64).eval()
    with torch.no_grad():
        expected = model.pretraining.mc_bert(tokens, attention_mask=mask).last_hidden_state
        got = encoder(tokens, attention_mask=mask).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], **EXACT)
    assert expected[real].std() > 0.1

    full = McBertForPreTraining.from_pretrained(full_folder, dtype=torch.float64).eval()
    masked = torch.zeros_like(real)
    masked[:, [3, 7, 11]] = True
    source = tokens.masked_fill(masked, task.mask_idx)
    with torch.no_grad():
        torch.manual_seed(5)  # the same candidates / replacements drawn on both sides
        expected = model(source, tokens)
        torch.manual_seed(5)
        got = full.pretrain(tokens, masked, mask)
    torch.testing.assert_close(got.loss, expected.loss, **EXACT)
    torch.testing.assert_close(got.logits, expected.logits, **EXACT)


def test_mc_bert_settings_the_config_refuses_are_named(english_mlm_bin, tmp_path):
    """TUPE's bucket count with BERT's absolute positions (which would leave it unused): refused on conversion
    with both fields named, as on building the model."""
    from plugins.convert_mcbert import convert_mcbert_to_hf

    _, model, model_cfg, task_cfg = _build(english_mlm_bin, *MC_BERT, "--position-embedding-type", "tupe_relative",
                                           *TUPE_FLAGS)
    model_cfg.position_embedding_type = "absolute"  # as a checkpoint whose settings were edited by hand
    checkpoint = _float64_checkpoint(tmp_path / "ck.pt", model, model_cfg, task_cfg)
    with pytest.raises(GraftkitError, match="relative_attention_num_buckets=8 .*position_embedding_type"):
        convert_mcbert_to_hf(checkpoint, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


TNF_COMPOSITIONS = {  # backbone -> fairseq flags
    "roberta post-LN": ["--arch", "roberta"],
    "roberta pre-LN": ["--arch", "roberta", "--encoder-normalize-before"],
    "TUPE-A": ["--arch", "tupe_tiny"],
    "TUPE-R pre-LN": ["--arch", "tupe_r_tiny", "--encoder-normalize-before", "--tupe-relative-buckets", "8"],
}


@pytest.mark.parametrize("backbone", list(TNF_COMPOSITIONS))
def test_tnf_compositions_convert_with_their_notes(english_mlm_bin, tmp_path, backbone):
    from hf_models import TnfForMaskedLM
    from plugins.convert_tnf import convert_fairseq_tnf_to_hf

    task, model, model_cfg, task_cfg = _build(english_mlm_bin, *TNF, *TNF_COMPOSITIONS[backbone])
    checkpoint = _float64_checkpoint(tmp_path / "ck.pt", model, model_cfg, task_cfg)
    folder = convert_fairseq_tnf_to_hf(checkpoint, tmp_path / "hf")
    hf = TnfForMaskedLM.from_pretrained(folder, dtype=torch.float64)
    config = hf.config
    tupe = backbone.startswith("TUPE")
    close = EXACT if tupe else FAIRSEQ_FLOAT32  # the encoder's outputs; the LM head is RoBERTa's in both
    assert config.position_embedding_type == {"TUPE-A": "tupe_absolute", "TUPE-R pre-LN": "tupe_relative"}.get(
        backbone, "absolute")
    assert config.layer_norm_position == ("pre" if "pre-LN" in backbone else "post")
    assert (config.note_weight, config.note_momentum, config.note_half_window, config.first_note,
            config.mix_masked_words) == (0.3, 0.2, 2, "replace", False)
    notes = model.tnf_notes
    assert config.num_rare_words == notes.num_words == int((task.rare_index >= 0).sum())
    assert torch.equal(hf.notes.notes, notes.notes) and torch.equal(hf.notes.has_note, notes.has_note)
    rare = (task.rare_index >= 0).nonzero().flatten().tolist()
    assert config.rare_word_token_ids == [[index] for index in rare]  # the note dictionary's rows, in order

    # eval: the backbone's masked-LM outputs
    model.eval()
    hf.eval()
    tokens, mask = _tokens(config.vocab_size)
    real = mask.bool()
    with torch.no_grad():
        expected = model(tokens, features_only=True)[0]
        got = hf.bert(tokens, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(got[real], expected[real], **close)
        expected = model(tokens)[0]
        got = hf(tokens, attention_mask=mask).logits
    torch.testing.assert_close(got[real], expected[real], **FAIRSEQ_FLOAT32)
    assert expected[real].std() > 0.1

    # a training step: the same rare words found, the same notes mixed in, the same notes taken
    original = tokens.clone()
    original[0, 2:6] = torch.tensor(rare[:4])
    original[2, 5] = rare[0]
    source, target = original.clone(), torch.full_like(original, 1)
    source[0, 4], target[0, 4] = task.mask_idx, original[0, 4]  # a masked rare word: not mixed
    source[2, 9], target[2, 9] = task.mask_idx, original[2, 9]
    model.train()
    hf.train()
    sample = {"net_input": {"src_tokens": source}, "target": target}
    spans = task.rare_spans(torch.where(target.ne(1), target, source))
    assert int((spans[..., 0] >= 0).sum()) >= 5 and bool(notes.has_note[task.rare_index[rare[0]]])
    with torch.no_grad():
        plain = model(**sample["net_input"])[0]  # no step: nothing mixed
    before = notes.notes.clone()
    task._step = {"encoder": model.encoder.sentence_encoder, "notes": notes, "spans": spans,
                  "labels": torch.where(target.ne(1), 0, -100)}
    try:
        with torch.no_grad():
            expected = model(**sample["net_input"])[0]
        features = task._step.pop("features")
    finally:
        task._step = None
    notes.update(features, spans, source.ne(1))
    with torch.no_grad():
        got = hf(source, attention_mask=mask, labels=torch.where(target.ne(1), target, -100)).logits
    torch.testing.assert_close(got[real], expected[real], **FAIRSEQ_FLOAT32)
    torch.testing.assert_close(hf.notes.notes, notes.notes, **close)  # the means of the encoder's outputs
    assert not torch.allclose(expected[0, 2], plain[0, 2]) and not torch.equal(notes.notes, before)
    assert torch.equal(hf.notes.has_note, notes.has_note)
    if tupe:
        assert hf.bert.embeddings.position_embeddings is None  # TUPE: the notes mix into the word vectors alone


def test_tnf_conversion_refuses_another_dictionary_and_other_checkpoints(english_mlm_bin, tmp_path):
    from plugins.convert_tnf import convert_fairseq_tnf_to_hf

    _, model, model_cfg, task_cfg = _build(english_mlm_bin, *TNF, "--arch", "tupe_tiny")
    checkpoint = _float64_checkpoint(tmp_path / "ck.pt", model, model_cfg, task_cfg)
    lines = (english_mlm_bin / "dict.txt").read_text().splitlines()
    other = tmp_path / "dict.txt"  # the same symbols, every count 1: no word in [3, 12]
    other.write_text("".join(f"{line.rsplit(' ', 1)[0]} 1\n" for line in lines))
    with pytest.raises(GraftkitError, match=r"no dictionary word has a count in \[3, 12\]"):
        convert_fairseq_tnf_to_hf(checkpoint, tmp_path / "hf", dictionary=other)
    other.write_text("".join(f"{line.rsplit(' ', 1)[0]} {3 if i < 5 else 1}\n" for i, line in enumerate(lines)))
    with pytest.raises(GraftkitError, match="gives 5 rare words .* note dictionary has"):
        convert_fairseq_tnf_to_hf(checkpoint, tmp_path / "hf", dictionary=other)
    plain = {k: v for k, v in torch.load(checkpoint, weights_only=False)["model"].items()
             if not k.startswith("tnf_notes.")}
    torch.save({"model": plain, "cfg": {"model": model_cfg, "task": task_cfg}}, tmp_path / "plain.pt")
    with pytest.raises(GraftkitError, match="not a checkpoint of the masked_lm_tnf task"):
        convert_fairseq_tnf_to_hf(tmp_path / "plain.pt", tmp_path / "hf")
    task_cfg["tnf_first_note"] = "sometimes"
    torch.save({"model": torch.load(checkpoint, weights_only=False)["model"],
                "cfg": {"model": model_cfg, "task": task_cfg}}, tmp_path / "bad.pt")
    with pytest.raises(GraftkitError, match="--tnf-first-note must be one of"):
        convert_fairseq_tnf_to_hf(tmp_path / "bad.pt", tmp_path / "hf")
    folder = convert_fairseq_tnf_to_hf(checkpoint, tmp_path / "hf", tokenizer=False)  # notes, no vocabulary
    config = json.loads((folder / "config.json").read_text())
    assert config["num_rare_words"] == model.tnf_notes.num_words and config["rare_word_token_ids"] is None
    assert not (folder / "tokenizer.json").exists()


def _fairseq_model(checkpoint: Path, data: Path):
    from fairseq import checkpoint_utils

    import plugins  # noqa: F401

    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)],
                                                                    arg_overrides={"data": str(data)})
    return models[0].eval(), task


@pytest.mark.slow
def test_fairseq_train_then_cli_convert_mc_bert_tupe_r_pre_ln(english_mlm_bin, tmp_path, capsys):
    from graftkit.cli import main
    from hf_models import McBertModel

    run_fairseq_ok("fairseq-train", str(english_mlm_bin), *MC_BERT, *TRAIN, "--position-embedding-type",
                   "tupe_relative", "--encoder-normalize-before", "--save-dir", str(tmp_path / "ck"))
    checkpoint = tmp_path / "ck" / "checkpoint_last.pt"
    assert main(["mcbert", "convert", str(checkpoint), str(tmp_path / "hf")]) == 0
    assert "McBertModel" in capsys.readouterr().out
    model, _ = _fairseq_model(checkpoint, english_mlm_bin)
    encoder = McBertModel.from_pretrained(tmp_path / "hf").eval()
    assert (encoder.config.position_embedding_type, encoder.config.layer_norm_position) == ("tupe_relative", "pre")
    tokens, mask = _tokens(encoder.config.vocab_size)
    with torch.no_grad():
        expected = model.pretraining.mc_bert(tokens, attention_mask=mask).last_hidden_state
        got = encoder(tokens, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got[mask.bool()], expected[mask.bool()], atol=1e-5, rtol=0)


@pytest.mark.slow
def test_fairseq_train_then_cli_convert_tnf_on_tupe_r(english_mlm_bin, tmp_path, capsys):
    from graftkit.cli import main
    from hf_models import TnfForMaskedLM

    run_fairseq_ok("fairseq-train", str(english_mlm_bin), *TNF, "--arch", "tupe_r_tiny", *TRAIN, "--save-dir",
                   str(tmp_path / "ck"))
    checkpoint = tmp_path / "ck" / "checkpoint_last.pt"
    assert main(["tnf", "convert", str(checkpoint), str(tmp_path / "hf")]) == 0
    assert "TnfForMaskedLM" in capsys.readouterr().out
    model, _ = _fairseq_model(checkpoint, english_mlm_bin)
    hf = TnfForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    assert hf.notes.has_note.any() and torch.equal(hf.notes.notes, model.tnf_notes.notes)
    tokens, mask = _tokens(hf.config.vocab_size)
    with torch.no_grad():
        expected = model(tokens)[0]
        got = hf(tokens, attention_mask=mask).logits
    torch.testing.assert_close(got[mask.bool()], expected[mask.bool()], atol=1e-5, rtol=0)
    assert main(["tnf", "convert", str(checkpoint), str(tmp_path / "hf")]) == 2  # OUT exists: --force
    assert "exists and is not empty" in capsys.readouterr().err
