"""TUPE for fairseq (Ke, He, Liu, "Rethinking Positional Encoding in Language Pre-training", ICLR 2021): the
model ``tupe``, a RoBERTa whose sentence encoder is graftkit's TUPE encoder, for fairseq's own ``masked_lm``
task and ``sentence_prediction`` fine-tuning, and the converter to ``hf_models.TupeForMaskedLM``.

The encoder is ``hf_models.TupeModel`` (no pooler) built from the fairseq settings, so the positional-bias math
(``hf_models.tupe.positional``) and the layers are the same code in both frameworks; fairseq supplies the
data, the LM and classification heads (RoBERTa's), the criterions and the training loop. The converter to
``hf_models.TupeForMaskedLM`` (this arch's checkpoints and guolinke/TUPE's) is ``plugins.convert_tupe``. Architectures:

- ``tupe_base`` / ``tupe_r_base``: BERT base (12 layers, d 768, FFN 3072, 12 heads), TUPE-A / TUPE-R, Post-LN.
- ``tupe_tiny`` / ``tupe_r_tiny``: 2 layers, d 64, FFN 128, 4 heads, for tests and smoke runs.

Flags: ``--tupe-no-untie-cls`` (the plain untied term), ``--tupe-relative-buckets`` (32),
``--tupe-relative-max-distance`` (128). Token 0 of every sample is fairseq's ``<s>``, the [CLS] slot.
"""

from __future__ import annotations

from typing import Any

import torch
from fairseq.models import FairseqEncoder, register_model, register_model_architecture
from fairseq.models.roberta.model import RobertaEncoder, RobertaModel
from fairseq.models.roberta.model import base_architecture as roberta_base_architecture
from fairseq.utils import safe_getattr
from torch import nn

from graftkit.errors import GraftkitError
from hf_models import TupeConfig, TupeModel
from plugins.convert_fairseq import ACTIVATIONS as _ACTIVATIONS
from plugins.convert_tupe import convert_fairseq_tupe_to_hf  # noqa: F401  (the converter, documented here)


def tupe_config_from_args(args: Any, vocab_size: int, pad: int) -> TupeConfig:
    """The :class:`hf_models.TupeConfig` of a fairseq ``tupe`` model's settings (a Namespace or a dict)."""
    get = args.get if isinstance(args, dict) else lambda key, default=None: safe_getattr(args, key, default)
    if get("activation_fn", "gelu") not in _ACTIVATIONS:
        raise GraftkitError(f"activation_fn {get('activation_fn')!r} is not supported by the TUPE encoder "
                            f"(supported: {', '.join(_ACTIVATIONS)})")
    for key in ("activation_dropout", "encoder_layerdrop"):
        if float(get(key, 0.0) or 0.0) != 0.0:
            raise GraftkitError(f"--{key.replace('_', '-')} is not supported by the TUPE encoder (must be 0)")
    try:
        return TupeConfig(
            vocab_size=vocab_size, hidden_size=int(get("encoder_embed_dim")),
            num_hidden_layers=int(get("encoder_layers")), num_attention_heads=int(get("encoder_attention_heads")),
            intermediate_size=int(get("encoder_ffn_embed_dim")), hidden_act=_ACTIVATIONS[get("activation_fn", "gelu")],
            hidden_dropout_prob=float(get("dropout", 0.1)),
            attention_probs_dropout_prob=float(get("attention_dropout", 0.1)),
            max_position_embeddings=int(get("max_positions")), type_vocab_size=0,
            layer_norm_eps=1e-5,  # fairseq's LayerNorm (RoBERTa's LM head) is torch's default
            layer_norm_position="pre" if get("encoder_normalize_before", False) else "post",
            embedding_layer_norm=bool(get("layernorm_embedding", True)),
            position_mode=get("tupe_position_mode"), untie_cls=not get("tupe_no_untie_cls", False),
            relative_attention_num_buckets=int(get("tupe_relative_buckets", 32)),
            relative_attention_max_distance=int(get("tupe_relative_max_distance", 128)),
            pad_token_id=pad, tie_word_embeddings=not get("untie_weights_roberta", False))
    except ValueError as err:
        raise GraftkitError(f"bad TUPE settings: {err}") from err


class TupeSentenceEncoder(FairseqEncoder):
    """fairseq's sentence-encoder interface (T x B x C outputs, ``encoder_states``) over ``hf_models.TupeModel``;
    the word embedding is RoBERTa's ``embed_tokens`` (tied to the LM head)."""

    def __init__(self, args: Any, dictionary, embed_tokens: nn.Embedding) -> None:
        super().__init__(dictionary)
        self.padding_idx = dictionary.pad()
        self.tupe = TupeModel(tupe_config_from_args(args, len(dictionary), self.padding_idx),
                              add_pooling_layer=False)
        self.tupe.set_input_embeddings(embed_tokens)

    # what fairseq's RoBERTa sentence encoder shows tasks that shape its input (masked_lm_tnf's note mix): TUPE's
    # positions enter the attention, not the input, and its token embeddings are not scaled
    embed_positions = None
    embed_scale = 1.0

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.tupe.get_input_embeddings()

    def forward(self, src_tokens: torch.Tensor, src_lengths=None, return_all_hiddens: bool = False,
                token_embeddings: torch.Tensor | None = None) -> dict[str, list[torch.Tensor]]:
        if token_embeddings is not None:
            raise ValueError("the TUPE encoder takes src_tokens only (token_embeddings is not supported)")
        keep = src_tokens.ne(self.padding_idx)
        out = self.tupe(src_tokens, attention_mask=keep.long(), output_hidden_states=return_all_hiddens,
                        return_dict=True)
        states = [h.transpose(0, 1) for h in out.hidden_states] if return_all_hiddens else []
        return {"encoder_out": [out.last_hidden_state.transpose(0, 1)], "encoder_padding_mask": [~keep],
                "encoder_embedding": [], "encoder_states": states, "src_tokens": [], "src_lengths": []}

    def max_positions(self) -> int:
        return self.tupe.config.max_position_embeddings


class TupeRobertaEncoder(RobertaEncoder):
    """RoBERTa's encoder (embedding, LM head) with :class:`TupeSentenceEncoder` as its sentence encoder."""

    def build_encoder(self, args, dictionary, embed_tokens):
        return TupeSentenceEncoder(args, dictionary, embed_tokens)


@register_model("tupe")
class TupeRobertaModel(RobertaModel):
    """RoBERTa with TUPE's untied positional attention (the arch picks TUPE-A or TUPE-R)."""

    @staticmethod
    def add_args(parser) -> None:
        RobertaModel.add_args(parser)
        parser.add_argument("--tupe-no-untie-cls", action="store_true",
                            help="keep the plain positional term for [CLS] (no θ1/θ2 untying)")
        parser.add_argument("--tupe-relative-buckets", type=int, metavar="N",
                            help="TUPE-R: number of T5 relative buckets (default 32)")
        parser.add_argument("--tupe-relative-max-distance", type=int, metavar="N",
                            help="TUPE-R: distance covered by the buckets (default 128)")

    @classmethod
    def build_model(cls, args, task):
        tupe_base_architecture(args)
        if not safe_getattr(args, "max_positions", None):
            args.max_positions = safe_getattr(args, "tokens_per_sample", None) or task.max_positions()
        return cls(args, TupeRobertaEncoder(args, task.source_dictionary))


def _tupe_defaults(args, position_mode: str) -> None:
    # the mode is what the arch means, so it is forced; the other settings are defaults users may override
    args.tupe_position_mode = position_mode
    args.tupe_no_untie_cls = safe_getattr(args, "tupe_no_untie_cls", False)
    args.tupe_relative_buckets = safe_getattr(args, "tupe_relative_buckets", None) or 32
    args.tupe_relative_max_distance = safe_getattr(args, "tupe_relative_max_distance", None) or 128
    args.activation_dropout = safe_getattr(args, "activation_dropout", 0.0)
    roberta_base_architecture(args)


def _tiny(args) -> None:
    args.encoder_layers = safe_getattr(args, "encoder_layers", 2)
    args.encoder_embed_dim = safe_getattr(args, "encoder_embed_dim", 64)
    args.encoder_ffn_embed_dim = safe_getattr(args, "encoder_ffn_embed_dim", 128)
    args.encoder_attention_heads = safe_getattr(args, "encoder_attention_heads", 4)


@register_model_architecture("tupe", "tupe_base")
def tupe_base_architecture(args) -> None:
    _tupe_defaults(args, safe_getattr(args, "tupe_position_mode", None) or "absolute")


@register_model_architecture("tupe", "tupe_r_base")
def tupe_r_base_architecture(args) -> None:
    _tupe_defaults(args, "relative")


@register_model_architecture("tupe", "tupe_tiny")
def tupe_tiny_architecture(args) -> None:
    _tiny(args)
    _tupe_defaults(args, "absolute")


@register_model_architecture("tupe", "tupe_r_tiny")
def tupe_r_tiny_architecture(args) -> None:
    _tiny(args)
    _tupe_defaults(args, "relative")
