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


def _first_distinct(draws: torch.Tensor, num: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``num`` distinct tokens of each row of ``draws`` [n, m] in draw order, and a bool [n]: the
    row had ``num`` distinct tokens (else its output row is meaningless)."""
    values, order = draws.sort(dim=-1, stable=True)  # equal tokens stay in draw order: the first comes first
    new = torch.ones_like(values, dtype=torch.bool)
    new[:, 1:] = values[:, 1:] != values[:, :-1]
    first = torch.zeros_like(new).scatter(1, order, new)  # back to draw order
    positions = torch.where(first, torch.arange(draws.shape[-1], device=draws.device), draws.shape[-1])
    picked = positions.sort(-1).values[:, :num].clamp_max(draws.shape[-1] - 1)
    return draws.gather(1, picked), first.sum(-1) >= num


def sample_negatives(logits: torch.Tensor, num: int, *, with_replacement: bool,
                     exclude: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """``num`` tokens per row of ``logits`` [n, V] from softmax(logits): LongTensor [n, num].

    ``logits`` (float32, no gradient) is overwritten: at n·V floats, a copy costs as much as the sampling.
    ``with_replacement``: independent draws (duplicates possible, the reference code); else a draw without
    replacement (the paper's text): successive draws, each ∝ p over the tokens not drawn yet. That equals
    keeping the first ``num`` distinct tokens of a stream of independent draws, which is how it is computed
    (a pool of 4·num draws; rows with fewer distinct tokens in it, i.e. very peaked rows, are drawn instead by
    Gumbel top-k, the same distribution). ``exclude`` [n]: one token per row given probability 0 first (the
    paper excludes the true token).
    """
    if logits.dtype != torch.float32 or logits.requires_grad:
        raise ValueError("sample_negatives overwrites its logits: pass a float32 tensor without gradient")
    if exclude is not None:
        logits.scatter_(-1, exclude[:, None], float("-inf"))
    weights = logits.sub_(logits.amax(-1, keepdim=True)).exp_()  # ∝ softmax (multinomial normalizes)
    if with_replacement:
        return torch.multinomial(weights, num, replacement=True, generator=generator)
    pool = torch.multinomial(weights, 4 * num, replacement=True, generator=generator)
    negatives, complete = _first_distinct(pool, num)
    if not bool(complete.all()):
        rows = (~complete).nonzero().squeeze(-1)
        uniform = torch.rand((len(rows), weights.shape[-1]), generator=generator, device=weights.device)
        gumbel = -torch.log(-torch.log(uniform))  # u = 0 gives -inf: never picked
        negatives[rows] = (weights[rows].log() + gumbel).topk(num, dim=-1).indices
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
