r"""TUPE's untied positional attention term (Ke, He, Liu, ICLR 2021), written once for the HF model and the
fairseq arch: plain torch, no transformers or fairseq import.

Per head h, for query token i and key token j (positions counted from 0, [CLS] at position 0):

    v_ij = (LN(p_{i+1}) U^Q_h)(LN(p_{j+1}) U^K_h)ᵀ / sqrt(2d)                 d = head dim

p is one learned table of ``max_positions + 1`` rows (token t reads row t + 1), LN one LayerNorm, U^Q and
U^K linear maps (with bias) split per head. [CLS] untying (``untie_cls``, as guolinke/TUPE): θ1 = v of row 0
with itself (the extra row), θ2 = v of row 1 with itself; the [CLS] column (others -> [CLS]) becomes θ2, then
the [CLS] row ([CLS] -> others, including [CLS] -> [CLS]) becomes θ1.

TUPE-R adds b_h[bucket(j - i)], T5's bidirectional bucketing (``num_buckets`` 32, ``max_distance`` 128), and
with untying the [CLS] column reads the extra bucket ``num_buckets`` and the [CLS] row bucket
``num_buckets // 2`` (never produced by the bucketing: distance 0 is bucket 0), as the reference.

The result is one additive attention bias [batch|1, heads, seq, seq], computed once per forward and shared by
every layer; the content term of each layer is scaled by 1/sqrt(2d) to match.
"""

from __future__ import annotations

import math

import torch
from torch import nn

POSITION_MODES = ("absolute", "relative")


def relative_position_bucket(relative_position: torch.Tensor, num_buckets: int = 32,
                             max_distance: int = 128) -> torch.Tensor:
    """T5's bidirectional bucket of ``relative_position`` = key position - query position (long tensor).

    Half the buckets per direction (keys after the query get the upper half); within a half, distances below
    a quarter of ``num_buckets`` get a bucket each, longer ones share logarithmically wider buckets up to
    ``max_distance``, beyond which they share the last bucket.
    """
    half = num_buckets // 2
    bucket = (relative_position > 0).long() * half
    distance = relative_position.abs()
    exact = half // 2
    # distance 0 would give log(0); those entries take the exact branch, so any finite value works there
    log_ratio = torch.log(distance.clamp_min(1).float() / exact) / math.log(max_distance / exact)
    large = (exact + (log_ratio * (half - exact)).long()).clamp_max(half - 1)
    return bucket + torch.where(distance < exact, distance, large)


def check_bucket_settings(num_buckets: int, max_distance: int) -> None:
    """ValueError naming the field when T5's bucketing cannot use these settings."""
    if not isinstance(num_buckets, int) or isinstance(num_buckets, bool) or num_buckets < 4 or num_buckets % 2:
        raise ValueError(f"relative_attention_num_buckets must be an even integer >= 4, got {num_buckets!r}")
    if not isinstance(max_distance, int) or isinstance(max_distance, bool) or max_distance <= num_buckets // 4:
        raise ValueError(f"relative_attention_max_distance must be an integer > relative_attention_num_buckets"
                         f" // 4 = {num_buckets // 4} (the exactly-bucketed distances), got {max_distance!r}")


class TupePositionalBias(nn.Module):
    """The positional attention bias of TUPE-A (``position_mode="absolute"``) or TUPE-R (``"relative"``).

    Parameters: ``embeddings`` (p, ``max_positions + 1`` rows), ``layer_norm`` (LN), ``query`` / ``key``
    (U^Q / U^K, hidden -> hidden), and for TUPE-R ``relative_bias`` (``num_buckets + 1`` entries per head).
    The tables keep their extra rows with ``untie_cls=False`` so both settings share one checkpoint layout.
    """

    def __init__(self, hidden_size: int, num_heads: int, max_positions: int, position_mode: str = "absolute",
                 untie_cls: bool = True, num_buckets: int = 32, max_distance: int = 128,
                 layer_norm_eps: float = 1e-5) -> None:
        super().__init__()
        if position_mode not in POSITION_MODES:
            raise ValueError(f"position_mode must be one of {POSITION_MODES}, got {position_mode!r}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_attention_heads ({num_heads})")
        if position_mode == "relative":
            check_bucket_settings(num_buckets, max_distance)
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.scale = (2 * self.head_dim) ** -0.5
        self.max_positions = max_positions
        self.untie_cls = untie_cls
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.embeddings = nn.Embedding(max_positions + 1, hidden_size)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.relative_bias = nn.Embedding(num_buckets + 1, num_heads) if position_mode == "relative" else None

    def _project(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[..., n, hidden] table rows -> scaled queries and keys [..., heads, n, head_dim]."""
        normed = self.layer_norm(rows)
        shape = (*normed.shape[:-1], self.num_heads, self.head_dim)
        q = self.query(normed).view(shape).transpose(-2, -3) * self.scale
        k = self.key(normed).view(shape).transpose(-2, -3)
        return q, k

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        """``position_ids`` [batch|1, seq] (long, [CLS] at 0) -> the bias [batch|1, heads, seq, seq]."""
        q, k = self._project(self.embeddings(position_ids + 1))
        bias = torch.matmul(q, k.transpose(-1, -2))
        is_cls = position_ids == 0
        if self.untie_cls:
            special_q, special_k = self._project(self.embeddings.weight[:2])  # rows 0 and 1: [heads, 2, d]
            theta = (special_q * special_k).sum(-1)  # [heads, 2]: θ1 = row 0 · row 0, θ2 = row 1 · row 1
            cls_to_others, others_to_cls = theta[:, 0, None, None], theta[:, 1, None, None]
            bias = torch.where(is_cls[:, None, None, :], others_to_cls, bias)
            bias = torch.where(is_cls[:, None, :, None], cls_to_others, bias)
        if self.relative_bias is not None:
            bucket = relative_position_bucket(position_ids[:, None, :] - position_ids[:, :, None],
                                              self.num_buckets, self.max_distance)
            if self.untie_cls:
                bucket = bucket.masked_fill(is_cls[:, None, :], self.num_buckets)
                bucket = bucket.masked_fill(is_cls[:, :, None], self.num_buckets // 2)
            bias = bias + self.relative_bias(bucket).permute(0, 3, 1, 2)
        return bias


__all__ = ["POSITION_MODES", "TupePositionalBias", "check_bucket_settings", "relative_position_bucket"]
