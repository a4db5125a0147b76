"""fairseq model ``bert_fused``: a transformer whose encoder and decoder layers also attend to BERT.

Archs: ``bert_fused`` (transformer base), ``bert_fused_iwslt_de_en``, ``bert_fused_wmt_en_de``.
BERT (any HF ``AutoModel`` from a local folder) lives in ``encoder.bert``; it runs once per batch in the
encoder's forward, and its output travels in ``encoder_out`` (``bert_encoder_out``, ``bert_padding_mask``,
``bert_order``), so fairseq's beam search reorders it with the encoder output and never recomputes it per step.
"""

from __future__ import annotations

import logging
import os

import torch
from fairseq import checkpoint_utils
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import (
    TransformerConfig,
    TransformerDecoderBase,
    TransformerEncoderBase,
    TransformerModel,
    base_architecture,
    transformer_iwslt_de_en,
    transformer_wmt_en_de,
)
from torch import Tensor

from graftkit.checkpoint import unreadable_checkpoint
from graftkit.errors import GraftkitError
from plugins.bert_fused.bert_side import bert_hidden_size, load_bert_model
from plugins.bert_fused.modules import (
    BertAttention,
    BertFusedAttention,
    BertFusedDecoderLayer,
    BertFusedEncoderLayer,
    BertMemory,
    bert_memory,
    check_drop_net,
    check_ratio,
)

logger = logging.getLogger(__name__)

BERT_PREFIX = "encoder.bert."


def _no_activation_checkpointing(cfg) -> None:
    if cfg.checkpoint_activations:
        raise GraftkitError("--checkpoint-activations is not supported by bert_fused")


class BertFusedEncoder(TransformerEncoderBase):
    """fairseq's transformer encoder with BERT-fused layers and the BERT encoder itself (``self.bert``)."""

    def __init__(self, cfg, dictionary, embed_tokens) -> None:
        _no_activation_checkpointing(cfg)
        super().__init__(cfg, dictionary, embed_tokens)
        self.bert = bert = load_bert_model(cfg.bert_model_path)
        self.bert_pad_idx = cfg.bert_pad_idx
        # --mask-cls-sep: the fused attentions do not attend to [CLS] and [SEP] (BERT itself still reads them)
        self.bert_unattended_ids = [cfg.bert_cls_idx, cfg.bert_sep_idx] if cfg.mask_cls_sep else []
        self.finetune_bert = bool(cfg.finetune_bert)
        n_layers = bert.config.num_hidden_layers
        if not -n_layers <= cfg.bert_output_layer < n_layers:
            raise GraftkitError(f"--bert-output-layer {cfg.bert_output_layer} is out of range for a BERT with "
                                f"{n_layers} layers (use -{n_layers}..{n_layers - 1}; 0 = first layer's output, "
                                "-1 = last)")
        # bert-nmt indexes the list of layer outputs (no embeddings); HF's hidden_states has the embedding output
        # first, so a non-negative N is HF's N + 1 and a negative N is the same index in both.
        self.bert_hidden_state = cfg.bert_output_layer + 1 if cfg.bert_output_layer >= 0 else cfg.bert_output_layer
        self.bert.requires_grad_(self.finetune_bert)
        self.train(self.training)

    def build_encoder_layer(self, cfg) -> BertFusedEncoderLayer:
        return BertFusedEncoderLayer(cfg)

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.finetune_bert:
            self.bert.eval()  # a frozen BERT runs without its dropout
        return self

    def fused_attentions(self) -> list[BertFusedAttention]:
        return [layer.self_attn for layer in self.layers]

    def encode_bert(self, bert_input: Tensor | None) -> BertMemory:
        """H_B for a batch of BERT-side ids (B, T_bert): computed once, with no graph when BERT is frozen."""
        if bert_input is None:
            raise GraftkitError("bert_fused needs net_input['bert_input'] (BERT-side source ids): use the task "
                                "translation_bert_fused, which adds them to every batch")
        padding_mask = bert_input.eq(self.bert_pad_idx)
        with torch.set_grad_enabled(self.finetune_bert and torch.is_grad_enabled()):
            out = self.bert(input_ids=bert_input, attention_mask=(~padding_mask).long(),
                            output_hidden_states=self.bert_hidden_state != -1)
            hidden = out.last_hidden_state if self.bert_hidden_state == -1 else \
                out.hidden_states[self.bert_hidden_state]
        if not torch.isfinite(hidden).all():
            raise GraftkitError("BERT produced non-finite outputs (NaN/inf): check the --bert-model weights")
        for token in self.bert_unattended_ids:
            padding_mask = padding_mask | bert_input.eq(token)
        return BertMemory(hidden.transpose(0, 1).contiguous(), padding_mask)

    def forward(self, src_tokens: Tensor, src_lengths: Tensor | None = None, bert_input: Tensor | None = None,
                return_all_hiddens: bool = False, token_embeddings: Tensor | None = None):
        memory = self.encode_bert(bert_input)
        with bert_memory(self.fused_attentions(), memory):
            out = self.forward_scriptable(src_tokens, src_lengths, return_all_hiddens, token_embeddings)
        return {**out, **memory_entries(memory)}

    def reorder_encoder_out(self, encoder_out: dict[str, list[Tensor]], new_order: Tensor):
        reordered = super().reorder_encoder_out(encoder_out, new_order)
        return {**reordered, **memory_entries(memory_of(encoder_out).reorder(new_order))}


def memory_entries(memory: BertMemory) -> dict[str, list[Tensor]]:
    """H_B as ``encoder_out`` entries (fairseq's convention: lists, empty for None)."""
    return {"bert_encoder_out": [memory.out], "bert_padding_mask": [memory.padding_mask],
            "bert_order": [] if memory.order is None else [memory.order]}


def memory_of(encoder_out: dict[str, list[Tensor]] | None) -> BertMemory:
    """The BERT memory carried in ``encoder_out`` (see :func:`memory_entries`)."""
    if encoder_out is None or not encoder_out.get("bert_encoder_out"):
        raise GraftkitError("BertFusedDecoder needs the BERT outputs in encoder_out (from BertFusedEncoder)")
    order = encoder_out.get("bert_order") or [None]
    return BertMemory(encoder_out["bert_encoder_out"][0], encoder_out["bert_padding_mask"][0], order[0])


class BertFusedDecoder(TransformerDecoderBase):
    """fairseq's transformer decoder whose layers also attend to BERT's output."""

    def __init__(self, cfg, dictionary, embed_tokens) -> None:
        _no_activation_checkpointing(cfg)
        super().__init__(cfg, dictionary, embed_tokens, no_encoder_attn=False)

    def build_decoder_layer(self, cfg, no_encoder_attn: bool = False) -> BertFusedDecoderLayer:
        return BertFusedDecoderLayer(cfg, no_encoder_attn)

    def extract_features_scriptable(self, prev_output_tokens, encoder_out, incremental_state=None,
                                    full_context_alignment=False, alignment_layer=None, alignment_heads=None):
        with bert_memory([layer.encoder_attn for layer in self.layers], memory_of(encoder_out)):
            return super().extract_features_scriptable(prev_output_tokens, encoder_out, incremental_state,
                                                       full_context_alignment, alignment_layer, alignment_heads)


@register_model("bert_fused")
class BertFusedModel(TransformerModel):
    """Transformer NMT with BERT fused into every encoder and decoder layer (Zhu et al., ICLR 2020)."""

    @classmethod
    def add_args(cls, parser) -> None:
        super().add_args(parser)
        parser.add_argument("--drop-net", type=float, metavar="P",
                            help="drop-net probability p_net in [0, 1] (the paper's; default 1.0): in training "
                                 "each layer uses only the host branch w.p. p/2, only BERT w.p. p/2")
        parser.add_argument("--finetune-bert", action="store_true",
                            help="train BERT's parameters too (default: BERT frozen)")
        parser.add_argument("--bert-output-layer", type=int, metavar="N",
                            help="which BERT layer's output to fuse, counted as bert-nmt does (layer outputs "
                                 "only, never the embeddings): 0 = first layer, L-1 or -1 = last (default), "
                                 "-L = first; valid -L..L-1 for an L-layer BERT")
        parser.add_argument("--encoder-ratio", type=float, metavar="W",
                            help="weight of the host branch (self-attention in the encoder, encoder attention in "
                                 "the decoder) where drop-net keeps both branches and at inference (default 0.5, "
                                 "the paper's average; the reference code's default is 1)")
        parser.add_argument("--bert-ratio", type=float, metavar="W",
                            help="weight of the BERT branch, likewise (default 0.5; the reference code's is 1)")
        parser.add_argument("--mask-cls-sep", action="store_true",
                            help="the fused attentions ignore BERT's [CLS] and [SEP] outputs (as the reference "
                                 "code's --mask-cls-sep)")
        parser.add_argument("--warmup-from-nmt", metavar="CKPT",
                            help="initialise from a trained transformer checkpoint with the same dictionaries; "
                                 "only the bert_attn weights may be missing from it")

    @classmethod
    def build_model(cls, args, task):
        if not hasattr(task, "bert_tokenizer"):
            raise GraftkitError(f"--arch {args.arch} needs --task translation_bert_fused (with --bert-model), "
                                f"got --task {getattr(args, 'task', type(task).__name__)}")
        _bert_fused_defaults(args)  # like the host calling base_architecture: fill what no arch function set
        check_drop_net(args.drop_net)
        check_ratio("--encoder-ratio", args.encoder_ratio)
        check_ratio("--bert-ratio", args.bert_ratio)
        args.bert_model_path = task.cfg.bert_model  # the task's: generate/interactive may point elsewhere
        args.bert_out_dim = bert_hidden_size(args.bert_model_path)
        tokenizer = task.bert_tokenizer
        args.bert_pad_idx = tokenizer.pad_token_id
        args.bert_cls_idx, args.bert_sep_idx = tokenizer.cls_token_id, tokenizer.sep_token_id
        if args.mask_cls_sep and None in (args.bert_cls_idx, args.bert_sep_idx):
            raise GraftkitError(f"--mask-cls-sep needs a BERT tokenizer with [CLS] and [SEP] tokens; the one in "
                                f"{args.bert_model_path} has cls_token={tokenizer.cls_token!r}, "
                                f"sep_token={tokenizer.sep_token!r}")
        return super().build_model(args, task)

    @classmethod
    def build_encoder(cls, args, src_dict, embed_tokens):
        return BertFusedEncoder(TransformerConfig.from_namespace(args), src_dict, embed_tokens)

    @classmethod
    def build_decoder(cls, args, tgt_dict, embed_tokens):
        return BertFusedDecoder(TransformerConfig.from_namespace(args), tgt_dict, embed_tokens)

    def set_beam_size(self, beam_size: int) -> None:
        """Called by fairseq's beam search: the BERT attentions cache keys/values once per sentence."""
        for module in self.decoder.modules():
            if isinstance(module, BertAttention):
                module.set_beam_size(beam_size)

    def forward(self, src_tokens, src_lengths, prev_output_tokens, bert_input=None, return_all_hiddens=True,
                features_only=False, alignment_layer=None, alignment_heads=None):
        encoder_out = self.encoder(src_tokens, src_lengths=src_lengths, bert_input=bert_input,
                                   return_all_hiddens=return_all_hiddens)
        return self.decoder(prev_output_tokens, encoder_out=encoder_out, features_only=features_only,
                            alignment_layer=alignment_layer, alignment_heads=alignment_heads,
                            src_lengths=src_lengths, return_all_hiddens=return_all_hiddens)


def warm_start_from_nmt(model: BertFusedModel, path: str | os.PathLike) -> list[str]:
    """Load a plain transformer checkpoint into ``model``, strictly; return the keys it lacked.

    Only ``bert_attn`` weights may be missing (BERT's own weights come from ``--bert-model``); any unexpected
    key or shape mismatch (e.g. another dictionary) is an error, never a silent skip.
    """
    if not os.path.isfile(path):
        raise GraftkitError(f"--warmup-from-nmt checkpoint not found: {path}")
    try:
        nmt = checkpoint_utils.load_checkpoint_to_cpu(str(path))["model"]
    except Exception as err:  # torch raises several types for a corrupt or foreign file
        raise unreadable_checkpoint(path, err, "fairseq checkpoint") from None
    own = model.state_dict()
    unexpected = sorted(k for k in nmt if k not in own)
    if any(k.startswith(BERT_PREFIX) or ".bert_attn." in k for k in nmt):
        raise GraftkitError(f"{path} already has BERT-fused weights: resume it with --restore-file instead")
    mismatched = [f"{k}: checkpoint {tuple(nmt[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in nmt if k in own and nmt[k].shape != own[k].shape]
    missing = sorted(k for k in own if k not in nmt and not k.startswith(BERT_PREFIX))
    not_bert_attn = [k for k in missing if ".bert_attn." not in k]
    problems = []
    if mismatched:
        problems.append("shape mismatches (different dictionary or architecture?): " + "; ".join(mismatched[:5]))
    if unexpected:
        problems.append("keys the model does not have: " + ", ".join(unexpected[:5]))
    if not_bert_attn:
        problems.append("keys missing besides bert_attn: " + ", ".join(not_bert_attn[:5]))
    if problems:
        raise GraftkitError(f"cannot warm-start from {path}: " + " | ".join(problems))
    own.update(nmt)
    model.load_state_dict(own, strict=True)
    logger.info("warm-started from %s; %d bert_attn tensors start fresh", path, len(missing))
    return missing


def _bert_fused_defaults(args) -> None:
    args.drop_net = getattr(args, "drop_net", 1.0)
    args.finetune_bert = getattr(args, "finetune_bert", False)
    args.bert_output_layer = getattr(args, "bert_output_layer", -1)
    args.encoder_ratio = getattr(args, "encoder_ratio", 0.5)
    args.bert_ratio = getattr(args, "bert_ratio", 0.5)
    args.mask_cls_sep = getattr(args, "mask_cls_sep", False)
    args.warmup_from_nmt = getattr(args, "warmup_from_nmt", None)


def _require_bert_fused_task(args) -> None:
    """Stop while the arguments are parsed (before any data is read) when the task cannot feed BERT."""
    task = getattr(args, "task", None)
    if task is not None and task != "translation_bert_fused":
        raise GraftkitError(f"--arch {args.arch} needs --task translation_bert_fused (with --bert-model), "
                            f"got --task {task}")


@register_model_architecture("bert_fused", "bert_fused")
def bert_fused_base(args) -> None:
    _require_bert_fused_task(args)
    _bert_fused_defaults(args)
    base_architecture(args)


@register_model_architecture("bert_fused", "bert_fused_iwslt_de_en")
def bert_fused_iwslt_de_en(args) -> None:
    _require_bert_fused_task(args)
    _bert_fused_defaults(args)
    transformer_iwslt_de_en(args)


@register_model_architecture("bert_fused", "bert_fused_wmt_en_de")
def bert_fused_wmt_en_de(args) -> None:
    _require_bert_fused_task(args)
    _bert_fused_defaults(args)
    transformer_wmt_en_de(args)
