r"""Gradient of each layer's FFN output weight W2 at initialization, Post-LN vs Pre-LN (Xiong et al. 2020).

The paper's theory: at initialization ‖∂L/∂W2‖_F of the LAST layer is O(d·sqrt(ln d)) for Post-LN, whatever
the depth L, and O(d·sqrt(ln d / L)) for Pre-LN. This module measures it on graftkit's shared encoder
(:class:`hf_models.core.Encoder`) and fits the exponent α of ‖∂L/∂W2^(L)‖ ∝ L^α (least squares in log-log):
the theory predicts α ≈ 0 for Post-LN and α → −1/2 for Pre-LN.

Setting (the theory's assumptions): weights Xavier-normal, biases 0, LayerNorm (1, 0), ReLU FFN with width
4·d, no dropout; inputs x ~ N(0, I) per token (‖x‖² ≈ d, like normalized embeddings); the loss
L = mean_t <y_t, r_t> with fixed random directions r_t ~ N(0, I), i.e. a loss whose gradient with respect
to the encoder output is O(1) and independent of the representation, as in the theory. ``loss="softmax"``
instead uses cross-entropy of a random linear read-out (N(0, 1/d), ``vocab`` classes) against random labels:
there the gradient depends on the representation, and deep Post-LN stacks, whose tokens grow alike under
attention at initialization, add it up coherently over the sequence (the theory ignores that mixing).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from graftkit.errors import GraftkitError, check_int, check_seed

LayerNormPosition = Literal["post", "pre"]
Loss = Literal["linear", "softmax"]
POSITIONS: tuple[LayerNormPosition, ...] = ("post", "pre")
LOSSES: tuple[Loss, ...] = ("linear", "softmax")


@dataclass(frozen=True)
class GradNormSettings:
    d_model: int = 64
    heads: int = 4
    seq_len: int = 32
    batch: int = 8
    loss: Loss = "linear"
    vocab: int = 100

    def __post_init__(self) -> None:
        for name in ("d_model", "heads", "seq_len", "batch", "vocab"):
            check_int(name, getattr(self, name))
        if self.d_model % self.heads:
            raise GraftkitError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if self.loss not in LOSSES:
            raise GraftkitError(f"loss must be one of {LOSSES}, got {self.loss!r}")


def bytes_needed(depth: int, settings: GradNormSettings) -> tuple[int, int]:
    """(weights, activations): about how many bytes one :func:`ffn_grad_norms` call at ``depth`` allocates.

    float32 weights, 12·d² per layer (attention 4·d², FFN 8·d²); activations autograd keeps, per layer about
    20 values per token and dimension (the FFN's 4·d hidden units among them) and twice the heads'
    seq_len² attention weights per sequence. An estimate, to refuse sizes no machine of this size can hold.
    """
    s = settings
    weights = 4 * depth * 12 * s.d_model**2
    activations = 4 * depth * (20 * s.batch * s.seq_len * s.d_model + 2 * s.batch * s.heads * s.seq_len**2)
    return weights, activations


def check_fits_in_memory(depth: int, settings: GradNormSettings) -> None:
    """A GraftkitError naming the setting (and its ``graftkit preln gradnorm`` flag) when the deepest encoder
    would need more than this machine's memory: before torch's allocator fails with a traceback."""
    from graftkit.runtime import physical_memory

    available = physical_memory()
    weights, activations = bytes_needed(depth, settings)
    if available is None or weights + activations <= available:
        return
    s = settings
    culprit = (f"d_model {s.d_model} (--d-model)" if weights >= activations else
               f"batch {s.batch} x seq_len {s.seq_len} (--batch, --seq-len)")
    raise GraftkitError(f"{culprit} is too large: the depth-{depth} encoder needs about "
                        f"{(weights + activations) / 2**30:.3g} GiB, this machine has {available / 2**30:.3g} GiB "
                        "of memory")


def build_encoder(position: LayerNormPosition, depth: int, settings: GradNormSettings) -> nn.Module:
    """graftkit's shared encoder with ``depth`` layers, initialized as the theory assumes."""
    from hf_models import PreLNBertConfig
    from hf_models.core import Encoder

    config = PreLNBertConfig(hidden_size=settings.d_model, num_hidden_layers=depth,
                             num_attention_heads=settings.heads, intermediate_size=4 * settings.d_model,
                             hidden_act="relu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                             layer_norm_eps=1e-5, layer_norm_position=position)
    encoder = Encoder(config)
    xavier_init(encoder)
    return encoder


def xavier_init(module: nn.Module) -> None:
    """The theory's initialization: every linear weight Xavier-normal, every linear bias 0."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.xavier_normal_(sub.weight)
            nn.init.zeros_(sub.bias)


def ffn_grad_norms(position: LayerNormPosition, depth: int, seed: int,
                   settings: GradNormSettings = GradNormSettings()) -> list[float]:
    """‖∂L/∂W2‖_F of every layer (first to last) of one freshly initialized encoder.

    Inputs and loss targets depend on ``seed`` only (paired across depths and LN positions); the weights on
    (``seed``, ``depth``). The caller's random state is left untouched.
    """
    check_int("depth", depth)
    if position not in POSITIONS:
        raise GraftkitError(f"layer-norm position must be one of {POSITIONS}, got {position!r}")
    s = settings
    data = torch.Generator().manual_seed(seed)
    x = torch.randn(s.batch, s.seq_len, s.d_model, generator=data)
    if s.loss == "linear":
        directions = torch.randn(s.batch, s.seq_len, s.d_model, generator=data)

        def loss_of(y: torch.Tensor) -> torch.Tensor:
            return (y * directions).sum(-1).mean()
    else:
        readout = torch.randn(s.vocab, s.d_model, generator=data) / math.sqrt(s.d_model)
        labels = torch.randint(s.vocab, (s.batch * s.seq_len,), generator=data)

        def loss_of(y: torch.Tensor) -> torch.Tensor:
            return nn.functional.cross_entropy(y.reshape(-1, s.d_model) @ readout.T, labels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1_000_003 * seed + depth)
        encoder = build_encoder(position, depth, s)
    return w2_grad_norms(encoder, x, loss_of)


def w2_grad_norms(encoder: nn.Module, x: torch.Tensor, loss_of) -> list[float]:
    """‖∂loss_of(encoder(x))/∂W2‖_F for every layer of ``encoder``, first to last."""
    weights = [layer.feed_forward.output.weight for layer in encoder.layers]
    grads = torch.autograd.grad(loss_of(encoder(x).last_hidden_state), weights)
    return [float(g.norm()) for g in grads]


def mlm_ffn_grad_norms(position: LayerNormPosition, depth: int, seed: int, inputs: torch.Tensor,
                       attention_mask: torch.Tensor, labels: torch.Tensor, vocab_size: int, pad: int,
                       settings: GradNormSettings = GradNormSettings()) -> list[float]:
    """‖∂L/∂W2‖_F of every layer (first to last) of a freshly initialized ``PreLNBertForMaskedLM`` under its
    masked-LM loss on one batch (``inputs``, ``attention_mask``, ``labels``: -100 where not masked) — the
    quantity of the paper's per-layer picture (Xiong et al., Figure 3). Encoder linear layers as the theory
    (:func:`xavier_init`), embeddings and head as the model's own init, no dropout; the weights follow
    ``seed`` alone, so Post-LN and Pre-LN (the same parameters) start from the same values. The caller's
    random state is left untouched."""
    from hf_models import PreLNBertConfig, PreLNBertForMaskedLM

    check_int("depth", depth)
    if position not in POSITIONS:
        raise GraftkitError(f"layer-norm position must be one of {POSITIONS}, got {position!r}")
    config = PreLNBertConfig(vocab_size=vocab_size, hidden_size=settings.d_model, num_hidden_layers=depth,
                             num_attention_heads=settings.heads, intermediate_size=4 * settings.d_model,
                             hidden_act="relu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                             layer_norm_eps=1e-5, max_position_embeddings=inputs.shape[1], type_vocab_size=0,
                             pad_token_id=pad, layer_norm_position=position)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PreLNBertForMaskedLM(config)
        xavier_init(model.bert.encoder)
    layers = model.bert.encoder.layers
    loss = model(inputs, attention_mask=attention_mask, labels=labels).loss
    grads = torch.autograd.grad(loss, [layer.feed_forward.output.weight for layer in layers])
    return [float(g.norm()) for g in grads]


def fit_exponent(depths: Sequence[int], values: Sequence[float]) -> float:
    """Least-squares slope α of log(value) = α·log(depth) + c."""
    if len(depths) != len(values) or len(set(depths)) < 2:
        raise GraftkitError("fitting an exponent needs values at two or more distinct depths")
    if min(values) <= 0 or min(depths) <= 0:
        raise GraftkitError("depths and values must be positive to fit in log-log")
    lx = torch.tensor([math.log(d) for d in depths], dtype=torch.float64)
    ly = torch.tensor([math.log(v) for v in values], dtype=torch.float64)
    lx_c = lx - lx.mean()
    return float((lx_c * (ly - ly.mean())).sum() / (lx_c**2).sum())


@dataclass
class GradNormResult:
    """``layers[position][depth]``: per-layer (mean, std) over the seeds ``first_seed`` to
    ``first_seed + seeds - 1``; ``exponents[position]``: α."""

    depths: list[int]
    seeds: int
    settings: GradNormSettings
    first_seed: int = 0
    layers: dict[str, dict[int, list[tuple[float, float]]]] = field(default_factory=dict)
    exponents: dict[str, float] = field(default_factory=dict)

    def last_layer(self, position: str) -> list[float]:
        """Mean last-layer ‖∂L/∂W2‖_F per depth."""
        return [self.layers[position][d][-1][0] for d in self.depths]

    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per depth: the last layer's mean norm for Post-LN and Pre-LN."""
        return [{"depth": d, "post_last_layer": self.layers["post"][d][-1][0],
                 "pre_last_layer": self.layers["pre"][d][-1][0]} for d in self.depths]

    def layer_rows(self) -> list[dict[str, Any]]:
        """One row per (LN position, depth, layer), layers numbered from 1."""
        return [{"ln": p, "depth": d, "layer": i + 1, "grad_norm_mean": m, "grad_norm_std": s}
                for p in POSITIONS for d in self.depths for i, (m, s) in enumerate(self.layers[p][d])]

    def to_json(self) -> dict[str, Any]:
        return {"settings": asdict(self.settings), "depths": self.depths, "seeds": self.seeds,
                "first_seed": self.first_seed,
                "exponents": self.exponents, "last_layer": self.summary_rows(), "layers": self.layer_rows()}


def measure(depths: Sequence[int], seeds: int = 5, settings: GradNormSettings = GradNormSettings(),
            progress: bool = False, first_seed: int = 0) -> GradNormResult:
    """Per-layer FFN-W2 gradient norms for Post-LN and Pre-LN at every depth, averaged over ``seeds``
    initializations (seeds ``first_seed`` to ``first_seed + seeds - 1``)."""
    from tqdm.auto import tqdm

    depths = list(depths)
    if len(set(depths)) < 2 or any(not isinstance(d, int) or d < 1 for d in depths):
        raise GraftkitError(f"depths must be two or more distinct positive integers, got {depths}")
    check_int("seeds", seeds)
    check_seed("first_seed", first_seed)
    depths = sorted(set(depths))
    check_fits_in_memory(depths[-1], settings)
    result = GradNormResult(depths, seeds, settings, first_seed)
    jobs = [(p, d) for p in POSITIONS for d in depths]
    for position, depth in tqdm(jobs, desc="gradnorm", disable=not progress):
        norms = torch.tensor([ffn_grad_norms(position, depth, seed, settings)
                              for seed in range(first_seed, first_seed + seeds)])
        std = norms.std(0) if seeds > 1 else torch.zeros(depth)
        result.layers.setdefault(position, {})[depth] = list(zip(norms.mean(0).tolist(), std.tolist()))
    result.exponents = {p: fit_exponent(depths, result.last_layer(p)) for p in POSITIONS}
    return result


def plot(result: GradNormResult, path: str | Path) -> Path:
    """Left: last-layer norm vs depth (log-log) with the fitted power laws; right: per-layer norms at the
    largest depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    colors = {"post": "tab:red", "pre": "tab:blue"}
    for p in POSITIONS:
        values = result.last_layer(p)
        left.loglog(result.depths, values, "o", color=colors[p])
        alpha = result.exponents[p]
        scale = math.exp(sum(math.log(v) - alpha * math.log(d) for d, v in zip(result.depths, values))
                         / len(values))
        left.loglog(result.depths, [scale * d**alpha for d in result.depths], "-", color=colors[p],
                    label=f"{p.capitalize()}-LN: α = {alpha:+.2f}")
        deepest = result.depths[-1]
        means = [m for m, _ in result.layers[p][deepest]]
        stds = [s for _, s in result.layers[p][deepest]]
        right.errorbar(range(1, deepest + 1), means, yerr=stds, marker="o", color=colors[p], capsize=2,
                       label=f"{p.capitalize()}-LN")
    left.set(xlabel="depth L", ylabel="last layer ‖∂L/∂W2‖_F", title="last layer at initialization")
    left.legend()
    right.set(xlabel="layer", ylabel="‖∂L/∂W2‖_F", title=f"per layer, L = {result.depths[-1]}")
    right.legend()
    fig.suptitle(f"FFN W2 gradient at init, d = {result.settings.d_model}, {result.seeds} seeds, "
                 f"{result.settings.loss} loss")
    fig.tight_layout()
    from graftkit.checkpoint import atomic_write

    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    plt.close(fig)
    return Path(path)


def write(result: GradNormResult, out_dir: str | Path) -> tuple[Path, Path]:
    """``gradnorm.json`` (the table) and ``gradnorm.png`` in ``out_dir``, written atomically."""
    from graftkit.checkpoint import atomic_write

    out = Path(out_dir)
    text = json.dumps(result.to_json(), indent=2) + "\n"
    table = atomic_write(out / "gradnorm.json", lambda handle: handle.write(text.encode()))
    return table, plot(result, out / "gradnorm.png")
