"""Configuration of a TNF masked-LM (Wu et al., Taking Notes on the Fly Helps Language Pre-Training)."""

from huggingface_hub.dataclasses import strict

from ..core.config import EncoderConfig
from .notes import NOTE_FIELDS, NoteFields, check_note_fields

#: Fields a TNF config adds to its backbone's (dropped when the backbone is exported): the note dictionary's.
TNF_FIELDS = NOTE_FIELDS


@strict
class TnfConfig(EncoderConfig):
    r"""The backbone's fields (graftkit's core encoder, those of :class:`PreLNBertConfig`;
    ``layer_norm_position`` defaults to ``"post"``: BERT, the paper's backbone) plus the note dictionary's:

    num_rare_words (`int`): rows of the note dictionary (``len(RareVocabulary)``), >= 1.
    note_weight (`float`, defaults to 0.5): λ in e = (1 - λ)(tok + pos) + λ ND[w], in [0, 1] (the paper's).
    note_momentum (`float`, defaults to 0.1): γ in ND[w] <- (1 - γ) ND[w] + γ Note, in [0, 1].
    note_half_window (`int`, defaults to 16): k, the note window [s - k, t + k], >= 0.
    first_note (`str`, defaults to `"replace"`): `"replace"`: a word is mixed only once it has a note and
        its first note is copied in; `"ema"`: ND starts random (N(0, initializer_range²)), all mixed at once.
    mix_masked_words (`bool`, defaults to False): also mix notes into rare words that have a prediction
        target among their tokens (the note would name the hidden word).
    rare_word_token_ids (`list[list[int]]`, *optional*): the rare-word vocabulary the model finds in
        ``input_ids`` when a batch has no ``rare_spans`` (any collator): row w's token ids, with
    word_boundary_marks (`str`, *optional*): two marks per token id (:mod:`hf_models.tnf.rare_spans`). Both
        from :meth:`RareVocabulary.config_fields`; without them TNF needs ``rare_spans`` in every batch.
    """

    model_type = "tnf"

    layer_norm_position: str = "post"
    tie_word_embeddings: bool = True
    num_rare_words: int = 1
    # defaults declared once, with the fairseq task's (NoteFields)
    note_weight: float | int = NoteFields.note_weight
    note_momentum: float | int = NoteFields.note_momentum
    note_half_window: int = NoteFields.note_half_window
    first_note: str = NoteFields.first_note
    mix_masked_words: bool = NoteFields.mix_masked_words
    rare_word_token_ids: list[list[int]] | None = None
    word_boundary_marks: str | None = None

    def __post_init__(self, **kwargs):
        check_note_fields(self)
        super().__post_init__(**kwargs)

    def backbone_config(self) -> EncoderConfig:
        """The plain backbone's config (a ``preln_bert`` :class:`PreLNBertConfig`): this one without the TNF
        fields. Found through AutoConfig, where importing ``hf_models`` registered it (the remote code of a TNF
        folder imports no other model's module)."""
        from transformers import AutoConfig

        fields = {k: v for k, v in self.to_dict().items()
                  if k not in TNF_FIELDS and k not in ("model_type", "architectures", "auto_map",
                                                       "transformers_version")}
        return AutoConfig.for_model("preln_bert", **fields)


__all__ = ["TnfConfig"]
