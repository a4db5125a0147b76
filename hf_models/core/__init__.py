"""The encoder core shared by graftkit's HF models (Pre-LN, TUPE, TNF, MC-BERT): plain torch, plus
transformers' ``GradientCheckpointingLayer`` under each encoder layer (``gradient_checkpointing_enable()``) and
its ``PreTrainedModel`` / ``PreTrainedConfig`` bases in :mod:`.modeling` and :mod:`.config`.

- :class:`Embeddings`: word + learned absolute position + token type, split into ``sum_embeddings`` and
  ``finalize`` so a method can mix into the sum (TNF) or drop absolute positions (TUPE).
- :class:`Encoder`: ``num_hidden_layers`` × :class:`EncoderLayer`, ``layer_norm_position`` "post" or "pre"
  (pre adds ``final_layer_norm``); takes one additive float ``attention_bias`` [batch|1, heads|1, seq, seq]
  so padding and positional biases share the fused SDPA kernel (:func:`padding_bias`, :func:`combine_biases`).
- :mod:`.heads` (pooler, tied masked-LM head, classification losses) and :mod:`.modeling` (the
  ``PreTrainedModel`` base, the base model, which takes a positional attention bias in place of the input's
  positions (TUPE), and the masked-LM / sequence / token classification models over any base model): HF's
  plumbing, written once for every model on the core.
- :class:`EncoderConfig`: the config fields the core reads, BERT's defaults and their validation, the base of
  every model's config (which adds its ``model_type`` and its own fields).
- :func:`write_remote_code`: makes a saved folder loadable with ``trust_remote_code=True``.
- :mod:`.checks`: checks on input values (:func:`check_index_ranges`), skipped while ``torch.compile`` /
  ``torch.export`` trace (:func:`checking_values`), so every model on the core compiles with ``fullgraph=True``.

Model modules import from the submodules (``from ..core.encoder import Encoder``), which the remote-code
writer rewrites; code outside ``hf_models`` may import from this package.
"""

from .activations import ACTIVATIONS, activation
from .attention import ATTENTION_IMPLEMENTATIONS, SelfAttention, combine_biases, padding_bias
from .checks import check_index_ranges, checking_values
from .config import LAYER_NORM_POSITIONS, EncoderConfig, validate_encoder_config
from .embeddings import Embeddings
from .encoder import Encoder, EncoderLayer, EncoderOutput, FeedForward
from .heads import MaskedLMHead, Pooler, classifier_dropout, sequence_classification_loss, token_cross_entropy
from .remote_code import remote_auto_map, write_remote_code

__all__ = [
    "ACTIVATIONS", "ATTENTION_IMPLEMENTATIONS", "LAYER_NORM_POSITIONS", "Embeddings", "Encoder", "EncoderConfig",
    "EncoderLayer", "EncoderOutput", "FeedForward", "MaskedLMHead", "Pooler", "SelfAttention", "activation",
    "check_index_ranges", "checking_values", "classifier_dropout", "combine_biases", "padding_bias",
    "remote_auto_map", "sequence_classification_loss", "token_cross_entropy", "validate_encoder_config",
    "write_remote_code",
]
