"""BERT-fused attention and layers (Zhu et al., ICLR 2020), built from fairseq's own modules.

Encoder layer l (the host's post- or pre-LN layer, with its self-attention replaced):

    h̃ = ½·[SelfAttn(h^{l-1}) + BertAttn(h^{l-1}, H_B)]   → dropout, residual, LN, FFN as in the host

Decoder layer l (the host's layer, with its encoder attention replaced):

    s̃ = ½·[BertAttn(ŝ, H_B) + EncAttn(ŝ, H_E)]          → dropout, residual, LN, FFN as in the host

Drop-net (training only, sampled once per layer per forward): with probability p_net/2 the mix is
(1, 0) (host branch only), with p_net/2 it is (0, 1) (BERT branch only), otherwise (½, ½). Inference
always uses (½, ½). ``p_net`` is the paper's; the reference code's ``--encoder-bert-dropout-ratio`` is p_net/2.
"""

from __future__ import annotations

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


def drop_net_weights(p_net: float, training: bool) -> tuple[float, float]:
    """(host weight, BERT weight) for one layer and one forward pass.

    Training: (1, 0) with probability p_net/2, (0, 1) with p_net/2, (½, ½) otherwise. Eval: (½, ½).
    """
    if not training or p_net == 0.0:
        return 0.5, 0.5
    u = float(torch.rand(()))  # CPU generator: seeded by fairseq per update, no device sync
    if u < p_net / 2:
        return 1.0, 0.0
    if u < p_net:
        return 0.0, 1.0
    return 0.5, 0.5


@dataclass
class BertMemory:
    """H_B as the fused attentions read it: ``out`` (T_bert, B, C_bert) and ``padding_mask`` (B, T_bert)."""

    out: Tensor
    padding_mask: Tensor


class BertFusedAttention(MultiheadAttention):
    """The host attention (self- or encoder-attention) averaged with an attention over BERT's output.

    The module's own parameters are the host attention's, under the host's names, so a plain transformer
    checkpoint loads into it; the BERT branch lives in the child ``bert_attn`` (keys ``*.bert_attn.*``).
    H_B is handed in by the encoder/decoder for the duration of one forward (:meth:`use_memory`), because
    the host layers pass only their own arguments to their attention modules. In incremental decoding
    ``bert_attn`` caches its keys/values once (``static_kv``), like the encoder attention does.
    """

    def __init__(self, embed_dim: int, num_heads: int, *, bert_dim: int, drop_net: float, **kwargs) -> None:
        super().__init__(embed_dim, num_heads, **kwargs)
        self.drop_net = check_drop_net(drop_net)
        self.bert_attn = MultiheadAttention(embed_dim, num_heads, kdim=bert_dim, vdim=bert_dim,
                                            dropout=kwargs.get("dropout", 0.0), encoder_decoder_attention=True,
                                            q_noise=kwargs.get("q_noise", 0.0),
                                            qn_block_size=kwargs.get("qn_block_size", 8))
        self.memory: BertMemory | None = None
        self.last_weights: tuple[float, float] | None = None  # the drop-net mix of the latest call

    def extra_repr(self) -> str:
        return f"drop_net={self.drop_net}"

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
        host, attn = super().forward(query, key, value, key_padding_mask=key_padding_mask,
                                     incremental_state=incremental_state, need_weights=need_weights,
                                     static_kv=static_kv, attn_mask=attn_mask,
                                     need_head_weights=need_head_weights)
        bert, _ = self.bert_attn(query, self.memory.out, self.memory.out,
                                 key_padding_mask=self.memory.padding_mask, incremental_state=incremental_state,
                                 need_weights=False, static_kv=True)
        w_host, w_bert = self.last_weights = drop_net_weights(self.drop_net, self.training)
        # both branches stay in the graph (a weight may be 0): every parameter gets a gradient on every
        # step, so fairseq's DDP needs no --find-unused-parameters
        return w_host * host + w_bert * bert, attn


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
    return {"bert_dim": cfg.bert_out_dim, "drop_net": cfg.drop_net}


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
