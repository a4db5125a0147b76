"""Configuration of a TNF masked-LM (Wu et al., Taking Notes on the Fly Helps Language Pre-Training)."""

from huggingface_hub.dataclasses import strict

from ..preln_bert.configuration_preln_bert import PreLNBertConfig
from .notes import FIRST_NOTE_MODES, check_fraction

#: Fields a TNF config adds to its backbone's (dropped when the backbone is exported).
TNF_FIELDS = ("num_rare_words", "note_weight", "note_momentum", "note_half_window", "first_note",
              "mix_masked_words")


@strict
class TnfConfig(PreLNBertConfig):
    r"""The backbone's fields (graftkit's core encoder, as :class:`PreLNBertConfig`; ``layer_norm_position``
    defaults to ``"post"``: BERT, the paper's backbone) plus the note dictionary's:

    num_rare_words (`int`): rows of the note dictionary (``len(RareVocabulary)``), >= 1.
    note_weight (`float`, defaults to 0.5): λ in e = (1 - λ)(tok + pos) + λ ND[w], in [0, 1] (the paper's).
    note_momentum (`float`, defaults to 0.1): γ in ND[w] <- (1 - γ) ND[w] + γ Note, in [0, 1].
    note_half_window (`int`, defaults to 16): k, the note window [s - k, t + k], >= 0.
    first_note (`str`, defaults to `"replace"`): `"replace"`: a word is mixed only once it has a note and
        its first note is copied in; `"ema"`: ND starts random (N(0, initializer_range²)), all mixed at once.
    mix_masked_words (`bool`, defaults to False): also mix notes into rare words that have a prediction
        target among their tokens (the note would name the hidden word).
    """

    model_type = "tnf"

    layer_norm_position: str = "post"
    num_rare_words: int = 1
    note_weight: float | int = 0.5
    note_momentum: float | int = 0.1
    note_half_window: int = 16
    first_note: str = "replace"
    mix_masked_words: bool = False

    def __post_init__(self, **kwargs):
        if isinstance(self.num_rare_words, bool) or self.num_rare_words < 1:
            raise ValueError(f"num_rare_words must be a positive integer, got {self.num_rare_words!r}")
        check_fraction("note_weight (λ)", self.note_weight)
        check_fraction("note_momentum (γ)", self.note_momentum)
        if self.note_half_window < 0:
            raise ValueError(f"note_half_window (k) must be >= 0, got {self.note_half_window!r}")
        if self.first_note not in FIRST_NOTE_MODES:
            raise ValueError(f"first_note must be one of {FIRST_NOTE_MODES}, got {self.first_note!r}")
        super().__post_init__(**kwargs)

    def backbone_config(self) -> PreLNBertConfig:
        """The plain backbone's config: this one without the TNF fields."""
        fields = {k: v for k, v in self.to_dict().items()
                  if k not in TNF_FIELDS and k not in ("model_type", "architectures", "auto_map",
                                                       "transformers_version")}
        return PreLNBertConfig(**fields)


__all__ = ["TnfConfig"]
