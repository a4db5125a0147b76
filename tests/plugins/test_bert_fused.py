"""BERT-fused NMT plugin: the fused layers' math, drop-net, frozen BERT, warm start, decoding, bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from graftkit.commands.bertfused import load_plugins
from graftkit.data.parallel import ToyLanguagePair
from graftkit.errors import GraftkitError

load_plugins()

from fairseq import checkpoint_utils, options, tasks  # noqa: E402
from fairseq.modules import MultiheadAttention  # noqa: E402
from fairseq.sequence_generator import SequenceGenerator  # noqa: E402

from plugins.bert_fused.bert_side import load_bert_tokenizer  # noqa: E402
from plugins.bert_fused.model import BertFusedModel, warm_start_from_nmt  # noqa: E402
from plugins.bert_fused.modules import drop_net_weights  # noqa: E402
from plugins.bert_fused.toy import binarize, save_tiny_bert, write_toy_pair  # noqa: E402

DIMS = ["--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
        "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2",
        "--decoder-attention-heads", "2", "--dropout", "0.0"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Tiny BERTs (word-level and WordPiece vocabularies) and binarized toy data, built once."""
    root = tmp_path_factory.mktemp("bert_fused")
    pair = ToyLanguagePair(0)
    mono = pair.monolingual_source(300, seed=5)
    return {"bert": save_tiny_bert(root / "bert", mono, hidden=24, layers=2, heads=2),
            "wordpiece": save_tiny_bert(root / "wp", mono, hidden=20, layers=1, heads=2, tokenizer="wordpiece"),
            "raw": write_toy_pair(root / "raw", pair, {"train": 40, "valid": 8, "test": 8}),
            "data": binarize(root / "raw", root / "bin"), "root": root}


def build(world, *extra: str, arch: str = "bert_fused", bert: str = "bert"):
    argv = [str(world["data"]), "--cpu", *DIMS]
    if arch == "transformer":
        argv += ["--task", "translation", "--arch", "transformer"]
    else:
        argv += ["--task", "translation_bert_fused", "--arch", arch, "--bert-model", str(world[bert]),
                 "--bert-on-the-fly"]
    args = options.parse_args_and_arch(options.get_training_parser(), argv + list(extra))
    task = tasks.setup_task(args)
    return args, task, task.build_model(args)


def batch(task, split: str = "train", n: int = 8) -> dict:
    task.load_dataset(split)
    data = task.dataset(split)
    return data.collater([data[i] for i in range(n)])


# --- drop-net ---------------------------------------------------------------------------------------------

def test_drop_net_ratios_follow_p_net_in_training_and_are_half_at_eval():
    torch.manual_seed(0)
    draws = [drop_net_weights(0.6, training=True) for _ in range(20000)]
    share = {w: draws.count(w) / len(draws) for w in [(1.0, 0.0), (0.0, 1.0), (0.5, 0.5)]}
    assert set(draws) == set(share)
    assert share[(1.0, 0.0)] == pytest.approx(0.3, abs=0.015)
    assert share[(0.0, 1.0)] == pytest.approx(0.3, abs=0.015)
    assert share[(0.5, 0.5)] == pytest.approx(0.4, abs=0.015)
    assert {drop_net_weights(1.0, training=False) for _ in range(200)} == {(0.5, 0.5)}
    assert {drop_net_weights(0.0, training=True) for _ in range(200)} == {(0.5, 0.5)}
    assert {drop_net_weights(1.0, training=True) for _ in range(200)} == {(1.0, 0.0), (0.0, 1.0)}


def test_drop_net_is_drawn_once_per_layer_per_forward_and_selects_a_whole_branch(world):
    _, task, model = build(world, "--drop-net", "1.0")
    sample = batch(task)
    model.train()
    attention = model.encoder.layers[0].self_attn
    x = torch.randn(5, 3, 16)
    memory = model.encoder.encode_bert(sample["net_input"]["bert_input"][:3])
    attention.memory = memory
    host, _ = MultiheadAttention.forward(attention, x, x, x)
    bert = attention.bert_attn(x, memory)
    seen = set()
    for _ in range(30):
        out, _ = attention(x, x, x)
        expected = host if attention.last_weights == (1.0, 0.0) else bert
        torch.testing.assert_close(out, expected)
        seen.add(attention.last_weights)
    assert seen == {(1.0, 0.0), (0.0, 1.0)}
    attention.memory = None


def test_branch_ratios_replace_the_half_half_mix_where_drop_net_keeps_both_branches(world):
    torch.manual_seed(0)
    ratios = (1.0, 0.8)  # the reference code's mix without drop-net: not summing to 1
    assert {drop_net_weights(0.0, training=True, ratios=ratios) for _ in range(50)} == {ratios}
    assert {drop_net_weights(1.0, training=False, ratios=ratios) for _ in range(50)} == {ratios}
    assert {drop_net_weights(0.5, training=True, ratios=ratios) for _ in range(400)} == {(1.0, 0.0), (0.0, 1.0),
                                                                                         ratios}
    _, task, model = build(world, "--encoder-ratio", "1.0", "--bert-ratio", "0.8")
    model.eval()
    attention = model.encoder.layers[0].self_attn
    memory = model.encoder.encode_bert(batch(task)["net_input"]["bert_input"][:3])
    x = torch.randn(5, 3, 16)
    attention.memory = memory
    host, _ = MultiheadAttention.forward(attention, x, x, x)
    torch.testing.assert_close(attention(x, x, x)[0], 1.0 * host + 0.8 * attention.bert_attn(x, memory))
    attention.memory = None
    _, _, default = build(world)
    assert {m.ratios for m in default.modules() if hasattr(m, "ratios")} == {(0.5, 0.5)}  # today's mix
    with pytest.raises(GraftkitError, match="--bert-ratio must be a finite number"):
        build(world, "--bert-ratio", "nan")


def test_mask_cls_sep_hides_cls_and_sep_from_the_bert_attentions_only(world):
    _, task, plain = build(world)
    _, _, masked = build(world, "--mask-cls-sep")
    masked.load_state_dict(plain.state_dict())
    bert_input = batch(task)["net_input"]["bert_input"]
    tokenizer = task.bert_tokenizer
    special = bert_input.eq(tokenizer.cls_token_id) | bert_input.eq(tokenizer.sep_token_id)
    plain_memory, masked_memory = plain.encoder.encode_bert(bert_input), masked.encoder.encode_bert(bert_input)
    assert special.any(1).all()
    torch.testing.assert_close(masked_memory.out, plain_memory.out)  # BERT itself still reads [CLS] and [SEP]
    assert torch.equal(plain_memory.padding_mask, bert_input.eq(tokenizer.pad_token_id))
    assert torch.equal(masked_memory.padding_mask, plain_memory.padding_mask | special)


@pytest.mark.parametrize("pre_ln", [False, True])
def test_encoder_and_decoder_layers_average_host_and_bert_attention(world, pre_ln):
    flags = ["--encoder-normalize-before", "--decoder-normalize-before"] if pre_ln else []
    _, task, model = build(world, *flags)
    model.eval()
    sample = batch(task)
    memory = model.encoder.encode_bert(sample["net_input"]["bert_input"])
    x = torch.randn(6, 8, 16)
    mask = torch.zeros(8, 6, dtype=torch.bool)

    layer = model.encoder.layers[0]
    layer.self_attn.memory = memory
    h = layer.self_attn_layer_norm(x) if pre_ln else x
    self_attn, _ = MultiheadAttention.forward(layer.self_attn, h, h, h, key_padding_mask=mask)
    bert_attn = layer.self_attn.bert_attn(h, memory)
    h = x + 0.5 * (self_attn + bert_attn)  # h~ = ½(SelfAttn + BertAttn), then residual
    h = h if pre_ln else layer.self_attn_layer_norm(h)
    f = layer.final_layer_norm(h) if pre_ln else h
    out = h + layer.fc2(torch.relu(layer.fc1(f)))
    out = out if pre_ln else layer.final_layer_norm(out)
    torch.testing.assert_close(layer(x, encoder_padding_mask=mask), out)
    layer.self_attn.memory = None

    dec = model.decoder.layers[0]
    enc = torch.randn(6, 8, 16)
    s = torch.randn(4, 8, 16)
    dec.encoder_attn.memory = memory
    got, _, _ = dec(s, enc, mask, self_attn_mask=model.decoder.buffered_future_mask(s))
    self_out, _ = dec.self_attn(dec.self_attn_layer_norm(s) if pre_ln else s, *(2 * [dec.self_attn_layer_norm(s)
                                if pre_ln else s]), attn_mask=model.decoder.buffered_future_mask(s))
    y = s + self_out
    y = y if pre_ln else dec.self_attn_layer_norm(y)
    q = dec.encoder_attn_layer_norm(y) if pre_ln else y
    enc_attn, _ = MultiheadAttention.forward(dec.encoder_attn, q, enc, enc, key_padding_mask=mask, static_kv=True)
    bert_attn = dec.encoder_attn.bert_attn(q, memory)
    y = y + 0.5 * (bert_attn + enc_attn)  # s~ = ½(BertAttn + EncAttn), then residual
    y = y if pre_ln else dec.encoder_attn_layer_norm(y)
    f = dec.final_layer_norm(y) if pre_ln else y
    expected = y + dec.fc2(torch.relu(dec.fc1(f)))
    expected = expected if pre_ln else dec.final_layer_norm(expected)
    torch.testing.assert_close(got, expected)
    dec.encoder_attn.memory = None


def test_bad_drop_net_output_layer_and_task_are_clear_errors(world):
    with pytest.raises(GraftkitError, match="drop-net"):
        build(world, "--drop-net", "1.5")
    with pytest.raises(GraftkitError, match="bert-output-layer"):
        build(world, "--bert-output-layer", "7")
    # the arch stops while the arguments are parsed, before any data is read
    with pytest.raises(GraftkitError, match="needs --task translation_bert_fused"):
        options.parse_args_and_arch(options.get_training_parser(), [
            "/nonexistent", "--cpu", "--task", "translation", "--arch", "bert_fused", *DIMS])
    # and the model itself refuses a task that cannot feed BERT
    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(world["data"]), "--cpu", "--task", "translation", "--arch", "transformer", *DIMS])
    with pytest.raises(GraftkitError, match="needs --task translation_bert_fused"):
        BertFusedModel.build_model(args, tasks.setup_task(args))


# --- BERT: frozen by default, its output layer, two vocabularies ---------------------------------------------

def test_frozen_bert_gets_no_gradient_and_finetune_bert_does(world):
    for flags, bert_trains in (((), False), (("--finetune-bert",), True)):
        _, task, model = build(world, *flags)
        model.train()
        sample = batch(task)
        logits, _ = model(**sample["net_input"])
        logits.float().logsumexp(-1).mean().backward()
        bert_grads = [p.grad for p in model.encoder.bert.parameters()]
        assert all(p.requires_grad == bert_trains for p in model.encoder.bert.parameters())
        assert model.encoder.bert.training == bert_trains  # a frozen BERT also runs without dropout
        if bert_trains:
            assert any(g is not None and g.abs().sum() > 0 for g in bert_grads)
        else:
            assert all(g is None for g in bert_grads)
        fused = [p.grad for n, p in model.named_parameters() if ".bert_attn." in n]
        assert fused and all(g is not None for g in fused)


def test_non_finite_bert_output_is_an_error(world):
    _, task, model = build(world)
    with torch.no_grad():
        model.encoder.bert.embeddings.word_embeddings.weight[5:] = float("nan")
    with pytest.raises(GraftkitError, match="non-finite"):
        model(**batch(task)["net_input"])


@pytest.mark.parametrize("layer, hidden_state", [(0, 1), (1, 2), (-1, 2), (-2, 1)])
def test_bert_output_layer_counts_layer_outputs_as_bert_nmt(world, layer, hidden_state):
    """bert-nmt indexes BERT's layer outputs only: N = 0 is the first layer's output, -1 the last, -L the first.

    The tiny BERT has 2 layers, so HF's hidden_states are (embeddings, layer 1, layer 2).
    """
    _, task, model = build(world, "--bert-output-layer", str(layer))
    model.eval()
    ids = batch(task)["net_input"]["bert_input"]
    memory = model.encoder.encode_bert(ids)
    states = model.encoder.bert(input_ids=ids, attention_mask=ids.ne(model.encoder.bert_pad_idx).long(),
                                output_hidden_states=True).hidden_states
    assert len(states) == 3
    torch.testing.assert_close(memory.out, states[hidden_state].transpose(0, 1))
    assert not torch.allclose(memory.out, states[0].transpose(0, 1)), "the embeddings are never selected"


@pytest.mark.parametrize("layer", ["2", "-3"])
def test_bert_output_layer_out_of_range_names_the_valid_range(world, layer):
    with pytest.raises(GraftkitError, match=r"--bert-output-layer .*\(use -2\.\.1"):
        build(world, "--bert-output-layer", layer)


def test_two_different_vocabularies_train(world):
    """NMT source/target dictionaries (words) and a WordPiece BERT vocabulary of another size and split."""
    _, task, model = build(world, bert="wordpiece")
    tokenizer = task.bert_tokenizer
    assert len(tokenizer) != len(task.source_dictionary)
    sample = batch(task)
    source = task.source_dictionary.string(sample["net_input"]["src_tokens"][0][
        sample["net_input"]["src_tokens"][0].ne(task.source_dictionary.pad())])
    bert_ids = sample["net_input"]["bert_input"][0]
    text = tokenizer.decode(bert_ids[bert_ids.ne(tokenizer.pad_token_id)], skip_special_tokens=True)
    assert text.replace(" ", "") == source.replace(" ", "")
    optimizer = torch.optim.Adam(p for p in model.parameters() if p.requires_grad)
    model.train()
    losses = []
    for _ in range(8):
        logits, _ = model(**sample["net_input"])
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), sample["target"],
                                                 ignore_index=task.target_dictionary.pad())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# --- warm start ------------------------------------------------------------------------------------------

def save_fairseq_checkpoint(model, args, path: Path) -> Path:
    """The layout fairseq-train writes (model weights, args, optimizer history)."""
    history = [{"criterion_name": "CrossEntropyCriterion", "optimizer_name": "Adam", "num_updates": 0,
                "lr_scheduler_state": {"best": None}}]
    checkpoint_utils.torch_persistent_save({"model": model.state_dict(), "args": args, "optimizer_history": history,
                                            "extra_state": {}, "last_optimizer_state": {}}, str(path))
    return path


def test_warm_start_missing_keys_are_exactly_the_bert_attn_ones(world, tmp_path):
    nmt_args, _, nmt = build(world, arch="transformer")
    ckpt = save_fairseq_checkpoint(nmt, nmt_args, tmp_path / "nmt.pt")
    _, _, model = build(world, "--warmup-from-nmt", str(ckpt))
    bert_attn_keys = sorted(k for k in model.state_dict() if ".bert_attn." in k)
    assert warm_start_from_nmt(model, ckpt) == bert_attn_keys
    assert len(bert_attn_keys) == 4 * 2 * 4  # (q, k, v, out) × (weight, bias) × 4 fused layers
    own = model.state_dict()
    for key, value in nmt.state_dict().items():
        torch.testing.assert_close(own[key], value)


def test_warm_start_mismatch_is_an_error_not_a_silent_skip(world, tmp_path):
    args, _, other = build(world, "--encoder-ffn-embed-dim", "24", arch="transformer")
    ckpt = save_fairseq_checkpoint(other, args, tmp_path / "other.pt")
    with pytest.raises(GraftkitError, match="shape mismatch.*fc1"):
        build(world, "--warmup-from-nmt", str(ckpt))
    with pytest.raises(GraftkitError, match="not found"):
        build(world, "--warmup-from-nmt", str(tmp_path / "missing.pt"))
    (tmp_path / "random.pt").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(GraftkitError) as info:
        build(world, "--warmup-from-nmt", str(tmp_path / "random.pt"))
    assert str(info.value) == (f"cannot read {tmp_path / 'random.pt'}: not a fairseq checkpoint "
                               "(not a file written by torch.save)")  # and never torch's weights_only advice


# --- decoding --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fold", [False, True], ids=["projections", "folded"])
def test_incremental_decoding_equals_full_decoding(world, fold):
    _, task, model = build(world, "--drop-net", "1.0")
    model.eval()
    for layer in model.decoder.layers:
        layer.encoder_attn.bert_attn.fold_projections = fold
    sample = batch(task)
    net = sample["net_input"]
    encoder_out = model.encoder(net["src_tokens"], net["src_lengths"], bert_input=net["bert_input"])
    prev = net["prev_output_tokens"]
    full, _ = model.decoder(prev, encoder_out=encoder_out)
    state: dict = {}
    steps = [model.decoder(prev[:, :t + 1], encoder_out=encoder_out, incremental_state=state)[0]
             for t in range(prev.size(1))]
    real = prev.ne(task.target_dictionary.pad())  # padded steps differ by construction: compare the rest
    torch.testing.assert_close(torch.cat(steps, dim=1)[real], full[real], atol=1e-5, rtol=1e-4)
    # the BERT branch cached its keys/values once, from H_B: keys (B, heads, head_dim, T_bert), or with the
    # query projection folded in (B, C, heads·T_bert)
    cached = model.decoder.layers[0].encoder_attn.bert_attn._get_input_buffer(state)
    length = net["bert_input"].size(1)
    if fold:
        assert cached["key_q"].shape == (8, 16, 2 * length) and cached["value_o"].shape == (8, 2 * length, 16)
    else:
        assert cached["key_t"].shape == (8, 2, 8, length) and "key_q" not in cached


def bert_attention_and_memory(world, sentences: int = 3):
    """A decoder layer's BertAttention and H_B of ``sentences`` sentences whose BERT side has padding."""
    _, task, model = build(world)
    model.eval()
    sample = batch(task)
    memory = model.encoder.encode_bert(sample["net_input"]["bert_input"][:sentences])
    assert memory.padding_mask.any() and not memory.padding_mask.all(-1).any()
    return model.decoder.layers[0].encoder_attn.bert_attn, memory


def test_bert_attention_equals_fairseq_attention_with_gradients(world):
    attention, memory = bert_attention_and_memory(world)
    attention.train()  # --attention-dropout 0: the training path, with autograd
    x = torch.randn(4, 3, 16, requires_grad=True)
    ours = attention(x, memory)
    host, _ = MultiheadAttention.forward(attention, x, memory.out, memory.out,
                                         key_padding_mask=memory.padding_mask, static_kv=True)
    torch.testing.assert_close(ours, host)
    weights = [attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight, attention.out_proj.bias]
    grads_ours = torch.autograd.grad(ours.square().sum(), [x, *weights])
    grads_host = torch.autograd.grad(host.square().sum(), [x, *weights])
    for a, b in zip(grads_ours, grads_host):
        torch.testing.assert_close(a, b)


def expand(memory, order: torch.Tensor):
    """H_B as beam search hands it over: hypothesis i reads sentence ``order[i]``."""
    return memory.reorder(order)


@pytest.mark.parametrize("fold", [False, True], ids=["projections", "folded"])
def test_beam_hint_caches_once_per_sentence_and_changes_no_result(world, fold):
    attention, memory = bert_attention_and_memory(world)
    attention.fold_projections = fold
    attention.set_beam_size(4)
    hypotheses = torch.arange(3).repeat_interleave(4)  # 3 sentences x 4 beams, as fairseq lays them out
    state: dict = {}
    x = torch.randn(1, 12, 16)
    expected = attention(x, expand(memory, hypotheses))  # no cache: one row per hypothesis
    torch.testing.assert_close(attention(x, expand(memory, hypotheses), state), expected)

    def cache():
        return attention._get_input_buffer(state)

    assert cache()["bias"].size(0) == 3 and int(cache()["group"]) == 4
    assert ("key_q" in cache()) == fold
    steps = [("beams reordered within their sentences", torch.tensor([1, 0, 3, 2, 4, 4, 5, 6, 11, 8, 9, 10]), 3, 4),
             ("sentence 1 finished", torch.tensor([0, 1, 2, 3, 8, 9, 10, 11]), 2, 4),
             ("an arbitrary reorder", torch.tensor([0, 4, 5, 1, 2, 6, 7, 3]), 8, 1)]
    for what, new_order, rows, group in steps:
        hypotheses = hypotheses.index_select(0, new_order)
        attention.reorder_incremental_state(state, new_order)
        assert (cache()["bias"].size(0), int(cache()["group"])) == (rows, group), what
        x = torch.randn(1, len(new_order), 16)
        current = expand(memory, hypotheses)  # what the decoder hands over (unused once cached)
        torch.testing.assert_close(attention(x, current, state), attention(x, current), msg=what)


def test_projections_fold_into_the_cache_only_for_grouped_short_memories(world):
    attention, _ = bert_attention_and_memory(world)  # C = 16, 2 heads: 2·T <= group·16/16 and 2·T < 16 + T
    assert attention._folds(2, group=5) and not attention._folds(3, group=5)
    assert not attention._folds(2, group=1)  # one row per hypothesis: a heads-times larger cache per query
    assert attention._folds(15, group=40) and not attention._folds(16, group=40)  # more multiply-adds from 16
    attention.fold_projections = False
    assert not attention._folds(2, group=5)


def test_a_stale_beam_hint_falls_back_to_one_row_per_hypothesis(world):
    attention, memory = bert_attention_and_memory(world, sentences=4)
    attention.set_beam_size(2)  # left over from an earlier beam search; now 4 distinct sentences, greedy
    memory = memory.reorder(torch.arange(4))  # as fairseq hands them over at beam size 1
    state: dict = {}
    x = torch.randn(1, 4, 16)
    torch.testing.assert_close(attention(x, memory, state), attention(x, memory))
    assert int(attention._get_input_buffer(state)["group"]) == 1


def test_bert_memory_reorders_compose_and_gather_once(world):
    _, memory = bert_attention_and_memory(world)
    first, then = torch.tensor([2, 2, 0, 1]), torch.tensor([3, 0, 0, 2])
    reordered = memory.reorder(first).reorder(then)
    assert reordered.out is memory.out  # reorders move indices, not H_B
    out, pad = reordered.gather()
    torch.testing.assert_close(out, memory.out.index_select(1, first[then]))
    assert torch.equal(pad, memory.padding_mask.index_select(0, first[then]))
    assert memory.reorder(torch.tensor([0, 0, 1, 1])).group_size(2) == 2
    assert memory.reorder(torch.tensor([0, 1, 1, 1])).group_size(2) == 1


def test_beam_search_with_reordered_bert_outputs_matches_batch_size_one(world):
    _, task, model = build(world)
    model.eval()
    sample = batch(task, "test", 4)
    generator = SequenceGenerator([model], task.target_dictionary, beam_size=5, max_len_a=0, max_len_b=8)
    together = generator.generate([model], sample)
    data = task.dataset("test")
    for row, sentence_id in enumerate(sample["id"].tolist()):
        alone = generator.generate([model], data.collater([data[sentence_id]]))
        for a, b in zip(together[row], alone[0]):
            assert a["tokens"].tolist() == b["tokens"].tolist()
            assert a["score"].item() == pytest.approx(b["score"].item(), abs=1e-4)


def test_bert_runs_once_per_batch_in_beam_search(world, monkeypatch):
    _, task, model = build(world)
    model.eval()
    calls = []
    forward = model.encoder.bert.forward
    monkeypatch.setattr(model.encoder.bert, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    generator = SequenceGenerator([model], task.target_dictionary, beam_size=5, max_len_a=0, max_len_b=10)
    generator.generate([model], batch(task, "test", 4))
    assert len(calls) == 1


# --- bad input ---------------------------------------------------------------------------------------------

def test_missing_bert_path_and_tokenizer_model_mismatch(world, tmp_path):
    with pytest.raises(GraftkitError, match="BERT model path not found"):
        load_bert_tokenizer(tmp_path / "nowhere")
    from transformers import BertConfig

    mismatch = tmp_path / "mismatch"
    load_bert_tokenizer(world["bert"]).save_pretrained(mismatch)
    BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2).save_pretrained(mismatch)
    with pytest.raises(GraftkitError, match="tokenizer/model mismatch"):
        load_bert_tokenizer(mismatch)


def test_missing_bert_side_split_is_named(world):
    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(world["data"]), "--cpu", "--task", "translation_bert_fused", "--arch", "bert_fused",
        "--bert-model", str(world["bert"]), *DIMS])
    task = tasks.setup_task(args)
    with pytest.raises(GraftkitError, match="BERT-side data missing for split 'valid'.*graftkit bertnmt prepare"):
        task.load_dataset("valid")


def test_prepare_writes_the_bert_side_and_truncates_with_a_count(world, tmp_path, capsys, caplog):
    import shutil

    from graftkit.cli import main

    data = shutil.copytree(world["data"], tmp_path / "bin")
    raw = world["raw"]
    code = main(["bertnmt", "prepare", "--bert-model", str(world["bert"]), "--source-lang", "src",
                 "--trainpref", str(raw / "train"), "--validpref", str(raw / "valid"), "--destdir", str(data)])
    assert code == 0
    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(data), "--cpu", "--task", "translation_bert_fused", "--arch", "bert_fused",
        "--bert-model", str(world["bert"]), *DIMS])
    task = tasks.setup_task(args)
    task.load_dataset("valid")
    prepared = task.dataset("valid")
    fly = build(world)[1]
    fly.load_dataset("valid")
    unk = task.bert_tokenizer.unk_token_id
    kept_oov = 0
    for i in range(len(prepared)):
        exact, decoded = prepared[i]["bert_source"], fly.dataset("valid")[i]["bert_source"]
        # on the fly, a word missing from the NMT dictionary reaches BERT as [UNK]; prepared data keeps it
        assert exact.shape == decoded.shape and bool(((exact == decoded) | (decoded == unk)).all())
        kept_oov += int(((decoded == unk) & (exact != unk)).sum())
    assert kept_oov > 0
    with caplog.at_level(logging.WARNING):
        assert main(["bertnmt", "prepare", "--bert-model", str(world["bert"]), "--source-lang", "src",
                     "--validpref", str(raw / "valid"), "--destdir", str(data), "--max-length", "6"]) == 0
    assert "were truncated" in capsys.readouterr().out
    assert "truncated" in caplog.text
    assert len(task.dataset("valid")) == 8
    task.load_dataset("valid")
    assert max(len(task.dataset("valid")[i]["bert_source"]) for i in range(8)) == 6
    assert main(["bertnmt", "prepare", "--bert-model", str(tmp_path / "no-bert"), "--source-lang", "src",
                 "--validpref", str(raw / "valid"), "--destdir", str(data)]) == 2


def test_prepare_with_an_empty_source_fails_and_keeps_the_earlier_output(world, tmp_path, capsys):
    """An empty split is an error, and no split is replaced unless every split is written (all or nothing)."""
    from graftkit.cli import main

    data, raw = tmp_path / "bin", world["raw"]
    data.mkdir()
    prepare = ["bertnmt", "prepare", "--bert-model", str(world["bert"]), "--source-lang", "src", "--destdir",
               str(data)]
    assert main([*prepare, "--trainpref", str(raw / "train"), "--validpref", str(raw / "valid")]) == 0
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    assert {"train.bert.src.bin", "train.bert.src.idx", "valid.bert.src.bin"} <= set(before)
    empty = tmp_path / "empty"
    (tmp_path / "empty.src").write_text("")
    capsys.readouterr()
    for splits in (["--trainpref", str(empty)], ["--validpref", str(raw / "valid"), "--testpref", str(empty)]):
        assert main([*prepare, *splits]) == 2
        captured = capsys.readouterr()
        assert captured.err == f"graftkit: error: source text is empty: {empty}.src (nothing was written)\n"
        assert captured.out == ""
        assert {p.name: p.read_bytes() for p in data.iterdir()} == before
