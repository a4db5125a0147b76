"""BERT-fused attention and layers (Zhu et al., ICLR 2020), built from fairseq's own modules.

Encoder layer l (the host's post- or pre-LN layer, with its self-attention replaced):

    h̃ = ½·[SelfAttn(h^{l-1}) + BertAttn(h^{l-1}, H_B)]   → dropout, residual, LN, FFN as in the host

Decoder layer l (the host's layer, with its encoder attention replaced):

    s̃ = ½·[BertAttn(ŝ, H_B) + EncAttn(ŝ, H_E)]          → dropout, residual, LN, FFN as in the host

Drop-net (training only, sampled once per layer per forward): with probability p_net/2 the mix is
(1, 0) (host branch only), with p_net/2 it is (0, 1) (BERT branch only), otherwise (½, ½). Inference
always uses (½, ½). ``p_net`` is the paper's; the reference code's ``--encoder-bert-dropout-ratio`` is p_net/2.

The (½, ½) mix is the default of ``--encoder-ratio`` / ``--bert-ratio`` (host weight, BERT weight): the reference
code (bert-nmt) has both options, and without its drop-net it weights the branches by them (its defaults 1, 1:
the branches summed), which checkpoints converted from it keep.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from fairseq.modules import MultiheadAttention
from fairseq.modules.transformer_layer import TransformerDecoderLayerBase, TransformerEncoderLayerBase
from torch import Tensor

from graftkit.errors import GraftkitError


def check_drop_net(p_net: float) -> float:
    """Validate the paper's p_net: a probability in [0, 1]."""
    p_net = float(p_net)
    if not 0.0 <= p_net <= 1.0:
        raise GraftkitError(f"--drop-net must be in [0, 1] (the paper's p_net), got {p_net}")
    return p_net


def check_ratio(name: str, value: float) -> float:
    """A branch weight (``--encoder-ratio``, ``--bert-ratio``): any finite number, as in the reference code."""
    value = float(value)
    if not math.isfinite(value):
        raise GraftkitError(f"{name} must be a finite number, got {value}")
    return value


def drop_net_weights(p_net: float, training: bool, ratios: tuple[float, float] = (0.5, 0.5)) -> tuple[float, float]:
    """(host weight, BERT weight) for one layer and one forward pass.

    Training: (1, 0) with probability p_net/2, (0, 1) with p_net/2, ``ratios`` otherwise. Eval: ``ratios``
    (the paper's (½, ½) by default).
    """
    if not training or p_net == 0.0:
        return ratios
    u = float(torch.rand(()))  # CPU generator: seeded by fairseq per update, no device sync
    if u < p_net / 2:
        return 1.0, 0.0
    if u < p_net:
        return 0.0, 1.0
    return ratios


def mix_branches(host: Tensor, bert: Tensor, weights: tuple[float, float]) -> Tensor:
    """w_host·host + w_bert·bert. Weights summing to 1 (the paper's mix, every drop-net draw) take ``lerp``, one
    kernel, exact at weights 0 and 1; other ratios (the reference code's default sums the branches) a weighted
    sum. A branch with weight 0 stays in the graph: every parameter gets a gradient on every step, so fairseq's
    DDP needs no --find-unused-parameters."""
    host_weight, bert_weight = weights
    if host_weight + bert_weight == 1.0:
        return torch.lerp(host, bert, bert_weight)
    return torch.add(host * host_weight, bert, alpha=bert_weight)


def softmax_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision scores (as fairseq's attention), the scores' own dtype when wider (float64)."""
    return torch.promote_types(dtype, torch.float32)


@dataclass
class BertMemory:
    """H_B as the fused attentions read it: BERT's ``out`` (T_bert, N, C_bert) and ``padding_mask`` (N, T_bert)
    for N sentences, and ``order``: hypothesis i reads sentence ``order[i]`` (None: sentence i).

    Beam search reorders hypotheses every step; only ``order`` follows (:meth:`reorder`), because the BERT
    attentions read H_B once, when they build their caches (:meth:`gather`).
    """

    out: Tensor
    padding_mask: Tensor
    order: Tensor | None = None

    def reorder(self, new_order: Tensor) -> BertMemory:
        """Hypothesis i now continues hypothesis ``new_order[i]``."""
        order = new_order if self.order is None else self.order.index_select(0, new_order)
        return BertMemory(self.out, self.padding_mask, order)

    def group_size(self, group: int) -> int:
        """``group`` where each run of ``group`` consecutive hypotheses reads one sentence, else 1."""
        if group <= 1 or self.order is None or self.order.numel() % group:
            return 1
        runs = self.order.view(-1, group)
        return group if torch.equal(runs, runs[:, :1].expand_as(runs)) else 1

    def gather(self, group: int = 1) -> tuple[Tensor, Tensor]:
        """H_B (T_bert, rows, C_bert) and its padding mask for every ``group``-th hypothesis."""
        if self.order is None:
            return self.out[:, ::group], self.padding_mask[::group]
        rows = self.order[::group]
        return self.out.index_select(1, rows), self.padding_mask.index_select(0, rows)


class BertAttention(MultiheadAttention):
    """BertAttn(x, H_B): multi-head attention from the NMT stream to BERT's output.

    Parameters, initialisation and names are fairseq's encoder-decoder attention's; the forward is its own,
    because in beam search this attention runs once per decoder layer per step, and two measured costs of the
    host's path dominate there on CPU (width 64, 80 hypotheses): its per-hypothesis keys/values, and
    ``Tensor.softmax`` over short rows (52 µs for 640 rows of 10, vs 13 µs composed from ``exp``).

    In incremental decoding keys/values are computed from H_B once and cached. All hypotheses of a sentence
    share H_B, so with fairseq's beam-size hint (:meth:`set_beam_size`) they are cached once per sentence and
    the hypotheses' queries are stacked into one longer query; the hint is checked against beam search's order of
    hypotheses at the first step (each run of ``beam`` hypotheses must read one sentence) and the grouping
    survives only reorders that keep it, so the hint changes speed, never results.

    The cache also folds the query and output projections into the keys and values when that is cheaper per
    step, by associativity (per head h, with scale s): ``(W_q x + b_q)·s K_hᵀ = x·(s W_qhᵀ K_hᵀ) + s b_qh K_hᵀ`` and
    ``W_o [Σ_t α_ht V_ht]_h + b_o = Σ_ht α_ht (W_oh V_ht) + b_o``. A step then costs 2·heads·C·T_bert
    multiply-adds per hypothesis instead of 2·C² + 2·C·T_bert, but it reads a cache ``heads`` times larger, once
    per sentence, with ``group`` queries each: memory-bound, where the unfolded projections are two
    compute-bound matrix products. So the cache folds only where a sentence's hypotheses share a row and
    heads·T_bert ≤ group·C/16 (16 ≈ 4 bytes per float × this CPU's ~80 GMAC/s over ~20 GB/s; measured: IWSLT
    width, beam 5, T_bert 12 folded 211 vs 712 µs per step, while greedy decoding, 8 heads × 60 tokens or 4 × 150
    ran slower folded). ``fold_projections`` (None: by that rule) lets tests pin either path; training (no
    incremental state) always runs the host's order of operations.
    """

    fold_projections: bool | None = None

    def __init__(self, embed_dim: int, num_heads: int, *, bert_dim: int, dropout: float = 0.0,
                 q_noise: float = 0.0, qn_block_size: int = 8) -> None:
        super().__init__(embed_dim, num_heads, kdim=bert_dim, vdim=bert_dim, dropout=dropout,
                         encoder_decoder_attention=True, q_noise=q_noise, qn_block_size=qn_block_size)

    def _split_heads(self, x: Tensor) -> Tensor:
        """(T, B, C) → (B, heads, T, head_dim)."""
        return x.view(x.size(0), x.size(1), self.num_heads, self.head_dim).permute(1, 2, 0, 3)

    def _keys_values(self, memory: BertMemory, group: int) -> dict[str, Tensor]:
        out, pad = memory.gather(group)
        # contiguous: the per-step batched matmuls were 8x slower on the strided views
        return {"key_t": self._split_heads(self.k_proj(out) * self.scaling).transpose(2, 3).contiguous(),  # B,h,d,T
                "value": self._split_heads(self.v_proj(out)).contiguous(),  # (B, h, T, d)
                "bias": torch.zeros(pad.shape, dtype=out.dtype, device=out.device).masked_fill(
                    pad, float("-inf"))[:, None, None, :],  # (B, 1, 1, T): -inf on BERT's padding
                "group": torch.tensor(group)}

    def _folds(self, length: int, group: int) -> bool:
        if self.fold_projections is not None:
            return self.fold_projections
        folded = self.num_heads * length  # cached keys per row, per query feature
        return group > 1 and folded < self.embed_dim + length and 16 * folded <= group * self.embed_dim

    def _fold(self, cache: dict[str, Tensor]) -> dict[str, Tensor]:
        """Keys/values with the query and output projections folded in (see the class docstring)."""
        key_t, value = cache["key_t"], cache["value"]  # (B, h, d, T), (B, h, T, d)
        rows, heads, head_dim, length = key_t.shape
        w_q = self.q_proj.weight.view(heads, head_dim, self.embed_dim)
        w_o = self.out_proj.weight.view(self.embed_dim, heads, head_dim)
        query_bias = torch.einsum("hd,bhdt->bht", self.q_proj.bias.view(heads, head_dim), key_t)
        return {"key_q": torch.einsum("hdc,bhdt->bcht", w_q, key_t).reshape(rows, self.embed_dim, heads * length),
                "value_o": torch.einsum("chd,bhtd->bhtc", w_o, value).reshape(rows, heads * length, self.embed_dim),
                "bias": (cache["bias"].view(rows, 1, length) + query_bias).reshape(rows, 1, heads * length),
                "group": cache["group"]}

    def _folded_forward(self, query: Tensor, cache: dict[str, Tensor], group: int) -> Tensor:
        tgt_len, bsz, dim = query.shape
        x = query.transpose(0, 1).reshape(-1, group * tgt_len, dim)  # a sentence's hypotheses: one row
        scores = torch.baddbmm(cache["bias"], x, cache["key_q"])  # (rows, group·tgt, heads·T)
        scores = scores.to(softmax_dtype(scores.dtype))
        scores = scores.view(*scores.shape[:2], self.num_heads, -1)
        weights = (scores - scores.amax(-1, keepdim=True)).exp()
        weights = self.dropout_module((weights / weights.sum(-1, keepdim=True)).type_as(x))
        out = torch.baddbmm(self.out_proj.bias, weights.flatten(2), cache["value_o"])
        return out.view(bsz, tgt_len, dim).transpose(0, 1)

    def forward(self, query: Tensor, memory: BertMemory,
                incremental_state: dict[str, dict[str, Tensor | None]] | None = None) -> Tensor:
        tgt_len, bsz, _ = query.shape
        if incremental_state is None:
            cache = self._keys_values(memory, 1)
        else:
            cache = self._get_input_buffer(incremental_state)
            if "group" not in cache:
                group = memory.group_size(self.beam_size)
                cache = self._keys_values(memory, group)
                if self._folds(memory.out.size(0), group):
                    cache = self._fold(cache)
                self._set_input_buffer(incremental_state, cache)
        group = int(cache["group"])
        if "key_q" in cache:
            return self._folded_forward(query, cache, group)
        q = self._split_heads(self.q_proj(query))  # (bsz, h, T, d)
        if group > 1:  # a sentence's hypotheses become one longer query over its keys
            q = q.reshape(-1, group, self.num_heads, tgt_len, self.head_dim).transpose(1, 2).reshape(
                -1, self.num_heads, group * tgt_len, self.head_dim)
        scores = torch.matmul(q, cache["key_t"]) + cache["bias"]
        scores = scores.to(softmax_dtype(scores.dtype))  # half precision: softmax in float32, as the host's
        weights = (scores - scores.amax(-1, keepdim=True)).exp()
        weights = self.dropout_module((weights / weights.sum(-1, keepdim=True)).type_as(q))
        out = torch.matmul(weights, cache["value"])
        if group > 1:
            out = out.view(-1, self.num_heads, group, tgt_len, self.head_dim).transpose(1, 2)
        return self.out_proj(out.reshape(bsz, self.num_heads, tgt_len, self.head_dim).permute(2, 0, 1, 3)
                             .reshape(query.shape))

    def reorder_incremental_state(self, incremental_state: dict[str, dict[str, Tensor | None]],
                                  new_order: Tensor) -> dict[str, dict[str, Tensor | None]]:
        """Hypothesis i now continues old hypothesis ``new_order[i]``, which read cached row old // group."""
        cache = self._get_input_buffer(incremental_state)
        if "group" not in cache:
            return incremental_state
        group = int(cache["group"])
        rows = new_order // group
        if group > 1:
            grouped = rows.view(-1, group) if rows.numel() % group == 0 else None
            if grouped is not None and torch.equal(grouped, grouped[:, :1].expand_as(grouped)):
                rows = grouped[:, 0]  # still whole sentences: keep one row each
                unchanged = torch.arange(cache["bias"].size(0), device=rows.device)
                if rows.shape == unchanged.shape and torch.equal(rows, unchanged):
                    return incremental_state  # beams reordered within their sentences: the rows stay
            else:
                group = 1  # an arbitrary reorder: one row per hypothesis from now on
        reordered = {name: tensor.index_select(0, rows) for name, tensor in cache.items() if name != "group"}
        return self._set_input_buffer(incremental_state, {**reordered, "group": torch.tensor(group)})


class BertFusedAttention(MultiheadAttention):
    """The host attention (self- or encoder-attention) averaged with an attention over BERT's output.

    The module's own parameters are the host attention's, under the host's names, so a plain transformer
    checkpoint loads into it; the BERT branch lives in the child ``bert_attn`` (keys ``*.bert_attn.*``).
    H_B is handed in by the encoder/decoder for the duration of one forward (:func:`bert_memory`), because
    the host layers pass only their own arguments to their attention modules. In incremental decoding
    ``bert_attn`` caches its keys/values once, like the encoder attention does.
    """

    def __init__(self, embed_dim: int, num_heads: int, *, bert_dim: int, drop_net: float,
                 ratios: tuple[float, float] = (0.5, 0.5), **kwargs) -> None:
        super().__init__(embed_dim, num_heads, **kwargs)
        self.drop_net = check_drop_net(drop_net)
        self.ratios = (check_ratio("--encoder-ratio", ratios[0]), check_ratio("--bert-ratio", ratios[1]))
        self.bert_attn = BertAttention(embed_dim, num_heads, bert_dim=bert_dim, dropout=kwargs.get("dropout", 0.0),
                                       q_noise=kwargs.get("q_noise", 0.0),
                                       qn_block_size=kwargs.get("qn_block_size", 8))
        self.memory: BertMemory | None = None
        self.last_weights: tuple[float, float] | None = None  # the drop-net mix of the latest call

    def extra_repr(self) -> str:
        return f"drop_net={self.drop_net}, ratios={self.ratios}"

    def forward(self, query: Tensor, key: Tensor | None, value: Tensor | None,
                key_padding_mask: Tensor | None = None,
                incremental_state: dict[str, dict[str, Tensor | None]] | None = None,
                need_weights: bool = True, static_kv: bool = False, attn_mask: Tensor | None = None,
                before_softmax: bool = False, need_head_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        if self.memory is None:
            raise RuntimeError("BertFusedAttention called without BERT outputs: run it through "
                               "BertFusedEncoder/BertFusedDecoder, which provide them")
        if before_softmax:
            raise NotImplementedError("before_softmax is not supported by the BERT-fused attention")
        if incremental_state is None and query.dtype == torch.float64:
            # static_kv only selects the incremental cache; without one it leaves fairseq's fast path (torch's
            # attention), and fairseq's own path computes the softmax in float32 even for a float64 model
            static_kv = False
        host, attn = super().forward(query, key, value, key_padding_mask=key_padding_mask,
                                     incremental_state=incremental_state, need_weights=need_weights,
                                     static_kv=static_kv, attn_mask=attn_mask,
                                     need_head_weights=need_head_weights)
        bert = self.bert_attn(query, self.memory, incremental_state)
        self.last_weights = drop_net_weights(self.drop_net, self.training, self.ratios)
        return mix_branches(host, bert, self.last_weights), attn


@contextmanager
def bert_memory(attentions: Sequence[BertFusedAttention], memory: BertMemory) -> Iterator[None]:
    """Give ``memory`` to the fused attentions for the duration of one host forward."""
    for attention in attentions:
        attention.memory = memory
    try:
        yield
    finally:
        for attention in attentions:
            attention.memory = None


def _fused_attention_kwargs(cfg) -> dict:
    return {"bert_dim": cfg.bert_out_dim, "drop_net": cfg.drop_net, "ratios": (cfg.encoder_ratio, cfg.bert_ratio)}


class BertFusedEncoderLayer(TransformerEncoderLayerBase):
    """fairseq's encoder layer whose self-attention is :class:`BertFusedAttention` (post- or pre-LN)."""

    def build_self_attention(self, embed_dim: int, cfg) -> BertFusedAttention:
        return BertFusedAttention(embed_dim, cfg.encoder.attention_heads, dropout=cfg.attention_dropout,
                                  self_attention=True, q_noise=self.quant_noise,
                                  qn_block_size=self.quant_noise_block_size, **_fused_attention_kwargs(cfg))


class BertFusedDecoderLayer(TransformerDecoderLayerBase):
    """fairseq's decoder layer whose encoder attention is :class:`BertFusedAttention`."""

    def build_encoder_attention(self, embed_dim: int, cfg) -> BertFusedAttention:
        return BertFusedAttention(embed_dim, cfg.decoder.attention_heads, kdim=cfg.encoder.embed_dim,
                                  vdim=cfg.encoder.embed_dim, dropout=cfg.attention_dropout,
                                  encoder_decoder_attention=True, q_noise=self.quant_noise,
                                  qn_block_size=self.quant_noise_block_size, **_fused_attention_kwargs(cfg))
