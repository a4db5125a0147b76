"""MC-BERT for fairseq (Xu et al., "MC-BERT: Efficient Language Pre-Training via a Meta Controller", 2020).

Registers the task ``mc_bert``, the criterion ``mc_bert``, the model ``mc_bert`` and the archs
``mc_bert_base`` (BERT base; meta controller 12 layers, d 256, FFN 1024, 4 heads) and ``mc_bert_small``
(the reference's small: 12 layers, d 256, FFN 1024, 4 heads, divider 2). Use with ``--user-dir plugins``::

    fairseq-train DATA --user-dir plugins --task mc_bert --criterion mc_bert --arch mc_bert_small ...

The model is :class:`hf_models.McBertForPreTraining` (the same code as the HF model type, the math in
``hf_models/mc_bert/objectives.py``); ``--objective rtd`` gives ELECTRA's replaced-token detection and
``--objective mlm`` BERT's masked LM with the same data, sizes and criterion; ``--position-embedding-type
tupe_absolute`` / ``tupe_relative`` puts TUPE's positions into both encoders (docs/compose.md); ``graftkit mcbert
convert`` writes any of these checkpoints as the HF McBert folder of the same config
(:func:`mc_bert_config_from_args`). As in the reference, the task masks in its data pipeline (15%, all <mask>,
fairseq's per-sequence count) and the target is the whole original sequence; the criterion returns
L_MLM + λ·L_D·n_masked/n_tokens with sample size n_masked.
"""

import argparse
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.data import MaskTokensDataset, RightPadDataset, SortDataset, data_utils
from fairseq.models import BaseFairseqModel, register_model, register_model_architecture
from fairseq.tasks import register_task
from fairseq.tasks.masked_lm import MaskedLMConfig, MaskedLMTask

from graftkit.errors import GraftkitError
from hf_models.core.config import POSITION_EMBEDDING_TYPES
from hf_models.mc_bert import McBertConfig, McBertForPreTraining
from hf_models.mc_bert.objectives import OBJECTIVES, pretraining_loss

NEITHER_SYMBOL = "<neither>"


def mc_bert_config_from_args(args: Any, vocab_size: int, pad_token_id: int, mask_token_id: int | None,
                             neither_token_id: int | None, mask_prob: float) -> McBertConfig:
    """The :class:`hf_models.McBertConfig` of an ``mc_bert`` model's settings (the Namespace fairseq builds, or
    the dict a checkpoint stores; what they lack takes the arch's defaults, :func:`mc_bert_base`): every
    objective, position encoding and LayerNorm placement, for :meth:`McBertFairseqModel.build_model` and the
    converter alike. A combination the config refuses is a GraftkitError naming the fields."""
    settings = argparse.Namespace(**(dict(args) if isinstance(args, dict) else vars(args)))
    mc_bert_base(settings)
    try:
        return McBertConfig(
            vocab_size=vocab_size, hidden_size=settings.encoder_embed_dim,
            num_hidden_layers=settings.encoder_layers, num_attention_heads=settings.encoder_attention_heads,
            intermediate_size=settings.encoder_ffn_embed_dim, hidden_act=settings.activation_fn,
            hidden_dropout_prob=settings.dropout, attention_probs_dropout_prob=settings.attention_dropout,
            max_position_embeddings=settings.max_positions, type_vocab_size=0,
            layer_norm_eps=1e-5,  # fairseq's LayerNorm: torch's default eps
            layer_norm_position="pre" if settings.encoder_normalize_before else "post",
            pad_token_id=pad_token_id, mask_token_id=mask_token_id, neither_token_id=neither_token_id,
            objective=settings.objective, num_candidates=settings.num_candidates,
            mc_loss_weight=settings.mc_loss_weight, rtd_loss_weight=settings.rtd_loss_weight,
            candidates_with_replacement=settings.candidates_with_replacement,
            candidates_exclude_original=not settings.candidates_include_original,
            mc_size_divider=settings.mc_size_divider, mask_prob=mask_prob,
            position_embedding_type=settings.position_embedding_type, untie_cls=not settings.tupe_no_untie_cls,
            relative_attention_num_buckets=settings.tupe_relative_buckets,
            relative_attention_max_distance=settings.tupe_relative_max_distance)
    except (TypeError, ValueError) as err:
        raise GraftkitError(f"bad MC-BERT settings: {err}") from err


@dataclass
class McBertTaskConfig(MaskedLMConfig):  # fairseq reads the field types: no postponed annotations here
    # MC-BERT masks with <mask> only: the meta controller's samples are the corruption
    leave_unmasked_prob: float = field(default=0.0, metadata={"help": "must be 0 for MC-BERT"})
    random_token_prob: float = field(default=0.0, metadata={"help": "must be 0 for MC-BERT"})


@register_task("mc_bert", dataclass=McBertTaskConfig)
class McBertTask(MaskedLMTask):
    """fairseq's masked_lm data (blocks, <s> prepended, 15% masked) with <mask> and <neither> added to the
    dictionary and the whole original sequence as target (the reference's MaskTokensDataset2)."""

    def __init__(self, cfg: McBertTaskConfig, dictionary=None) -> None:
        if cfg.leave_unmasked_prob or cfg.random_token_prob:
            raise ValueError("--leave-unmasked-prob and --random-token-prob must be 0 for the mc_bert task: "
                             "every masked token becomes <mask>, the meta controller supplies the corruption")
        super().__init__(cfg, dictionary)  # adds <mask>
        self.neither_idx = self.dictionary.add_symbol(NEITHER_SYMBOL)

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs) -> None:
        dataset = self._load_dataset_split(split, epoch, combine)
        source, _ = MaskTokensDataset.apply_mask(
            dataset, self.source_dictionary, pad_idx=self.source_dictionary.pad(), mask_idx=self.mask_idx,
            seed=self.cfg.seed, mask_prob=self.cfg.mask_prob, leave_unmasked_prob=0.0, random_token_prob=0.0,
            mask_multiple_length=self.cfg.mask_multiple_length, mask_stdev=self.cfg.mask_stdev)
        target = RightPadDataset(dataset, pad_idx=self.source_dictionary.pad())
        with data_utils.numpy_seed(self.cfg.seed):
            shuffle = np.random.permutation(len(source))
        self.datasets[split] = SortDataset(self._regular_dataset(source, target),
                                           sort_order=[shuffle, source.sizes])


@register_model("mc_bert")
class McBertFairseqModel(BaseFairseqModel):
    """fairseq wrapper of :class:`hf_models.McBertForPreTraining` (attribute ``pretraining``); its main
    encoder is ``pretraining.mc_bert``, an :class:`hf_models.McBertModel`."""

    def __init__(self, pretraining: McBertForPreTraining) -> None:
        super().__init__()
        self.pretraining = pretraining

    @staticmethod
    def add_args(parser) -> None:
        parser.add_argument("--encoder-layers", type=int, metavar="L", help="num encoder layers")
        parser.add_argument("--encoder-embed-dim", type=int, metavar="H", help="encoder embedding dimension")
        parser.add_argument("--encoder-ffn-embed-dim", type=int, metavar="F", help="encoder FFN dimension")
        parser.add_argument("--encoder-attention-heads", type=int, metavar="A", help="num attention heads")
        parser.add_argument("--mc-size-divider", type=int,
                            help="meta controller: hidden size, FFN size and heads divided by this")
        parser.add_argument("--objective", choices=OBJECTIVES,
                            help="mc: MC-BERT; rtd: ELECTRA; mlm: BERT (no meta controller)")
        parser.add_argument("--num-candidates", type=int, help="k, candidates per token incl. <neither>")
        parser.add_argument("--mc-loss-weight", type=float, help="lambda of the multi-choice loss")
        parser.add_argument("--rtd-loss-weight", type=float, help="lambda of the RTD loss")
        parser.add_argument("--candidates-with-replacement", action="store_true",
                            help="draw negatives with replacement (the reference code)")
        parser.add_argument("--candidates-include-original", action="store_true",
                            help="let negatives be the original token (the reference code)")
        parser.add_argument("--activation-fn", choices=("gelu", "relu"), help="activation function")
        parser.add_argument("--encoder-normalize-before", action="store_true", help="Pre-LN layers")
        parser.add_argument("--dropout", type=float, metavar="D", help="dropout probability")
        parser.add_argument("--attention-dropout", type=float, metavar="D", help="attention dropout")
        parser.add_argument("--max-positions", type=int, help="number of positional embeddings to learn")
        parser.add_argument("--position-embedding-type", choices=POSITION_EMBEDDING_TYPES,
                            help="absolute: BERT's learned vectors in the input; tupe_absolute / tupe_relative: "
                                 "TUPE-A / TUPE-R (main model and meta controller)")
        parser.add_argument("--tupe-no-untie-cls", action="store_true",
                            help="TUPE: keep the plain positional term for [CLS] (no θ1/θ2 untying)")
        parser.add_argument("--tupe-relative-buckets", type=int, metavar="N",
                            help="TUPE-R: number of T5 relative buckets (default 32)")
        parser.add_argument("--tupe-relative-max-distance", type=int, metavar="N",
                            help="TUPE-R: distance covered by the buckets (default 128)")

    @classmethod
    def build_model(cls, args, task) -> "McBertFairseqModel":
        mc_bert_base(args)
        if getattr(args, "max_positions", None) is None:
            args.max_positions = task.cfg.tokens_per_sample
        dictionary = task.source_dictionary
        config = mc_bert_config_from_args(args, len(dictionary), dictionary.pad(), task.mask_idx,
                                          getattr(task, "neither_idx", None), task.cfg.mask_prob)
        return cls(McBertForPreTraining(config))

    @property
    def loss_weight(self) -> float:
        config = self.pretraining.config
        return {"mc": config.mc_loss_weight, "rtd": config.rtd_loss_weight, "mlm": 0.0}[config.objective]

    def forward(self, src_tokens: torch.Tensor, target: torch.Tensor, **unused):
        """``src_tokens`` with <mask> at the masked positions, ``target`` the original tokens (pad-padded)."""
        config = self.pretraining.config
        return self.pretraining.pretrain(target, src_tokens.eq(config.mask_token_id),
                                         target.ne(config.pad_token_id).long())

    def max_positions(self) -> int:
        return self.pretraining.config.max_position_embeddings


@register_criterion("mc_bert")
class McBertCriterion(FairseqCriterion):
    """The reference's loss: L_MLM + λ·L_D·n_masked/n_tokens (sums), sample size n_masked."""

    def forward(self, model, sample, reduce: bool = True):
        output = model(**sample["net_input"], target=sample["target"])
        parts = output.loss_parts
        loss, sample_size = pretraining_loss(parts, model.loss_weight)
        logging_output = {
            "loss": loss.data, "mlm_loss": parts.mlm_sum.data, "ntokens": sample["ntokens"],
            "nsentences": sample["nsentences"], "sample_size": int(sample_size), "n_tokens": int(parts.n_tokens),
        }
        if parts.discriminator_sum is not None:
            predicted = output.logits.argmax(-1) if output.logits.dim() == 2 else (output.logits > 0).long()
            logging_output["disc_loss"] = parts.discriminator_sum.data
            logging_output["disc_correct"] = int((predicted == output.discriminator_labels).sum())
            logging_output["replaced"] = int((output.discriminator_labels > 0).sum())
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        def total(key: str) -> float:
            return sum(log.get(key, 0) for log in logging_outputs)

        sample_size, n_tokens = total("sample_size"), total("n_tokens")
        metrics.log_scalar("loss", total("loss") / max(sample_size, 1) / math.log(2), sample_size, round=3)
        metrics.log_scalar("mlm_loss", total("mlm_loss") / max(sample_size, 1) / math.log(2), sample_size,
                           round=3)
        if any("disc_loss" in log for log in logging_outputs):
            metrics.log_scalar("disc_loss", total("disc_loss") / max(n_tokens, 1) / math.log(2), n_tokens,
                               round=3)
            metrics.log_scalar("disc_acc", total("disc_correct") / max(n_tokens, 1), n_tokens, round=4)
            metrics.log_scalar("replace_rate", total("replaced") / max(n_tokens, 1), n_tokens, round=4)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


@register_model_architecture("mc_bert", "mc_bert_base")
def mc_bert_base(args) -> None:
    """BERT base main model; meta controller of the same depth at a third of the width (d 256, 4 heads)."""
    args.encoder_layers = getattr(args, "encoder_layers", 12)
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 768)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 3072)
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", 12)
    args.mc_size_divider = getattr(args, "mc_size_divider", 3)
    args.objective = getattr(args, "objective", "mc")
    args.num_candidates = getattr(args, "num_candidates", 10)
    args.mc_loss_weight = getattr(args, "mc_loss_weight", 20.0)
    args.rtd_loss_weight = getattr(args, "rtd_loss_weight", 50.0)
    args.candidates_with_replacement = getattr(args, "candidates_with_replacement", False)
    args.candidates_include_original = getattr(args, "candidates_include_original", False)
    args.activation_fn = getattr(args, "activation_fn", "gelu")
    args.encoder_normalize_before = getattr(args, "encoder_normalize_before", False)
    args.dropout = getattr(args, "dropout", 0.1)
    args.attention_dropout = getattr(args, "attention_dropout", 0.1)
    args.max_positions = getattr(args, "max_positions", None)
    args.position_embedding_type = getattr(args, "position_embedding_type", None) or "absolute"
    args.tupe_no_untie_cls = getattr(args, "tupe_no_untie_cls", False)
    args.tupe_relative_buckets = getattr(args, "tupe_relative_buckets", None) or 32
    args.tupe_relative_max_distance = getattr(args, "tupe_relative_max_distance", None) or 128


@register_model_architecture("mc_bert", "mc_bert_small")
def mc_bert_small(args) -> None:
    """The reference's small size: 12 layers, d 256, FFN 1024, 4 heads; meta controller at half width."""
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 256)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 1024)
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", 4)
    args.mc_size_divider = getattr(args, "mc_size_divider", 2)
    mc_bert_base(args)
