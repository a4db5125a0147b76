"""Configuration of MC-BERT (Xu et al., MC-BERT: Efficient Language Pre-Training via a Meta Controller)."""

from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict

from ..core.config import EncoderConfig
from ..tnf.notes import NOTE_FIELDS, NoteFields, check_note_fields
from .objectives import check_settings


@strict
class McBertConfig(EncoderConfig):
    r"""The main model (a BERT encoder, the one fine-tuned) and its pre-training with a meta controller.

    Encoder fields: the core's :class:`~hf_models.core.config.EncoderConfig` (those of
    :class:`transformers.BertConfig`; ``layer_norm_position`` "post" as BERT and the reference, "pre" for a
    Pre-LN encoder). Pre-training fields:

    objective (`str`, defaults to `"mc"`):
        `"mc"`: MC-BERT's multi-choice cloze with the <neither> reject option; `"rtd"`: ELECTRA's replaced
        token detection with the same meta controller as generator; `"mlm"`: BERT's masked LM on the main
        model (no meta controller).
    num_candidates (`int`, defaults to 10):
        k, the candidates per token including <neither> (the reference's `--class-num`; paper Table 5 and its
        RTE ablation also use 10, its text says 20).
    mc_loss_weight (`float`, defaults to 20.0):
        λ of the multi-choice loss (paper text and Table 5: 20; the released code's default: 50).
    rtd_loss_weight (`float`, defaults to 50.0): λ of the RTD loss (ELECTRA).
    candidates_with_replacement (`bool`, defaults to `False`):
        draw the negatives with replacement (the released code) instead of without (the paper's text).
    candidates_exclude_original (`bool`, defaults to `True`):
        never draw the original token as a negative (the paper's text; the released code does not exclude).
    mc_size_divider (`int`, defaults to 3):
        the meta controller has the same depth, and hidden size, FFN size and heads divided by this.
    mask_prob (`float`, defaults to 0.15): share of tokens masked, all with <mask>.
    mask_token_id, neither_token_id (`int`, optional):
        <mask> and <neither> in the vocabulary; required by :class:`McBertForPreTraining` (<neither> for
        `objective="mc"` only), not by the fine-tuning models.

    TNF's notes on the main model's input (ELECTRA-TNF in Wu et al., Taking Notes on the Fly; docs/compose.md),
    the fields of :class:`~hf_models.tnf.TnfConfig` with the same meanings and checks:

    num_rare_words (`int`, defaults to 0): rows of the note dictionary; 0: no notes (MC-BERT as published, and
        the other note fields must keep their defaults). Notes are used by :class:`McBertForPreTraining` only.
    note_weight, note_momentum, note_half_window, first_note, mix_masked_words, rare_word_token_ids,
    word_boundary_marks: as :class:`~hf_models.tnf.TnfConfig`'s. With notes off they are left out of
    ``to_dict`` and config.json (a config without notes saves as before they existed).

    Raises ValueError naming the field when a value is unusable.

    ```python
    >>> from hf_models import McBertConfig
    >>> config = McBertConfig(vocab_size=100, hidden_size=48, num_hidden_layers=2, num_attention_heads=6,
    ...                       intermediate_size=96, mask_token_id=4, neither_token_id=5)
    >>> config.num_candidates, config.mc_loss_weight
    (10, 20.0)
    ```"""

    model_type = "mc_bert"
    # outputs the Trainer does not gather at evaluation: all but the loss parts (see pretraining_metrics)
    keys_to_ignore_at_inference: ClassVar[list[str]] = [
        "logits", "masked_positions", "corrupted_input_ids", "candidate_ids", "discriminator_labels", "loss_parts"]
    token_id_fields: ClassVar[tuple[str, ...]] = ("pad_token_id", "mask_token_id", "neither_token_id")

    objective: str = "mc"
    num_candidates: int = 10
    mc_loss_weight: float | int = 20.0
    rtd_loss_weight: float | int = 50.0
    candidates_with_replacement: bool = False
    candidates_exclude_original: bool = True
    mc_size_divider: int = 3
    mask_prob: float = 0.15
    mask_token_id: int | None = None
    neither_token_id: int | None = None
    num_rare_words: int = 0
    # defaults declared once, with the fairseq task's (NoteFields)
    note_weight: float | int = NoteFields.note_weight
    note_momentum: float | int = NoteFields.note_momentum
    note_half_window: int = NoteFields.note_half_window
    first_note: str = NoteFields.first_note
    mix_masked_words: bool = NoteFields.mix_masked_words
    rare_word_token_ids: list[list[int]] | None = None
    word_boundary_marks: str | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)  # the encoder's fields first: the checks below read them
        self._check_pretraining_fields()

    @property
    def notes(self) -> bool:
        """Whether the pre-training model takes TNF's notes (``num_rare_words`` >= 1)."""
        return self.num_rare_words > 0

    def to_dict(self) -> dict[str, Any]:
        """HF's ``to_dict``; without notes, the note fields (all at their defaults) are left out."""
        output = super().to_dict()
        if not self.notes:
            for name in NOTE_FIELDS:
                output.pop(name, None)
        return output

    def _check_pretraining_fields(self) -> None:
        if self.mask_token_id is not None and self.mask_token_id == self.neither_token_id:
            raise ValueError(f"mask_token_id and neither_token_id must differ, both are {self.mask_token_id}")
        check_settings(self.objective, self.num_candidates, self.mask_prob, self.vocab_size)
        check_note_fields(self, notes_optional=True)
        for name in ("mc_loss_weight", "rtd_loss_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        divider = self.mc_size_divider
        if not isinstance(divider, int) or isinstance(divider, bool) or divider < 1:
            raise ValueError(f"mc_size_divider must be a positive integer, got {divider!r}")
        for name in ("hidden_size", "intermediate_size", "num_attention_heads"):
            if getattr(self, name) % divider:
                raise ValueError(f"mc_size_divider ({divider}) must divide {name} ({getattr(self, name)}): "
                                 "the meta controller's widths are the main model's divided by it")

    def require_pretraining_tokens(self) -> None:
        """ValueError when the vocabulary lacks what pre-training needs: <mask>, and <neither> for "mc"."""
        if self.mask_token_id is None:
            raise ValueError("MC-BERT pre-training needs a <mask> token: set config.mask_token_id to its id "
                             "in the vocabulary")
        if self.objective == "mc" and self.neither_token_id is None:
            raise ValueError("MC-BERT's multi-choice objective needs a <neither> token (the reject option): "
                             "add one to the vocabulary and set config.neither_token_id")


__all__ = ["McBertConfig"]
