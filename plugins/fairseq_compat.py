"""Four fixes that make the ve-fairseq 0.12.3 fork correct on Python 3.11 with torch >= 2.6 and numpy 2.

1. fairseq stores ``argparse.Namespace`` in checkpoints; torch >= 2.6 loads with ``weights_only=True`` by
   default and refuses it ("Unsupported global"), which breaks ``fairseq-train``'s resume and
   ``fairseq-generate``. The class is allow-listed.
2. The fork's ``data_utils.batch_by_size`` drops the last batch when its size is not a multiple of
   ``--required-batch-size-multiple`` (default 8): ``fairseq-generate`` silently translated 16 of 20 test
   sentences, and validation skipped data. Upstream fairseq keeps that batch; so does the replacement.
3. The fork's ``fairseq.tasks.text_to_speech`` calls ``logging.basicConfig(level=DEBUG)`` on import, so merely
   importing fairseq turned every library's debug logging on in the user's process. The root logger is
   restored after the import.
4. fairseq 0.12 spells numpy 1's alias ``np.compat.long`` (= ``int``) in ``TokenBlockDataset`` (``--sample-break-mode
   eos``, the masked-LM and language-model tasks) and in ``LanguagePairDataset`` bucketing
   (``--num-batch-buckets``); numpy 2 removed ``np.compat``, so both raised AttributeError. Only when numpy
   has no ``compat`` of its own, a namespace with that one alias is set.
"""

from __future__ import annotations

import argparse
import logging
import types

import numpy as np
import torch

_root = logging.getLogger()
_root_level, _root_handlers = _root.level, list(_root.handlers)
from fairseq.data import data_utils  # noqa: E402  (imports all of fairseq)

_root.setLevel(_root_level)
_root.handlers[:] = _root_handlers

torch.serialization.add_safe_globals([argparse.Namespace])

if not hasattr(np, "compat"):
    np.compat = types.SimpleNamespace(long=int)  # numpy 1's np.compat.long, the one name fairseq 0.12 uses


def batch_by_size(indices, num_tokens_fn, num_tokens_vec=None, max_tokens=None, max_sentences=None,
                  required_batch_size_multiple=1, fixed_shapes=None):
    """Upstream fairseq 0.12's ``batch_by_size``: batches of a multiple of the size, the last one kept."""
    from fairseq.data.data_utils_fast import batch_by_size_fn, batch_by_size_vec, batch_fixed_shapes_fast

    if not isinstance(indices, np.ndarray):
        indices = np.fromiter(indices, dtype=np.int64, count=-1)
    if fixed_shapes is not None:
        fixed_shapes = np.array(fixed_shapes, dtype=np.int64)
        order = np.lexsort([fixed_shapes[:, 1].argsort(), fixed_shapes[:, 0].argsort()])
        return batch_fixed_shapes_fast(indices, num_tokens_fn, fixed_shapes[order])
    max_tokens = int(max_tokens) if max_tokens is not None else -1
    max_sentences = max_sentences if max_sentences is not None else -1
    if num_tokens_vec is None:
        return batch_by_size_fn(indices, num_tokens_fn, max_tokens, max_sentences, required_batch_size_multiple)
    if not isinstance(num_tokens_vec, np.ndarray):
        num_tokens_vec = np.fromiter(num_tokens_vec, dtype=np.int64, count=-1)
    return batch_by_size_vec(indices, num_tokens_vec, max_tokens, max_sentences, required_batch_size_multiple)


data_utils.batch_by_size = batch_by_size
