"""MC-BERT/MC-BERT checkpoints -> hf_models McBert folders (`graftkit mcbert convert`).

The reference code cannot be vendored: the checkpoints here carry its parameter names and shapes (model
``mcbert``: main model ``decoder.*``, meta controller ``mc.*`` with ``embed_linear`` and the shared bias, as
its state dict lists them, tied copies included), and the expected outputs are its forward written out below
from its code (plain float64 tensor math), for a right-padded batch, to 1e-10.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from reference_weights import ReferenceWeights

from graftkit.errors import GraftkitError
from plugins.convert_mcbert import convert_mcbert_to_hf

G, M = "decoder.sentence_encoder.", "mc.sentence_encoder."
WORDS = [f"w{i}" for i in range(20)]
VOCAB = 4 + len(WORDS) + 2  # <s> <pad> </s> <unk>, the words, <mask>, <neither>
HIDDEN, HEADS, FFN, LAYERS, MAX_POSITIONS, DIVIDER = 12, 3, 24, 2, 16, 3


def _reference_weights(stacked_attention: bool, embedding_normalize: bool) -> dict[str, torch.Tensor]:
    w = ReferenceWeights(seed=0)
    rand, norm, linear = w.rand, w.norm, w.linear

    def encoder(prefix: str, hidden: int, ffn: int) -> None:
        w[prefix + "embed_positions.weight"] = rand(MAX_POSITIONS + 2, hidden, scale=1.0)  # pad + 1 extra rows
        if embedding_normalize:
            norm(prefix + "emb_layer_norm", hidden)
        for i in range(LAYERS):
            layer = f"{prefix}layers.{i}."
            if stacked_attention:
                w[layer + "self_attn.in_proj_weight"] = rand(3 * hidden, hidden)
                w[layer + "self_attn.in_proj_bias"] = rand(3 * hidden, scale=0.1)
            else:
                for name in ("q_proj", "k_proj", "v_proj"):
                    linear(layer + "self_attn." + name, hidden, hidden)
            linear(layer + "self_attn.out_proj", hidden, hidden)
            norm(layer + "self_attn_layer_norm", hidden)
            linear(layer + "fc1", ffn, hidden)
            linear(layer + "fc2", hidden, ffn)
            norm(layer + "final_layer_norm", hidden)

    small = HIDDEN // DIVIDER
    w[G + "embed_tokens.weight"] = rand(VOCAB, HIDDEN, scale=1.0)
    w[G + "embed_tokens.weight"][1] = 0
    encoder(G, HIDDEN, FFN)
    linear("decoder.lm_head.dense", HIDDEN, HIDDEN)
    norm("decoder.lm_head.layer_norm", HIDDEN)
    w["decoder.lm_head.embed_tokens.weight"] = w[G + "embed_tokens.weight"]  # tied copies, as listed
    w["decoder.lm_head.bias.weight"] = rand(VOCAB, 1)
    w[M + "embed_tokens.weight"] = w[G + "embed_tokens.weight"]
    linear(M + "embed_linear", small, HIDDEN)
    encoder(M, small, FFN // DIVIDER)
    linear("mc.lm_head.dense", small, small)
    norm("mc.lm_head.layer_norm", small)
    w["mc.lm_head.weight"] = w[G + "embed_tokens.weight"]
    w["mc.lm_head.bias"] = w["decoder.lm_head.bias.weight"]
    w["mc.lm_head.share_emb_pro.weight"] = w[M + "embed_linear.weight"]
    w["mc.lm_head.share_emb_pro.bias"] = w[M + "embed_linear.bias"]
    return dict(w)


def _ln(x, w, name):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * w[name + ".weight"] + w[name + ".bias"]


def _lin(x, w, name):
    return x @ w[name + ".weight"].T + w[name + ".bias"]


def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def reference_encoder(w, prefix: str, tokens: torch.Tensor, vectors: torch.Tensor, heads: int) -> torch.Tensor:
    """The reference's TransformerSentenceEncoder (Post-LN, eval mode) on token vectors: [batch, seq, d]."""
    batch, length = tokens.shape
    hidden = vectors.shape[-1]
    head_dim = hidden // heads
    pad = tokens.eq(1)
    positions = torch.cumsum(~pad, 1) * ~pad + 1  # fairseq's make_positions: pad + 1 + t, pad for padding
    x = vectors + w[prefix + "embed_positions.weight"][positions]
    if prefix + "emb_layer_norm.weight" in w:
        x = _ln(x, w, prefix + "emb_layer_norm")
    x = x * (~pad)[..., None]
    for i in range(LAYERS):
        layer = f"{prefix}layers.{i}."
        if layer + "self_attn.in_proj_weight" in w:
            q, k, v = (x @ w[layer + "self_attn.in_proj_weight"].T + w[layer + "self_attn.in_proj_bias"]).chunk(3, -1)
        else:
            q, k, v = (_lin(x, w, layer + f"self_attn.{n}_proj") for n in "qkv")
        q, k, v = (t.view(batch, length, heads, head_dim).transpose(1, 2) for t in (q * head_dim**-0.5, k, v))
        scores = (q @ k.transpose(-1, -2)).masked_fill(pad[:, None, None, :], float("-inf"))
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, hidden)
        x = _ln(x + _lin(attended, w, layer + "self_attn.out_proj"), w, layer + "self_attn_layer_norm")
        x = _ln(x + _lin(_gelu(_lin(x, w, layer + "fc1")), w, layer + "fc2"), w, layer + "final_layer_norm")
    return x


def reference_outputs(w, tokens: torch.Tensor, candidates: torch.Tensor):
    """(main features, main scores of ``candidates`` [batch, seq, k], meta controller logits [batch, seq, V])."""
    embeddings = w[G + "embed_tokens.weight"]
    features = reference_encoder(w, G, tokens, embeddings[tokens], HEADS)
    head = _ln(_gelu(_lin(features, w, "decoder.lm_head.dense")), w, "decoder.lm_head.layer_norm")
    scores = torch.einsum("bsd,bskd->bsk", head, embeddings[candidates]) + w["decoder.lm_head.bias.weight"][
        candidates][..., 0]
    projected = _lin(embeddings, w, M + "embed_linear")  # the controller's view of the shared embeddings
    mc = reference_encoder(w, M, tokens, projected[tokens], HEADS // DIVIDER)
    mc_head = _ln(_gelu(_lin(mc, w, "mc.lm_head.dense")), w, "mc.lm_head.layer_norm")
    return features, scores, mc_head @ projected.T + w["decoder.lm_head.bias.weight"][:, 0]


def _write_checkpoint(folder: Path, weights, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dict.txt").write_text("".join(f"{word} {100 - i}\n" for i, word in enumerate(WORDS)))
    settings = dict(arch="mcbert_base", task="mcbert", encoder_layers=LAYERS, encoder_embed_dim=HIDDEN,
                    encoder_ffn_embed_dim=FFN, encoder_attention_heads=HEADS, mc_size_divider=DIVIDER, class_num=10,
                    loss_lamda=50.0, activation_fn="gelu", encoder_normalize_before=False,
                    max_positions=MAX_POSITIONS, dropout=0.1, attention_dropout=0.1, activation_dropout=0.0,
                    data=str(folder))
    args = argparse.Namespace(**{**settings, **extra})
    torch.save({"model": weights, "args": args}, folder / "checkpoint_best.pt")
    return folder / "checkpoint_best.pt"


def _batch():
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(4, VOCAB - 2, (3, 10), generator=g)
    tokens[:, 0] = 0
    tokens[0, -1] = 2
    tokens[1, 6], tokens[1, 7:] = 2, 1  # right padding
    tokens[2, 3], tokens[2, 4:] = 2, 1
    candidates = torch.randint(0, VOCAB, (3, 10, 4), generator=g)
    candidates[..., 0] = VOCAB - 1  # <neither>
    return tokens, candidates


@pytest.mark.parametrize("stacked_attention", [False, True], ids=["q_k_v_proj", "in_proj"])
def test_converted_encoder_and_controller_equal_the_reference(tmp_path, stacked_attention):
    from hf_models import McBertForPreTraining, McBertModel
    from hf_models.mc_bert.objectives import candidate_scores

    weights = _reference_weights(stacked_attention, embedding_normalize=stacked_attention)
    checkpoint = _write_checkpoint(tmp_path / "ref", weights)
    tokens, candidates = _batch()
    keep = tokens.ne(1)
    features, scores, mc_logits = reference_outputs(weights, tokens, candidates)

    # the reference has no pooler (its classification head is new at fine-tuning): load without one here
    encoder = McBertModel.from_pretrained(convert_mcbert_to_hf(checkpoint, tmp_path / "encoder"),
                                          add_pooling_layer=False).eval()
    assert encoder.dtype == torch.float64
    with torch.no_grad():
        got = encoder(tokens, attention_mask=keep.long()).last_hidden_state
    torch.testing.assert_close(got[keep], features[keep], atol=1e-10, rtol=0)

    out = convert_mcbert_to_hf(checkpoint, tmp_path / "full", with_controller=True)
    config = json.loads((out / "config.json").read_text())
    assert (config["num_candidates"], config["mc_loss_weight"], config["mc_size_divider"]) == (10, 50.0, 3)
    assert (config["mask_token_id"], config["neither_token_id"]) == (VOCAB - 2, VOCAB - 1)
    assert config["candidates_with_replacement"] and not config["candidates_exclude_original"]
    model = McBertForPreTraining.from_pretrained(out).eval()
    embeddings = model.get_input_embeddings()
    with torch.no_grad():
        hidden = model.mc_bert(tokens, attention_mask=keep.long()).last_hidden_state
        got_scores = candidate_scores(model.head(hidden[keep]), candidates[keep], embeddings.weight,
                                      model.vocabulary_bias)
        controller = model.meta_controller
        mc_hidden = controller(tokens, embeddings, keep.long())
        got_mc = F.linear(controller.lm_transform(mc_hidden), controller.project(embeddings.weight),
                          model.vocabulary_bias)
    torch.testing.assert_close(hidden[keep], features[keep], atol=1e-10, rtol=0)
    torch.testing.assert_close(got_scores, scores[keep], atol=1e-10, rtol=0)
    torch.testing.assert_close(got_mc[keep], mc_logits[keep], atol=1e-10, rtol=0)
    assert scores[keep].std() > 0.5 and mc_logits[keep].std() > 0.1


def test_tokenizer_of_the_converted_folder(tmp_path):
    from transformers import AutoTokenizer

    import hf_models  # noqa: F401  (registers mc_bert with the Auto classes)

    out = convert_mcbert_to_hf(_write_checkpoint(tmp_path / "ref", _reference_weights(False, False)),
                               tmp_path / "hf")
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer("w0 w3 zzz <mask> <neither>")["input_ids"] == [0, 4, 7, 3, VOCAB - 2, VOCAB - 1, 2]
    assert (tokenizer.mask_token_id, tokenizer.pad_token_id, len(tokenizer)) == (VOCAB - 2, 1, VOCAB)


def test_refusals_name_the_parameter_or_setting(tmp_path, capsys):
    from graftkit.cli import main

    weights = _reference_weights(False, False)
    extra = {**weights, G + "segment_embeddings.weight": torch.zeros(2, HIDDEN, dtype=torch.float64)}
    with pytest.raises(GraftkitError, match=r"checkpoint parameter decoder\.sentence_encoder\.segment_embeddings"
                                            r"\.weight \(2, 12\) has no counterpart"):
        convert_mcbert_to_hf(_write_checkpoint(tmp_path / "a", extra), tmp_path / "out")
    missing = {k: v for k, v in weights.items() if k != M + "layers.1.fc1.weight"}
    with pytest.raises(GraftkitError, match=r"parameter mc\.sentence_encoder\.layers\.1\.fc1\.weight is missing"):
        convert_mcbert_to_hf(_write_checkpoint(tmp_path / "b", missing), tmp_path / "out", with_controller=True)
    untied = {**weights, "mc.lm_head.bias": weights["decoder.lm_head.bias.weight"] * 2}
    with pytest.raises(GraftkitError, match=r"mc\.lm_head\.bias should be a tied copy"):
        convert_mcbert_to_hf(_write_checkpoint(tmp_path / "c", untied), tmp_path / "out", with_controller=True)
    fine_tuned = {k: v for k, v in weights.items() if not k.startswith(("mc.", "decoder.lm_head."))}
    with pytest.raises(GraftkitError, match="no meta controller"):
        convert_mcbert_to_hf(_write_checkpoint(tmp_path / "d", fine_tuned), tmp_path / "out", with_controller=True)
    with pytest.raises(GraftkitError, match="--encoder-normalize-before"):
        convert_mcbert_to_hf(_write_checkpoint(tmp_path / "e", weights, encoder_normalize_before=True),
                             tmp_path / "out")
    assert not (tmp_path / "out").exists()

    checkpoint = _write_checkpoint(tmp_path / "f", weights)
    assert main(["mcbert", "convert", str(checkpoint), str(tmp_path / "hf"), "--with-controller"]) == 0
    assert "McBertForPreTraining" in capsys.readouterr().out
    assert main(["mcbert", "convert", str(checkpoint), str(tmp_path / "hf")]) == 2
    assert "exists and is not empty (give --force to replace it)" in capsys.readouterr().err
    assert main(["mcbert", "convert", str(checkpoint), str(tmp_path / "hf"), "--force"]) == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["McBertModel"]
    (tmp_path / "short.txt").write_text("w0 3\n")
    assert main(["mcbert", "convert", str(checkpoint), str(tmp_path / "x"), "--dict", str(tmp_path / "short.txt")]) == 2
    assert "<mask>, <neither>), but the model has 26 token embeddings" in capsys.readouterr().err
    assert main(["mcbert", "convert", str(tmp_path / "f"), str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == f"graftkit: error: CKPT {tmp_path / 'f'} is a folder, not a file\n"
    assert main(["mcbert", "convert", str(checkpoint), str(tmp_path / "x"), "--dict", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"graftkit: error: --dict {tmp_path} is a folder, not a file\n"
    assert not (tmp_path / "x").exists()
