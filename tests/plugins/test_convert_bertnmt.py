"""bert-nmt checkpoints -> graftkit bert_fused checkpoints (`graftkit bertnmt convert`).

The reference code cannot be vendored: the checkpoints here carry its parameter names and shapes (model
``transformers2`` of its fairseq 0.7 fork: ``bert_encoder.*`` as its ``bert/modeling.py`` names BERT, each layer's
``bert_attn`` beside ``self_attn`` / ``encoder_attn``, fairseq 0.7's stacked ``in_proj_weight`` / separate
``q/k/v_proj_weight`` and stacked ``in_proj_bias``), and the expected outputs are its forward written out below
from its code (plain float64 tensor math, nothing of graftkit or fairseq), for a right-padded batch, to 1e-10.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from loopback import run_fairseq_ok
from reference_weights import ReferenceWeights

from graftkit.commands.bertfused import load_plugins
from graftkit.data.parallel import ToyLanguagePair
from graftkit.errors import GraftkitError

load_plugins()

from fairseq import checkpoint_utils  # noqa: E402

from plugins.bert_fused.toy import binarize, save_tiny_bert, write_toy_pair  # noqa: E402
from plugins.convert_bertnmt import convert_bertnmt  # noqa: E402

PAD = 1  # fairseq's <pad>
DIM, HEADS, FFN, ENCODER_LAYERS, DECODER_LAYERS, BERT_LAYERS, MAX_POSITIONS = 8, 2, 16, 2, 2, 2, 32
SOURCE_WORDS, TARGET_WORDS = 11, 9

# the reference's settings for the two cases: its drop-net (mix ½/½ at inference) with BERT wider than the NMT
# model (separate q/k/v_proj_weight), sinusoidal positions, post-LN; and its default mix (ratios, here 1 and 0.8)
# with --mask-cls-sep, BERT's first layer, BERT as wide as the NMT model (stacked in_proj_weight), learned
# positions, pre-LN and a shared decoder embedding
CASES = {
    "drop_net": {"bert_hidden": 12, "args": {"encoder_bert_dropout": True, "encoder_bert_dropout_ratio": 0.25}},
    "ratios_mask_cls_sep": {"bert_hidden": DIM, "args": {
        "encoder_ratio": 1.0, "bert_ratio": 0.8, "mask_cls_sep": True, "bert_output_layer": 0,
        "encoder_learned_pos": True, "decoder_learned_pos": True, "encoder_normalize_before": True,
        "decoder_normalize_before": True, "share_decoder_input_output_embed": True}},
}


def _write_dictionary(path: Path, prefix: str, count: int) -> None:
    path.write_text("".join(f"{prefix}{i} {100 - i}\n" for i in range(count)))


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """The data folder (fairseq dictionaries) and one tiny HF BERT folder per BERT width."""
    root = tmp_path_factory.mktemp("bertnmt")
    (root / "data").mkdir()
    _write_dictionary(root / "data" / "dict.src.txt", "s", SOURCE_WORDS)
    _write_dictionary(root / "data" / "dict.tgt.txt", "t", TARGET_WORDS)
    sentences = ToyLanguagePair(0).monolingual_source(60, seed=1)
    bert = {hidden: save_tiny_bert(root / f"bert{hidden}", sentences, hidden=hidden, layers=BERT_LAYERS, heads=2)
            for hidden in {case["bert_hidden"] for case in CASES.values()}}
    return {"root": root, "data": root / "data", **{f"bert{hidden}": path for hidden, path in bert.items()}}


def _bert_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def reference_checkpoint(bert_config: dict, settings: dict, seed: int = 0, source_words: int = SOURCE_WORDS,
                         target_words: int = TARGET_WORDS) -> tuple[dict[str, torch.Tensor], dict]:
    """Random float64 weights under bert-nmt's names and shapes (LayerNorms away from 1/0 on purpose), and its
    settings as its fairseq 0.7 stores them (``args``); dictionaries of 4 specials and ``*_words`` words."""
    w = ReferenceWeights(seed)
    rand, norm, linear = w.rand, w.norm, w.linear

    def attention(name: str, kv_dim: int) -> None:  # fairseq 0.7's MultiheadAttention
        if kv_dim == DIM:
            w[f"{name}.in_proj_weight"] = rand(3 * DIM, DIM)
        else:
            w[f"{name}.q_proj_weight"] = rand(DIM, DIM)
            w[f"{name}.k_proj_weight"], w[f"{name}.v_proj_weight"] = rand(DIM, kv_dim), rand(DIM, kv_dim)
        w[f"{name}.in_proj_bias"] = rand(3 * DIM, scale=0.1)
        linear(f"{name}.out_proj", DIM, DIM)

    bert_hidden = bert_config["hidden_size"]
    for side, words in (("encoder", source_words), ("decoder", target_words)):
        w[f"{side}.version"] = torch.tensor([3.0])
        w[f"{side}.embed_tokens.weight"] = rand(4 + words, DIM, scale=1.0)
        if settings.get(f"{side}_learned_pos"):
            w[f"{side}.embed_positions.weight"] = rand(MAX_POSITIONS + PAD + 1, DIM, scale=1.0)
        else:
            w[f"{side}.embed_positions._float_tensor"] = torch.zeros(1)
        if settings.get(f"{side}_normalize_before"):
            norm(f"{side}.layer_norm", DIM)
    for i in range(ENCODER_LAYERS):
        layer = f"encoder.layers.{i}."
        attention(layer + "self_attn", DIM)
        attention(layer + "bert_attn", bert_hidden)
        norm(layer + "self_attn_layer_norm", DIM)
        linear(layer + "fc1", FFN, DIM)
        linear(layer + "fc2", DIM, FFN)
        norm(layer + "final_layer_norm", DIM)
    for i in range(DECODER_LAYERS):
        layer = f"decoder.layers.{i}."
        attention(layer + "self_attn", DIM)
        attention(layer + "encoder_attn", DIM)
        attention(layer + "bert_attn", bert_hidden)
        for name in ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"):
            norm(layer + name, DIM)
        linear(layer + "fc1", FFN, DIM)
        linear(layer + "fc2", DIM, FFN)
    if not settings.get("share_decoder_input_output_embed"):
        w["decoder.embed_out"] = rand(4 + target_words, DIM)
    b, inner = "bert_encoder.", bert_config["intermediate_size"]
    w[b + "embeddings.word_embeddings.weight"] = rand(bert_config["vocab_size"], bert_hidden, scale=1.0)
    w[b + "embeddings.position_embeddings.weight"] = rand(bert_config["max_position_embeddings"], bert_hidden)
    w[b + "embeddings.token_type_embeddings.weight"] = rand(2, bert_hidden)
    norm(b + "embeddings.LayerNorm", bert_hidden)
    for i in range(BERT_LAYERS):
        layer = f"{b}encoder.layer.{i}."
        for name in ("query", "key", "value"):
            linear(f"{layer}attention.self.{name}", bert_hidden, bert_hidden)
        linear(layer + "attention.output.dense", bert_hidden, bert_hidden)
        norm(layer + "attention.output.LayerNorm", bert_hidden)
        linear(layer + "intermediate.dense", inner, bert_hidden)
        linear(layer + "output.dense", bert_hidden, inner)
        norm(layer + "output.LayerNorm", bert_hidden)
    linear(b + "pooler.dense", bert_hidden, bert_hidden)
    args = {"arch": "transformer_s2_iwslt_de_en", "task": "translation", "source_lang": "src", "target_lang": "tgt",
            "encoder_attention_heads": HEADS, "decoder_attention_heads": HEADS, "activation_fn": "relu",
            "dropout": 0.3, "attention_dropout": 0.1, "max_source_positions": MAX_POSITIONS,
            "max_target_positions": MAX_POSITIONS, "bert_model_name": "bert-base-uncased", "encoder_ratio": 1.0,
            "bert_ratio": 1.0, "bert_gates": [1] * ENCODER_LAYERS, "bert_output_layer": -1, **settings}
    return dict(w), args


def save_reference(path: Path, weights: dict[str, torch.Tensor], args: dict) -> Path:
    torch.save({"args": argparse.Namespace(**args), "model": weights, "optimizer_history": []}, path)
    return path


# --- the reference's forward, written out from its code ------------------------------------------------------

def _layer_norm(x: torch.Tensor, w: dict, name: str, eps: float = 1e-5) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], w[f"{name}.weight"], w[f"{name}.bias"], eps)


def _linear(x: torch.Tensor, w: dict, name: str) -> torch.Tensor:
    return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]


def _reference_bert(ids: torch.Tensor, w: dict, config: dict, pad_id: int) -> list[torch.Tensor]:
    """bert/modeling.py's BertModel(output_all_encoded_layers=True): every layer's output (B, T, H)."""
    b, heads, eps = "bert_encoder.", config["num_attention_heads"], config["layer_norm_eps"]
    positions = torch.arange(ids.shape[1])
    x = (w[b + "embeddings.word_embeddings.weight"][ids] + w[b + "embeddings.position_embeddings.weight"][positions]
         + w[b + "embeddings.token_type_embeddings.weight"][0])
    x = _layer_norm(x, w, b + "embeddings.LayerNorm", eps)
    mask = (1.0 - ids.ne(pad_id).double())[:, None, None, :] * -10000.0
    outputs = []
    for i in range(config["num_hidden_layers"]):
        layer = f"{b}encoder.layer.{i}."
        split = [_linear(x, w, f"{layer}attention.self.{n}").unflatten(-1, (heads, -1)).transpose(1, 2)
                 for n in ("query", "key", "value")]
        scores = split[0] @ split[1].transpose(-1, -2) / math.sqrt(split[0].shape[-1]) + mask
        context = (scores.softmax(-1) @ split[2]).transpose(1, 2).flatten(2)
        x = _layer_norm(_linear(context, w, layer + "attention.output.dense") + x, w,
                        layer + "attention.output.LayerNorm", eps)
        inner = _linear(x, w, layer + "intermediate.dense")
        inner = inner * 0.5 * (1.0 + torch.erf(inner / math.sqrt(2.0)))
        x = _layer_norm(_linear(inner, w, layer + "output.dense") + x, w, layer + "output.LayerNorm", eps)
        outputs.append(x)
    return outputs


def _reference_attention(query: torch.Tensor, memory: torch.Tensor, w: dict, name: str,
                         key_padding: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
    """fairseq 0.7's MultiheadAttention on (B, T, C) tensors: q scaled after its bias, -inf on masked keys."""
    if f"{name}.in_proj_weight" in w:
        weights = w[f"{name}.in_proj_weight"].chunk(3)
    else:
        weights = [w[f"{name}.{p}_proj_weight"] for p in ("q", "k", "v")]
    biases = w[f"{name}.in_proj_bias"].chunk(3)
    q, k, v = ((x @ weight.T + bias).unflatten(-1, (HEADS, -1)).transpose(1, 2)
               for x, weight, bias in zip((query, memory, memory), weights, biases, strict=True))
    scores = (q * (DIM // HEADS) ** -0.5) @ k.transpose(-1, -2)
    if key_padding is not None:
        scores = scores.masked_fill(key_padding[:, None, None, :], float("-inf"))
    if causal:
        scores = scores + torch.full(scores.shape[-2:], float("-inf"), dtype=scores.dtype).triu(1)
    return _linear((scores.softmax(-1) @ v).transpose(1, 2).flatten(2), w, f"{name}.out_proj")


def _positions(tokens: torch.Tensor, w: dict, side: str) -> torch.Tensor:
    """fairseq's positions: pad + 1, pad + 2, ... over the non-pad tokens; sinusoidal or learned rows."""
    real = tokens.ne(PAD)
    index = (torch.cumsum(real, 1) * real + PAD).long()
    if f"{side}.embed_positions.weight" in w:
        return w[f"{side}.embed_positions.weight"][index]
    # fairseq 0.7 computes its sinusoidal table in float32 whatever the model's dtype (so does 0.12)
    half = DIM // 2
    frequencies = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
    angles = index.float()[..., None] * frequencies
    return (torch.cat([angles.sin(), angles.cos()], -1) * real[..., None]).double()


def reference_forward(w: dict, args: dict, bert_config: dict, src: torch.Tensor, bert_ids: torch.Tensor,
                      prev: torch.Tensor, bert_special: dict[str, int]) -> torch.Tensor:
    """TransformerS2Model.forward in eval mode: the decoder's logits (B, T_tgt, V)."""
    if args.get("encoder_bert_dropout"):
        ratios = (0.5, 0.5)  # get_ratio: not training, so neither branch is dropped
    else:
        ratios = (args["encoder_ratio"], args["bert_ratio"])
    bert = _reference_bert(bert_ids, w, bert_config, bert_special["pad"])[args["bert_output_layer"]]
    bert_padding = bert_ids.eq(bert_special["pad"])
    if args.get("mask_cls_sep"):
        bert_padding = bert_padding | bert_ids.eq(bert_special["cls"]) | bert_ids.eq(bert_special["sep"])

    def block(x, pre_ln, norm, sublayer):  # maybe_layer_norm before / after around a residual
        h = _layer_norm(x, w, norm) if pre_ln else x
        x = x + sublayer(h)
        return x if pre_ln else _layer_norm(x, w, norm)

    def feed_forward(layer):
        return lambda h: _linear(torch.relu(_linear(h, w, layer + "fc1")), w, layer + "fc2")

    pre = bool(args.get("encoder_normalize_before"))
    x = math.sqrt(DIM) * w["encoder.embed_tokens.weight"][src] + _positions(src, w, "encoder")
    src_padding = src.eq(PAD)
    for i in range(ENCODER_LAYERS):
        layer = f"encoder.layers.{i}."
        x = block(x, pre, layer + "self_attn_layer_norm", lambda h, layer=layer: (
            ratios[0] * _reference_attention(h, h, w, layer + "self_attn", src_padding)
            + ratios[1] * _reference_attention(h, bert, w, layer + "bert_attn", bert_padding)))
        x = block(x, pre, layer + "final_layer_norm", feed_forward(layer))
    if pre:
        x = _layer_norm(x, w, "encoder.layer_norm")
    encoder_out = x

    pre = bool(args.get("decoder_normalize_before"))
    y = math.sqrt(DIM) * w["decoder.embed_tokens.weight"][prev] + _positions(prev, w, "decoder")
    for i in range(DECODER_LAYERS):
        layer = f"decoder.layers.{i}."
        y = block(y, pre, layer + "self_attn_layer_norm",
                  lambda h, layer=layer: _reference_attention(h, h, w, layer + "self_attn", causal=True))
        y = block(y, pre, layer + "encoder_attn_layer_norm", lambda h, layer=layer: (
            ratios[0] * _reference_attention(h, encoder_out, w, layer + "encoder_attn", src_padding)
            + ratios[1] * _reference_attention(h, bert, w, layer + "bert_attn", bert_padding)))
        y = block(y, pre, layer + "final_layer_norm", feed_forward(layer))
    if pre:
        y = _layer_norm(y, w, "decoder.layer_norm")
    out = w["decoder.embed_tokens.weight"] if args.get("share_decoder_input_output_embed") else w["decoder.embed_out"]
    return y @ out.T


# --- tests ----------------------------------------------------------------------------------------------------

def _right_padded(rows: list[list[int]], pad: int) -> torch.Tensor:
    width = max(map(len, rows))
    return torch.tensor([row + [pad] * (width - len(row)) for row in rows])


def _load_converted(path: Path, folders: dict[str, Path], bert: Path):
    """The converted checkpoint as fairseq-generate loads it, then in float64 with the stored (float64) weights."""
    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(path)], arg_overrides={"data": str(folders["data"]), "bert_model": str(bert)})
    model = models[0].double().eval()
    state = checkpoint_utils.load_checkpoint_to_cpu(str(path))["model"]
    # the checkpoint's dtypes are kept: float64 weights (fairseq's version buffers are float32 in every model)
    assert {tensor.dtype for name, tensor in state.items() if not name.endswith(".version")} == {torch.float64}
    model.load_state_dict(state, strict=True)
    return model, task


@pytest.mark.parametrize("case", sorted(CASES))
def test_converted_model_equals_the_reference_forward(folders, tmp_path, case):
    setting = CASES[case]
    bert = folders[f"bert{setting['bert_hidden']}"]
    config = _bert_config(bert)
    weights, args = reference_checkpoint(config, setting["args"])
    out = convert_bertnmt(save_reference(tmp_path / "reference.pt", weights, args), tmp_path / "converted.pt", bert)
    model, task = _load_converted(out, folders, bert)

    tokenizer = task.bert_tokenizer
    special = {"pad": tokenizer.pad_token_id, "cls": tokenizer.cls_token_id, "sep": tokenizer.sep_token_id}
    g = torch.Generator().manual_seed(1)

    def words(count: int, low: int, high: int) -> list[int]:
        return torch.randint(low, high, (count,), generator=g).tolist()

    eos = 2
    src = _right_padded([words(6, 4, 4 + SOURCE_WORDS) + [eos], words(3, 4, 4 + SOURCE_WORDS) + [eos],
                         words(1, 4, 4 + SOURCE_WORDS) + [eos]], PAD)
    first_word = max(special.values()) + 1
    bert_ids = _right_padded([[special["cls"], *words(n, first_word, config["vocab_size"]), special["sep"]]
                              for n in (7, 2, 4)], special["pad"])
    prev = _right_padded([[eos, *words(n, 4, 4 + TARGET_WORDS)] for n in (5, 2, 3)], PAD)

    logits, _ = model(src, src.ne(PAD).sum(1), prev, bert_input=bert_ids)
    expected = reference_forward(weights, args, config, src, bert_ids, prev, special)
    real = prev.ne(PAD)  # outputs at padded target positions are not compared (the reference masks no pads there)
    assert logits.dtype == torch.float64
    torch.testing.assert_close(logits[real], expected[real], rtol=0, atol=1e-10)


def test_converted_settings_carry_the_reference_mix(folders, tmp_path):
    for case, expected in (("drop_net", (0.5, 0.5, 0.5, False)), ("ratios_mask_cls_sep", (0.0, 1.0, 0.8, True))):
        folder = folders[f"bert{CASES[case]['bert_hidden']}"]
        weights, args = reference_checkpoint(_bert_config(folder), CASES[case]["args"])
        out = convert_bertnmt(save_reference(tmp_path / f"{case}.pt", weights, args), tmp_path / f"{case}-out.pt",
                              folder)
        saved = checkpoint_utils.load_checkpoint_to_cpu(str(out))["cfg"].model
        assert (saved.drop_net, saved.encoder_ratio, saved.bert_ratio, saved.mask_cls_sep) == expected
        assert saved.arch == "bert_fused"


def _convert_error(tmp_path: Path, bert: Path, weights: dict, args: dict) -> str:
    with pytest.raises(GraftkitError) as err:
        convert_bertnmt(save_reference(tmp_path / "reference.pt", weights, args), tmp_path / "out.pt", bert)
    assert not (tmp_path / "out.pt").exists()
    return str(err.value)


def test_refuses_the_first_missing_or_unmapped_parameter_and_unsupported_variants(folders, tmp_path):
    bert = folders[f"bert{CASES['drop_net']['bert_hidden']}"]
    weights, args = reference_checkpoint(_bert_config(bert), CASES["drop_net"]["args"])

    for name in ("decoder.layers.1.bert_attn.in_proj_bias", "decoder.embed_tokens.weight"):
        missing = {k: v for k, v in weights.items() if k != name}
        assert f"parameter {name} is missing" in _convert_error(tmp_path, bert, missing, args)
    extra = {**weights, "encoder.layers.0.bert_gate.weight": torch.zeros(1, dtype=torch.float64)}
    assert "checkpoint parameter encoder.layers.0.bert_gate.weight (1,) has no counterpart" in _convert_error(
        tmp_path, bert, extra, args)
    wrong = {**weights, "bert_encoder.pooler.dense.bias": torch.zeros(5, dtype=torch.float64)}
    assert "encoder.bert.pooler.dense.bias has shape (5,)" in _convert_error(tmp_path, bert, wrong, args)
    stacked = {**weights, "decoder.layers.0.bert_attn_layer_norm.weight": torch.ones(DIM, dtype=torch.float64)}
    assert "transformerstack" in _convert_error(tmp_path, bert, stacked, args)
    no_decoder_bert = {k: v for k, v in weights.items() if not k.startswith("decoder.layers.0.bert_attn.")}
    assert "--decoder-no-bert" in _convert_error(tmp_path, bert, no_decoder_bert, args)
    assert "--bert-gates 1 0" in _convert_error(tmp_path, bert, weights, {**args, "bert_gates": [1, 0]})
    plain = {k: v for k, v in weights.items() if ".bert_attn." not in k}
    assert "not its BERT-fused model" in _convert_error(tmp_path, bert, plain, args)
    no_bert = {k: v for k, v in weights.items() if not k.startswith("bert_encoder.")}
    assert "not a bert-nmt checkpoint" in _convert_error(tmp_path, bert, no_bert, args)


def test_output_is_not_overwritten_without_force(folders, tmp_path):
    bert = folders[f"bert{CASES['drop_net']['bert_hidden']}"]
    weights, args = reference_checkpoint(_bert_config(bert), CASES["drop_net"]["args"])
    reference = save_reference(tmp_path / "reference.pt", weights, args)
    (tmp_path / "out.pt").write_bytes(b"keep")
    with pytest.raises(GraftkitError, match="exists .*--force"):
        convert_bertnmt(reference, tmp_path / "out.pt", bert)
    assert (tmp_path / "out.pt").read_bytes() == b"keep"
    convert_bertnmt(reference, tmp_path / "out.pt", bert, force=True)
    assert "model" in checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "out.pt"))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_bert_folder_must_hold_a_bert(folders, tmp_path):
    bert = folders[f"bert{CASES['drop_net']['bert_hidden']}"]
    weights, args = reference_checkpoint(_bert_config(bert), CASES["drop_net"]["args"])
    other = tmp_path / "roberta"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "roberta"}')
    assert "holds a 'roberta' model" in _convert_error(tmp_path, other, weights, args)


@pytest.mark.slow
def test_graftkit_bertnmt_convert_then_fairseq_generate(tmp_path):
    """The command line end to end: a reference checkpoint for fairseq-preprocess'd toy data, converted with
    `graftkit bertnmt convert`, decoded by fairseq-generate with graftkit's plugins as --user-dir."""
    from graftkit.cli import main

    pair = ToyLanguagePair(0)
    bert = save_tiny_bert(tmp_path / "bert", pair.monolingual_source(100, seed=2), hidden=12, layers=BERT_LAYERS,
                          heads=2)
    data = binarize(write_toy_pair(tmp_path / "raw", pair, {"train": 30, "valid": 4, "test": 6}), tmp_path / "bin")
    words = [len((data / f"dict.{lang}.txt").read_text().splitlines()) for lang in ("src", "tgt")]
    weights, args = reference_checkpoint(_bert_config(bert), CASES["drop_net"]["args"], source_words=words[0],
                                         target_words=words[1])
    reference = save_reference(tmp_path / "reference.pt", weights, {**args, "data": str(data)})

    assert main(["bertnmt", "convert", str(reference), str(tmp_path / "fused.pt"), "--bert-model", str(bert)]) == 0
    out = run_fairseq_ok("fairseq-generate", str(data), "--task", "translation_bert_fused", "--bert-model",
                         str(bert), "--bert-on-the-fly", "--path", str(tmp_path / "fused.pt"), "--beam", "3",
                         "--max-len-b", "5", "--cpu", "--batch-size", "4").stdout
    assert sum(line.startswith("H-") for line in out.splitlines()) == 6
