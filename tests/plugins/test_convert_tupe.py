"""guolinke/TUPE checkpoints -> hf_models.TupeForMaskedLM (`graftkit tupe convert`).

The reference code cannot be vendored: the checkpoints here carry the reference's parameter names and shapes
(its model ``bert``: both layouts of the positional projections, TUPE-A and TUPE-R, Post-LN and Pre-LN, with
and without ``--embedding-normalize``), and the expected outputs are the reference's forward written out below
from its code (plain float64 tensor math, nothing of graftkit), for a right-padded batch, to 1e-10.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch
from reference_weights import ReferenceWeights

from graftkit.errors import GraftkitError
from plugins.convert_tupe import convert_fairseq_tupe_to_hf

P = "decoder.sentence_encoder."
WORDS = [f"w{i}" for i in range(20)]
VOCAB = 4 + len(WORDS) + 1  # <s> <pad> </s> <unk>, the words, <mask>
HIDDEN, HEADS, FFN, LAYERS, MAX_POSITIONS, BUCKETS = 16, 2, 24, 2, 16, 32


def _reference_weights(relative: bool, pos_proj: bool, pre_ln: bool, embedding_normalize: bool,
                       seed: int = 0) -> dict[str, torch.Tensor]:
    """Random float64 weights under the reference's names and shapes (LayerNorms away from 1/0 on purpose)."""
    w = ReferenceWeights(seed)
    rand, linear = w.rand, w.linear

    def norm(name: str) -> None:
        w.norm(name, HIDDEN)

    w[P + "embed_tokens.weight"] = rand(VOCAB, HIDDEN, scale=1.0)
    w[P + "embed_tokens.weight"][1] = 0  # the padding row, as nn.Embedding(padding_idx=1) keeps it
    w[P + "pos.weight"] = rand(MAX_POSITIONS + 1, HIDDEN, scale=1.0)
    norm(P + "pos_ln")
    if pos_proj:
        linear(P + "pos_proj", 2 * HIDDEN, HIDDEN)
    else:
        linear(P + "pos_q_linear", HIDDEN, HIDDEN)
        linear(P + "pos_k_linear", HIDDEN, HIDDEN)
    if embedding_normalize:
        norm(P + "emb_layer_norm")
    if pre_ln:
        norm(P + "emb_out_layer_norm")
    if relative:
        w[P + "relative_attention_bias.weight"] = rand(BUCKETS + 1, HEADS, scale=1.0)
        if pos_proj:  # the later reference stores its bucket table as a frozen parameter
            w[P + "rp_bucket"] = _bucket_table(MAX_POSITIONS)
    for i in range(LAYERS):
        layer = f"{P}layers.{i}."
        w[layer + "self_attn.in_proj_weight"] = rand(3 * HIDDEN, HIDDEN)
        w[layer + "self_attn.in_proj_bias"] = rand(3 * HIDDEN, scale=0.1)
        linear(layer + "self_attn.out_proj", HIDDEN, HIDDEN)
        norm(layer + "self_attn_layer_norm")
        linear(layer + "fc1", FFN, HIDDEN)
        linear(layer + "fc2", HIDDEN, FFN)
        norm(layer + "final_layer_norm")
    linear("decoder.lm_head.dense", HIDDEN, HIDDEN)
    norm("decoder.lm_head.layer_norm")
    w["decoder.lm_head.bias"] = rand(VOCAB, scale=0.1)
    w["decoder.lm_head.weight"] = w[P + "embed_tokens.weight"]  # tied: listed under both names
    return dict(w)


def _t5_bucket(relative_position: int, num_buckets: int = BUCKETS, max_distance: int = 128) -> int:
    """T5's bidirectional bucket of key - query, one number at a time (the reference's formula)."""
    n = -relative_position
    half = num_buckets // 2
    bucket = half if n < 0 else 0
    n = abs(n)
    exact = half // 2
    if n < exact:
        return bucket + n
    large = exact + int(math.log(n / exact) / math.log(max_distance / exact) * (half - exact))
    return bucket + min(large, half - 1)


def _bucket_table(length: int) -> torch.Tensor:
    table = torch.tensor([[_t5_bucket(j - i) for j in range(length)] for i in range(length)])
    table[:, 0] = BUCKETS  # others -> [CLS]
    table[0, :] = BUCKETS // 2  # [CLS] -> others
    return table


def _ln(x: torch.Tensor, w: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * w[name + ".weight"] + w[name + ".bias"]


def _lin(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return x @ weight.T + bias


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def reference_tupe_logits(w: dict[str, torch.Tensor], tokens: torch.Tensor, pre_ln: bool) -> torch.Tensor:
    """The reference's BertModel forward (eval mode), from its code: [batch, seq, vocab]."""
    batch, length = tokens.shape
    head_dim = HIDDEN // HEADS
    scaling = (head_dim * 2) ** -0.5  # attn_scale_factor = 2 for both terms
    pad = tokens.eq(1)
    x = w[P + "embed_tokens.weight"][tokens]
    if P + "emb_layer_norm.weight" in w:
        x = _ln(x, w, P + "emb_layer_norm")
    x = x * (~pad)[..., None]
    # positional term: LN over rows 0..L of the table, q/k projections, [H, L+1, L+1]; untie [CLS]; drop row 0
    rows = _ln(w[P + "pos.weight"][:length + 1], w, P + "pos_ln")
    if P + "pos_proj.weight" in w:
        both = _lin(rows, w[P + "pos_proj.weight"], w[P + "pos_proj.bias"])
        pos_q, pos_k = both[:, :HIDDEN], both[:, HIDDEN:]
    else:
        pos_q = _lin(rows, w[P + "pos_q_linear.weight"], w[P + "pos_q_linear.bias"])
        pos_k = _lin(rows, w[P + "pos_k_linear.weight"], w[P + "pos_k_linear.bias"])
    pos_q = pos_q.view(length + 1, HEADS, head_dim).transpose(0, 1) * scaling
    pos_k = pos_k.view(length + 1, HEADS, head_dim).transpose(0, 1)
    full = pos_q @ pos_k.transpose(1, 2)
    cls_to_other, other_to_cls = full[:, 0, 0].clone(), full[:, 1, 1].clone()
    bias = full[:, 1:, 1:].clone()
    bias[:, :, 0] = other_to_cls[:, None]
    bias[:, 0, :] = cls_to_other[:, None]
    if P + "relative_attention_bias.weight" in w:
        bucket = _bucket_table(MAX_POSITIONS)[:length, :length]
        bias = bias + w[P + "relative_attention_bias.weight"][bucket].permute(2, 0, 1)
    for i in range(LAYERS):
        layer = f"{P}layers.{i}."
        residual = x
        h = _ln(x, w, layer + "self_attn_layer_norm") if pre_ln else x
        q, k, v = _lin(h, w[layer + "self_attn.in_proj_weight"], w[layer + "self_attn.in_proj_bias"]).chunk(3, -1)
        q, k, v = (t.view(batch, length, HEADS, head_dim).transpose(1, 2) for t in (q * scaling, k, v))
        scores = q @ k.transpose(-1, -2) + bias
        scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, HIDDEN)
        x = residual + _lin(attended, w[layer + "self_attn.out_proj.weight"], w[layer + "self_attn.out_proj.bias"])
        if not pre_ln:
            x = _ln(x, w, layer + "self_attn_layer_norm")
        residual = x
        h = _ln(x, w, layer + "final_layer_norm") if pre_ln else x
        h = _lin(_gelu(_lin(h, w[layer + "fc1.weight"], w[layer + "fc1.bias"])), w[layer + "fc2.weight"],
                 w[layer + "fc2.bias"])
        x = residual + h
        if not pre_ln:
            x = _ln(x, w, layer + "final_layer_norm")
    if pre_ln:
        x = _ln(x, w, P + "emb_out_layer_norm")
    h = _ln(_gelu(_lin(x, w["decoder.lm_head.dense.weight"], w["decoder.lm_head.dense.bias"])), w,
            "decoder.lm_head.layer_norm")
    return h @ w["decoder.lm_head.weight"].T + w["decoder.lm_head.bias"]


def _write_checkpoint(folder: Path, weights: dict[str, torch.Tensor], pre_ln: bool = False,
                      relative: bool = False, **args) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dict.txt").write_text("".join(f"{word} {100 - i}\n" for i, word in enumerate(WORDS)))
    settings = argparse.Namespace(arch="bert_base", encoder_layers=LAYERS, encoder_embed_dim=HIDDEN,
                                  encoder_ffn_embed_dim=FFN, encoder_attention_heads=HEADS, activation_fn="gelu",
                                  encoder_normalize_before=pre_ln, rel_pos=relative, max_positions=MAX_POSITIONS,
                                  dropout=0.1, attention_dropout=0.1, activation_dropout=0.0,
                                  data=str(folder), **args)
    torch.save({"model": weights, "args": settings}, folder / "checkpoint_best.pt")
    return folder / "checkpoint_best.pt"


def _right_padded_batch() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(4, VOCAB - 1, (3, 12), generator=g)
    tokens[:, 0] = 0  # <s>, the [CLS] slot
    tokens[0, -1] = 2
    tokens[1, 7], tokens[1, 8:] = 2, 1  # right padding, as fairseq pads
    tokens[2, 4], tokens[2, 5:] = 2, 1
    return tokens


LAYOUTS = [  # relative, pos_proj, pre_ln, embedding_normalize
    pytest.param(True, True, False, False, id="tupe-r-pos_proj-post-ln"),
    pytest.param(False, False, False, True, id="tupe-a-pos_q_k_linear-embedding-normalize"),
    pytest.param(True, False, True, True, id="tupe-r-pre-ln"),
]


@pytest.mark.parametrize(("relative", "pos_proj", "pre_ln", "embedding_normalize"), LAYOUTS)
def test_converted_reference_checkpoint_equals_the_reference_forward(tmp_path, relative, pos_proj, pre_ln,
                                                                       embedding_normalize):
    from hf_models import TupeForMaskedLM

    weights = _reference_weights(relative, pos_proj, pre_ln, embedding_normalize)
    checkpoint = _write_checkpoint(tmp_path / "ref", weights, pre_ln=pre_ln, relative=relative)
    out = convert_fairseq_tupe_to_hf(checkpoint, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert (config["position_mode"], config["layer_norm_position"], config["embedding_layer_norm"]) == (
        "relative" if relative else "absolute", "pre" if pre_ln else "post", embedding_normalize)
    assert config["layer_norm_eps"] == 1e-5 and config["max_position_embeddings"] == MAX_POSITIONS
    model = TupeForMaskedLM.from_pretrained(out).eval()
    assert model.dtype == torch.float64  # the checkpoint's dtype is kept
    tokens = _right_padded_batch()
    keep = tokens.ne(1)
    with torch.no_grad():
        got = model(tokens, attention_mask=keep.long()).logits
    expected = reference_tupe_logits(weights, tokens, pre_ln)
    torch.testing.assert_close(got[keep], expected[keep], atol=1e-10, rtol=0)
    assert expected[keep].std() > 0.5  # not a degenerate comparison


def test_fill_mask_pipeline_on_a_converted_reference_folder(tmp_path):
    from transformers import AutoTokenizer, pipeline

    import hf_models  # noqa: F401  (registers tupe with the Auto classes)

    weights = _reference_weights(True, True, False, False)
    out = convert_fairseq_tupe_to_hf(_write_checkpoint(tmp_path / "ref", weights, relative=True), tmp_path / "hf")
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer("w0 w5 zzz <mask>")["input_ids"] == [0, 4, 9, 3, VOCAB - 1, 2]  # fairseq's ids
    predictions = pipeline("fill-mask", model=str(out), top_k=3)("w3 <mask> w7 w1")
    tokens = torch.tensor([[0, 7, VOCAB - 1, 11, 5, 2]])
    probs = reference_tupe_logits(weights, tokens, pre_ln=False)[0, 2].softmax(-1)
    top = probs.topk(3)
    assert [p["token"] for p in predictions] == top.indices.tolist()
    assert [p["score"] for p in predictions] == pytest.approx(top.values.tolist(), abs=1e-6)
    assert predictions[0]["sequence"] == f"w3 {tokenizer.convert_ids_to_tokens(int(top.indices[0]))} w7 w1"


def test_unmapped_missing_and_mismatched_parameters_are_named(tmp_path):
    weights = _reference_weights(True, True, False, False)
    extra = {**weights, P + "segment_embeddings.weight": torch.zeros(2, HIDDEN, dtype=torch.float64)}
    with pytest.raises(GraftkitError, match=r"checkpoint parameter decoder\.sentence_encoder\.segment_embeddings"
                                            r"\.weight \(2, 16\) has no counterpart"):
        convert_fairseq_tupe_to_hf(_write_checkpoint(tmp_path / "a", extra, relative=True), tmp_path / "out")
    missing = {k: v for k, v in weights.items() if k != P + "layers.1.fc2.bias"}
    with pytest.raises(GraftkitError, match=r"parameter decoder\.sentence_encoder\.layers\.1\.fc2\.bias is "
                                            "missing"):
        convert_fairseq_tupe_to_hf(_write_checkpoint(tmp_path / "b", missing, relative=True), tmp_path / "out")
    wrong = {**weights, P + "layers.0.fc1.bias": torch.zeros(FFN + 1, dtype=torch.float64)}
    with pytest.raises(GraftkitError, match=r"layers\.0\.feed_forward\.intermediate\.bias has shape \(25,\)"):
        convert_fairseq_tupe_to_hf(_write_checkpoint(tmp_path / "c", wrong, relative=True), tmp_path / "out")
    untied = {**weights, "decoder.lm_head.weight": weights[P + "embed_tokens.weight"] + 1}
    with pytest.raises(GraftkitError, match=r"decoder\.lm_head\.weight should be a tied copy"):
        convert_fairseq_tupe_to_hf(_write_checkpoint(tmp_path / "d", untied, relative=True), tmp_path / "out")
    other_buckets = {**weights, P + "rp_bucket": weights[P + "rp_bucket"].flip(0)}
    with pytest.raises(GraftkitError, match="rp_bucket"):
        convert_fairseq_tupe_to_hf(_write_checkpoint(tmp_path / "e", other_buckets, relative=True),
                                   tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written on any refusal


def test_output_is_refused_unless_forced_and_the_cli(tmp_path, capsys):
    from graftkit.cli import main

    checkpoint = _write_checkpoint(tmp_path / "ref", _reference_weights(False, True, False, False))
    out = tmp_path / "hf"
    assert main(["tupe", "convert", str(checkpoint), str(out)]) == 0
    assert "AutoTokenizer" in capsys.readouterr().out and (out / "tokenizer.json").is_file()
    (out / "mine.txt").write_text("keep")
    assert main(["tupe", "convert", str(checkpoint), str(out)]) == 2
    assert "exists and is not empty (give --force to replace it)" in capsys.readouterr().err
    assert (out / "mine.txt").read_text() == "keep"
    assert main(["tupe", "convert", str(checkpoint), str(out), "--force", "--no-tokenizer"]) == 0
    assert not (out / "mine.txt").exists() and not (out / "tokenizer.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left
    (tmp_path / "short.txt").write_text("w0 3\n")
    assert main(["tupe", "convert", str(checkpoint), str(tmp_path / "x"), "--dict", str(tmp_path / "short.txt")]) == 2
    assert "not the dictionary this model was trained with" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
