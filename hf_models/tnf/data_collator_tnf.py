"""HF's masked-LM collator plus the rare-word spans TNF needs (``rare_spans`` in the batch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import DataCollatorForLanguageModeling


def pad_spans(spans: list[list[list[int]]]) -> torch.Tensor:
    """Per-example lists of [w, s, t] -> [batch, max(1, most spans), 3] long, padded with -1 rows."""
    width = max([1] + [len(example) for example in spans])
    out = torch.full((len(spans), width, 3), -1, dtype=torch.long)
    for row, example in enumerate(spans):
        if example:
            out[row, : len(example)] = torch.tensor(example, dtype=torch.long)
    return out


@dataclass
class DataCollatorForTnf(DataCollatorForLanguageModeling):
    """:class:`DataCollatorForLanguageModeling` (BERT masking, ``mlm_probability``...) over examples that
    carry ``rare_spans`` (from :meth:`RareVocabulary.tokenize`); adds the padded span tensor to the batch.

    Spans stay where they are: right padding does not move tokens (left padding is refused)."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if not examples or not all(isinstance(e, dict) and "rare_spans" in e for e in examples):
            raise ValueError("DataCollatorForTnf needs examples with 'rare_spans' (tokenize them with "
                             "hf_models.tnf.RareVocabulary.tokenize)")
        if self.tokenizer.padding_side != "right":
            raise ValueError("DataCollatorForTnf needs padding_side='right' (spans index unpadded positions)")
        spans = [e["rare_spans"] for e in examples]
        batch = super().torch_call([{k: v for k, v in e.items() if k != "rare_spans"} for e in examples])
        batch["rare_spans"] = pad_spans(spans)
        return batch


__all__ = ["DataCollatorForTnf", "pad_spans"]
