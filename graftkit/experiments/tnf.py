"""TNF (Wu et al., ICLR 2021): BERT with notes for rare words vs plain BERT, same model, seed and steps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def wordpiece_tokenizer(texts: Sequence[str], vocab_size: int = 1000, model_max_length: int = 512) -> Any:
    """A BERT-style WordPiece ``PreTrainedTokenizerFast`` trained on ``texts`` (lower-cased, [CLS] x [SEP]),
    so rare words split into several subword tokens as in the paper's setting."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from graftkit.data.text import CLS, MASK, PAD, SEP, SPECIAL_TOKENS, UNK

    tok = Tokenizer(models.WordPiece(unk_token=UNK))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS))
    tok.train_from_iterator(texts, trainer)
    cls_id, sep_id = tok.token_to_id(CLS), tok.token_to_id(SEP)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B {SEP}", special_tokens=[(CLS, cls_id), (SEP, sep_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=UNK, pad_token=PAD, cls_token=CLS,
                                   sep_token=SEP, mask_token=MASK, model_max_length=model_max_length)
