r"""MC-BERT's pre-training math (Xu et al. 2020), and ELECTRA's replaced-token detection of the same class,
in plain torch. The HF model (:mod:`.modeling_mc_bert`) and the fairseq plugin (``plugins/mc_bert.py``) both
run it; nothing here knows either host.

One step, for a batch of original tokens x (pad excluded everywhere):

1. **Masking** (:func:`choose_masked_positions`): per sequence of n maskable tokens, exactly
   ⌊0.15·n + u⌋ positions (u ~ U[0, 1)), chosen uniformly; all of them become <mask> (no 80/10/10 rule).
2. **Meta controller (MC)**: a small MLM encoder reads the masked input; L_MLM = Σ over masked positions of
   −log p_MC(x_i). Its logits are LN(GELU(W h))·P(E)ᵀ + b, with P a projection of the main model's word
   embeddings E to the MC width and b shared with the main head's per-token bias (as the reference).
3. **Sampling, without gradient**: the corrupted input x̃ takes a sample s0 ~ p_MC at each masked position
   and x elsewhere; position i counts as *replaced* only when x̃_i ≠ x_i (a sample equal to the original is
   not a replacement).
4. **Multi-choice (``objective="mc"``)**: per non-pad position, k candidates c0 = <neither> (the reject
   option: "the input token is the original"), c1 = x_i if replaced else a negative, c2..c(k−1) the other
   negatives, the negatives drawn from p_MC at that position. Score of candidate c for hidden state h of the
   main model: LN(GELU(W h))·E[c] + b[c], a k-way softmax: O(k·d) per token, never the full vocabulary.
   Target: c1 if replaced, else c0. L_D = Σ over non-pad positions of the cross-entropy.
   **RTD (``objective="rtd"``)**, ELECTRA: a logit per token from dense → GELU → linear; label 1 = replaced;
   L_D = Σ over non-pad positions of the binary cross-entropy with logits.
5. **Loss** (:func:`pretraining_loss`): the reference's criterion returns
   L_MLM + λ·L_D·n_masked / n_tokens with sample size n_masked, i.e. per masked token
   **L_MLM / n_masked + λ · L_D / n_tokens**: the MC's mean MLM loss plus λ times the mean per-token
   discriminator loss (λ = 50 in ELECTRA).

The negatives' sampling follows one of the two sources (:func:`sample_negatives`): the paper's text (without
replacement, excluding the true token: no duplicate of the answer among the candidates) or the released code
(with replacement, true token allowed, duplicates kept).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..core.activations import activation

OBJECTIVES = ("mc", "rtd", "mlm")


def choose_masked_positions(maskable: torch.Tensor, mask_prob: float,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """Bool [batch, seq]: per row, ⌊mask_prob·n + u⌋ of the n ``maskable`` positions, chosen uniformly
    (fairseq's and the reference's rule: the expected count is mask_prob·n, rounded at random)."""
    maskable = maskable.bool()
    batch = maskable.shape[0]
    scores = torch.rand(maskable.shape, generator=generator, device=maskable.device)
    scores = scores.masked_fill(~maskable, 2.0)  # never among the chosen
    rounding = torch.rand(batch, generator=generator, device=maskable.device)
    counts = (mask_prob * maskable.sum(-1) + rounding).floor().long()
    rank = scores.argsort(-1).argsort(-1)
    return (rank < counts[:, None]) & maskable


def sample_replacements(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of ``logits`` [n, V], drawn from softmax(logits) in float32 (no gradient).

    By the inverse CDF (one uniform and a binary search per row): ``torch.multinomial`` draws a single
    sample through exponential noise over the whole vocabulary, measured ~15x slower on CPU.
    """
    cdf = torch.softmax(logits.detach().float(), dim=-1).cumsum(-1)
    uniform = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, uniform, right=True).clamp_max(cdf.shape[-1] - 1).squeeze(-1)


VOCABULARY_BLOCK = 1024  # columns of the vocabulary head computed at once: a [n, 1024] block stays in cache
SUB_BLOCK = 32  # tokens per sub-block of the inverse CDF within a block


@torch.no_grad()
def sample_from_vocabulary_head(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, num: int, *,
                                computed_logits: torch.Tensor | None = None, exclude: torch.Tensor | None = None,
                                generator: torch.Generator | None = None, block_size: int | None = None,
                                sub_block_size: int | None = None) -> torch.Tensor:
    """``num`` independent draws per row from softmax(features·weightᵀ + bias): LongTensor [n, num].

    features [n, d], weight [V, d], bias [V] (float32, no gradient). ``computed_logits`` [m, V]: further rows
    whose logits are already at hand (the MLM rows), sampled after the features' rows: the output is then
    [n + m, num]. ``exclude`` [n (+ m)]: one token per row given probability 0 (its logit set to −inf).

    One pass over the vocabulary in blocks of ``block_size`` columns, with a single [n, block_size] buffer: neither
    the logits nor the probabilities are ever held for the whole vocabulary (n·V floats: fresh memory every step,
    whose page faults cost more than the sampling, and gigabytes at real batch sizes). Each block's logits,
    exp(logit − block max) in place and the masses of its sub-blocks of ``sub_block_size`` tokens are computed
    while the block is in cache. Every draw is a weighted reservoir of one item: with A_j the block's mass and T_j
    = A_0 + … + A_j, it moves to block j with probability A_j / T_j, so it ends in block j with probability (A_j /
    T_j) · Π_{i>j} T_{i−1} / T_i = A_j / T. Instead of a uniform per draw and block, a draw that moves at block j
    also draws when it next moves (the exponential jumps of Efraimidis and Spirakis): P(no move up to block i) =
    T_j / T_i, so it moves again at the first block whose T_i exceeds T_j / u (kept as logs in float64). A moving
    draw picks its token in the block by a two-level inverse CDF: the sub-block by the block's cumulative sub-block
    masses, then the token by that sub-block's cumulative weights, w_t / A_j in all. Each inverse CDF uses u < 1
    times the total, so it never lands on a token of probability 0 after the last with mass (an excluded token, the
    padding). A row with a NaN or +inf logit has no distribution: its draws stay token 0, on purpose no error: such
    a logit comes from a diverged or overflowed meta controller, whose MLM loss is then typically not finite
    either, and mixed-precision loss scaling skips that step and recovers, where an exception would stop it. A draw
    moves at most once per block; with equal block masses, 1 + 1/2 + … + 1/blocks times on average (4.0 for 30
    blocks). Block sizes: the module's ``VOCABULARY_BLOCK`` and ``SUB_BLOCK`` unless given.
    """
    block_size = VOCABULARY_BLOCK if block_size is None else block_size
    sub_block_size = SUB_BLOCK if sub_block_size is None else sub_block_size
    if block_size % sub_block_size:
        raise ValueError(f"block_size ({block_size}) must be a multiple of sub_block_size ({sub_block_size})")
    n_features, vocab_size = features.shape[0], weight.shape[0]
    n = n_features + (0 if computed_logits is None else computed_logits.shape[0])
    device = features.device
    if exclude is not None:  # the excluded (row, token) pairs grouped by block, found by one sort
        excluded_tokens, excluded_rows = exclude.sort()
        excluded_bounds = _block_bounds(excluded_tokens, block_size, vocab_size)
    buffer = features.new_empty(n * block_size)  # reused by every block
    tokens = torch.zeros(n, num, dtype=torch.long, device=device)
    log_total = torch.full((n, 1), float("-inf"), dtype=torch.float64, device=device)  # log ΣA_≤j per row
    next_move = torch.full((n, num), float("-inf"), dtype=torch.float64, device=device)  # per draw: log X
    for j, start in enumerate(range(0, vocab_size, block_size)):
        width = min(block_size, vocab_size - start)
        padded = -(-width // sub_block_size) * sub_block_size
        logits = buffer[:n * padded].view(n, padded)
        if padded == width:
            torch.addmm(bias[start:start + width], features, weight[start:start + width].t(),
                        out=logits[:n_features])
        else:  # the last block: padded to whole sub-blocks with probability 0
            logits.fill_(float("-inf"))
            logits[:n_features, :width] = torch.addmm(bias[start:start + width], features,
                                                      weight[start:start + width].t())
        if computed_logits is not None:
            logits[n_features:, :width] = computed_logits[:, start:start + width]
        if exclude is not None:
            here = slice(excluded_bounds[j], excluded_bounds[j + 1])
            logits[excluded_rows[here], excluded_tokens[here] - start] = float("-inf")
        block_max = logits.amax(-1, keepdim=True)
        block_max.masked_fill_(block_max == float("-inf"), 0.0)  # a block without mass: its weights stay 0
        weights = logits.sub_(block_max).exp_().view(n, padded // sub_block_size, sub_block_size)
        sub_cdf = weights.sum(-1).double().cumsum_(-1)  # [n, sub-blocks of the block]
        log_total = torch.logaddexp(log_total, sub_cdf[:, -1:].log() + block_max.double())
        moving = (log_total > next_move).view(-1).nonzero().squeeze_(1)  # flat (row, draw) indices
        rows = moving // num
        uniform = torch.rand((2, len(moving)), generator=generator, dtype=torch.float64, device=device)
        next_move.view(-1)[moving] = log_total.view(-1).index_select(0, rows) - uniform[0].log()
        row_cdf = sub_cdf.index_select(0, rows)
        sub_block = torch.searchsorted(row_cdf, (uniform[1] * row_cdf[:, -1])[:, None], right=True).squeeze_(1)
        sub_block.clamp_max_(row_cdf.shape[-1] - 1)
        token_cdf = weights.view(-1, sub_block_size).index_select(0, rows * row_cdf.shape[-1] + sub_block)
        token_cdf.cumsum_(-1)
        # u < 1 times the total, kept below the total also where rounding (a subnormal total) reaches it
        total = token_cdf[:, -1]
        target = torch.minimum(torch.rand(len(moving), generator=generator, device=device) * total,
                               total.nextafter(torch.zeros_like(total)))
        within = torch.searchsorted(token_cdf, target[:, None], right=True).squeeze_(1)
        tokens.view(-1)[moving] = start + sub_block * sub_block_size + within.clamp_max_(sub_block_size - 1)
    return tokens


def _block_bounds(sorted_tokens: torch.Tensor, block_size: int, vocab_size: int) -> list[int]:
    """Where each block of ``block_size`` tokens starts and ends in ``sorted_tokens`` (a list, blocks + 1)."""
    num_blocks = -(-vocab_size // block_size)
    starts = torch.arange(num_blocks + 1, device=sorted_tokens.device) * block_size
    return torch.searchsorted(sorted_tokens, starts).tolist()


def _first_distinct(draws: torch.Tensor, num: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``num`` distinct tokens of each row of ``draws`` [n, m] in draw order, and how many distinct
    tokens each row has (at most ``num``; the entries of the output row past that count are meaningless)."""
    values, order = draws.sort(dim=-1, stable=True)  # equal tokens stay in draw order: the first comes first
    new = torch.ones_like(values, dtype=torch.bool)
    new[:, 1:] = values[:, 1:] != values[:, :-1]
    first = torch.zeros_like(new).scatter(1, order, new)  # back to draw order
    positions = torch.where(first, torch.arange(draws.shape[-1], device=draws.device), draws.shape[-1])
    picked = positions.sort(-1).values[:, :num].clamp_max(draws.shape[-1] - 1)
    return draws.gather(1, picked), first.sum(-1).clamp_max(num)


def sample_negatives(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, num: int, *,
                     with_replacement: bool, computed_logits: torch.Tensor | None = None,
                     exclude: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """``num`` tokens per row from softmax(features·weightᵀ + bias) (the vocabulary head, float32, no
    gradient), then per row of ``computed_logits`` from softmax(computed_logits) if given: LongTensor
    [n (+ m), num], drawn by :func:`sample_from_vocabulary_head`.

    ``with_replacement``: independent draws (duplicates possible, the reference code); else a draw without
    replacement (the paper's text): successive draws, each ∝ p over the tokens not drawn yet. That equals
    keeping the first ``num`` distinct tokens of a stream of independent draws, which is how it is computed:
    a pool of 4·num draws; a row with fewer distinct tokens in it (a very peaked row) keeps the ones it has
    and continues the stream exactly, by Gumbel top-k over the tokens not drawn yet (successive draws from
    p restricted to them). ``exclude`` [n (+ m)]: one token per row given probability 0 first (the paper
    excludes the true token).
    """
    draw = dict(computed_logits=computed_logits, exclude=exclude, generator=generator)
    if with_replacement:
        return sample_from_vocabulary_head(features, weight, bias, num, **draw)
    negatives, found = _first_distinct(sample_from_vocabulary_head(features, weight, bias, 4 * num, **draw), num)
    rows = (found < num).nonzero().squeeze(-1)
    if len(rows):
        computed = rows >= len(features)
        logits = features.new_empty(len(rows), weight.shape[0])
        with torch.no_grad():
            logits[~computed] = torch.addmm(bias, features[rows[~computed]], weight.t())
        if computed_logits is not None:
            logits[computed] = computed_logits[rows[computed] - len(features)].to(logits.dtype)
        if exclude is not None:
            logits[torch.arange(len(rows), device=rows.device), exclude[rows]] = float("-inf")
        kept = torch.arange(num, device=rows.device) < found[rows, None]
        found_tokens = torch.where(kept, negatives[rows], negatives[rows, :1])  # the first one is always found
        logits.scatter_(1, found_tokens, float("-inf"))
        uniform = torch.rand(logits.shape, generator=generator, device=logits.device)
        gumbel = -torch.log(-torch.log(uniform))  # u = 0 gives -inf: never picked
        continued = (logits + gumbel).topk(num, dim=-1).indices
        following = continued.gather(1, (torch.arange(num, device=rows.device) - found[rows, None]).clamp_min(0))
        negatives[rows] = torch.where(kept, negatives[rows], following)
    return negatives


def corrupt(input_ids: torch.Tensor, masked: torch.Tensor, replacements: torch.Tensor) -> torch.Tensor:
    """x̃: ``replacements`` (one per masked position, in row-major order) at masked positions, x elsewhere."""
    corrupted = input_ids.clone()
    corrupted[masked] = replacements
    return corrupted


def multi_choice_candidates(original: torch.Tensor, corrupted: torch.Tensor, negatives: torch.Tensor,
                            neither_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidates [..., k] and labels [...] from original and corrupted tokens [...] and negatives [..., k−1].

    c0 = <neither>; c1 = the original where replaced (corrupted ≠ original), else the first negative;
    c2..c(k−1) = negatives 2..k−1. Label = 1 (c1) where replaced, 0 (c0) otherwise.
    """
    replaced = corrupted != original
    neither = torch.full_like(original, neither_token_id)
    second = torch.where(replaced, original, negatives[..., 0])
    candidates = torch.cat([neither[..., None], second[..., None], negatives[..., 1:]], dim=-1)
    return candidates, replaced.long()


class PredictionTransform(nn.Module):
    """LN(act(W h + b)): the transform before every token-level output of MC-BERT (BERT's MLM head without
    its decoder; the output weights are passed in, so they can be shared)."""

    def __init__(self, hidden_size: int, hidden_act: str, layer_norm_eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = activation(hidden_act)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(self.activation(self.dense(hidden_states)))


def candidate_scores(features: torch.Tensor, candidates: torch.Tensor, embedding_weight: torch.Tensor,
                     bias: torch.Tensor) -> torch.Tensor:
    """features [n, d] (transformed), candidates [n, k] -> scores [n, k] = features·E[c] + b[c]: O(k·d)."""
    candidate_embeddings = F.embedding(candidates, embedding_weight)  # [n, k, d]
    return torch.einsum("nd,nkd->nk", features, candidate_embeddings) + bias[candidates]


class ReplacedTokenDetectionHead(nn.Module):
    """ELECTRA's discriminator head: dense -> act -> linear to one logit per token (HF
    ``ElectraDiscriminatorPredictions``); a positive logit means "replaced"."""

    def __init__(self, hidden_size: int, hidden_act: str) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = activation(hidden_act)
        self.dense_prediction = nn.Linear(hidden_size, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dense_prediction(self.activation(self.dense(hidden_states))).squeeze(-1)


def token_cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Σ −log softmax(logits)[target] over rows (computed in float32, as the reference)."""
    return F.cross_entropy(logits.float(), targets, reduction="sum")


def replaced_token_detection_sum(logits: torch.Tensor, replaced: torch.Tensor) -> torch.Tensor:
    """Σ binary cross-entropy with logits, label 1 = replaced (ELECTRA)."""
    return F.binary_cross_entropy_with_logits(logits.float(), replaced.float(), reduction="sum")


class LossParts(NamedTuple):
    """Summed losses and their counts for one batch (summable across batches and workers)."""

    mlm_sum: torch.Tensor
    n_masked: torch.Tensor
    discriminator_sum: torch.Tensor | None  # None for the plain MLM objective
    n_tokens: torch.Tensor


def pretraining_loss(parts: LossParts, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss summed as the reference's criterion, sample size = n_masked).

    loss = L_MLM + λ·L_D·n_masked/n_tokens, so loss / n_masked = mean MLM loss + λ·mean discriminator loss.
    With nothing masked the loss is 0 (the reference's rare case, sample size 0).
    """
    loss = parts.mlm_sum
    if parts.discriminator_sum is not None:
        loss = loss + weight * parts.discriminator_sum * parts.n_masked / parts.n_tokens.clamp_min(1)
    return loss, parts.n_masked


def mean_pretraining_loss(parts: LossParts, weight: float) -> torch.Tensor:
    """The per-masked-token loss the HF model returns: :func:`pretraining_loss` divided by its sample size."""
    loss, sample_size = pretraining_loss(parts, weight)
    return loss / sample_size.clamp_min(1)


def check_settings(objective: Any, num_candidates: Any, mask_prob: Any, vocab_size: int) -> None:
    """ValueError naming the setting when an MC-BERT setting is unusable."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if not isinstance(num_candidates, int) or isinstance(num_candidates, bool) or num_candidates < 2:
        raise ValueError(f"num_candidates (k) must be an integer >= 2 (<neither> and at least one token), "
                         f"got {num_candidates!r}")
    if num_candidates > vocab_size:
        raise ValueError(f"num_candidates (k={num_candidates}) must not exceed vocab_size ({vocab_size})")
    if not 0 < mask_prob < 1:
        raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob!r}")
