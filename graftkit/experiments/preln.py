"""Pre-LN (Xiong et al., ICML 2020): the gradient scale at initialization, and training without warm-up."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from graftkit.experiments import mlm_run, protocol
from graftkit.experiments.mlm_run import (
    PLATEAU_MARGIN,
    MarkovData,
    MLMCorpus,
    MLMTraining,
    TopicData,
    off_plateau_loss,
    steps_to_reach,
    train_mlm,
)
from graftkit.experiments.protocol import Gate
from graftkit.registry import Outcome, RunContext, experiment

#: the per-layer profile (paper's Figure 3) at this depth, with the masked-LM loss
PROFILE_DEPTH = 12
#: Post-LN "rises toward the output": the interval of last/first lies above this; Pre-LN is "flat": its interval
#: lies within [1 / FLAT_BAND, FLAT_BAND]
RISE, FLAT_BAND = 1.5, 1.5


def _gradnorm_supported(m: dict[str, Any]) -> bool:
    profile = (m["gradnorm_ratio_last_first_post_ci_low"] > RISE
               and 1 / FLAT_BAND <= m["gradnorm_ratio_last_first_pre_ci_low"]
               and m["gradnorm_ratio_last_first_pre_ci_high"] <= FLAT_BAND)
    return profile and abs(m["alpha_post"]) < 0.2 and m["alpha_pre"] < -0.25


@experiment(
    "preln-gradnorm", method="preln",
    claim="At initialization the FFN-weight gradient norm rises from the first layer toward the output for "
          "Post-LN and is flat across layers for Pre-LN (paper's Figure 3); the last layer's gradient is "
          "independent of depth L for Post-LN and shrinks like 1/sqrt(L) for Pre-LN (Theorem 1).",
    rule=f"Profile: a {PROFILE_DEPTH}-layer PreLNBertForMaskedLM at initialization under its masked-LM loss, "
         "Post-LN and Pre-LN paired by seed (same weights and batch); per seed the ratio ‖∂L/∂W2‖ of the last "
         "layer / the first. Depth scaling: fit α in ‖∂L/∂W2 of the last layer‖ ∝ L^α over the depths "
         "(log-log least squares, theory's linear-readout loss). Gate: every norm finite and positive. "
         f"Supported if the 95% bootstrap interval of the Post-LN ratio lies above {RISE}, the Pre-LN ratio's "
         f"lies within [{1 / FLAT_BAND:.3g}, {FLAT_BAND}], |α_post| < 0.2 and α_pre < -0.25.",
    verdict=protocol.gated(_gradnorm_supported),
)
def gradnorm(ctx: RunContext) -> Outcome:
    from graftkit import preln_gradnorm as gn

    depths = [2, 4, 6, 8, 12] if ctx.quick else [2, 4, 6, 8, 12, 16, 24]
    seeds = 5 if ctx.quick else 10
    size = dict(batch=4, seq_len=16) if ctx.quick else dict(batch=8, seq_len=32)
    linear = gn.measure(depths, seeds, gn.GradNormSettings(d_model=64, loss="linear", **size), first_seed=ctx.seed)
    softmax = gn.measure(depths, seeds, gn.GradNormSettings(d_model=64, loss="softmax", **size),
                         first_seed=ctx.seed)
    figure = gn.plot(linear, ctx.figure_path("gradnorm.png"))
    figure_softmax = gn.plot(softmax, ctx.figure_path("gradnorm_softmax.png"))
    table = [{**row, **{f"{k}_softmax": v for k, v in soft.items() if k != "depth"}}
             for row, soft in zip(linear.summary_rows(), softmax.summary_rows())]

    data = MarkovData(train_rows=8, valid_rows=8 * seeds)
    corpus = data.corpus()
    profile_seeds = [ctx.seed + i for i in range(seeds)]
    profiles: dict[str, list[list[float]]] = {"post": [], "pre": []}
    for i, seed in enumerate(profile_seeds):  # one batch of 8 validation rows per seed, BERT-masked
        rows = corpus.valid[8 * i: 8 * (i + 1)]
        inputs, labels = mlm_run.bert_mask(rows, corpus.vocab, torch.Generator().manual_seed(seed))
        for position in profiles:
            profiles[position].append(gn.mlm_ffn_grad_norms(
                position, PROFILE_DEPTH, seed, inputs, (rows != corpus.pad).long(), labels, len(corpus.vocab),
                corpus.pad, gn.GradNormSettings(d_model=64)))
    norms = [v for runs in profiles.values() for run in runs for v in run]
    gates = [Gate("finite", all(math.isfinite(v) and v > 0 for v in norms),
                  f"{sum(not (math.isfinite(v) and v > 0) for v in norms)} of {len(norms)} gradient norms are "
                  "not finite and positive.")]
    metrics: dict[str, Any] = {"alpha_post": linear.exponents["post"], "alpha_pre": linear.exponents["pre"],
                               "alpha_post_softmax": softmax.exponents["post"],
                               "alpha_pre_softmax": softmax.exponents["pre"], **protocol.gate_metrics(gates)}
    for position, runs in profiles.items():
        ratios = [run[-1] / run[0] for run in runs]
        low, high = protocol.bootstrap_interval(ratios)
        name = f"gradnorm_ratio_last_first_{position}"
        metrics |= {name: sum(ratios) / len(ratios), f"{name}_ci_low": low, f"{name}_ci_high": high,
                    **protocol.per_seed(name, profile_seeds, ratios)}
    profile_table = [{"layer": layer + 1, **{f"{p}_mlm_grad_norm_mean": sum(run[layer] for run in runs) / len(runs)
                                             for p, runs in profiles.items()}} for layer in range(PROFILE_DEPTH)]
    figure_profile = _plot_profile(ctx, profiles, profile_seeds)
    return Outcome(
        metrics=metrics, table=table + profile_table, figures=[figure_profile, figure, figure_softmax],
        data="SYNTHETIC: Gaussian token vectors N(0, I) into graftkit's shared encoder (hf_models.core) at "
             f"initialization for the depth scaling; for the profile one BERT-masked batch of 8 rows per seed "
             f"from {data.describe()[len('SYNTHETIC: '):]} No training.",
        notes=f"d_model 64, 4 heads, ReLU FFN 4d, Xavier-normal weights, depths {depths}, {seeds} seeds "
              f"({ctx.seed} to {ctx.seed + seeds - 1}), "
              f"batch {size['batch']} x {size['seq_len']} tokens. Depth scaling from the theory's setting: a loss "
              "whose gradient w.r.t. the output does not depend on the representation (random linear "
              "read-out). The softmax columns (cross-entropy of a random read-out against random labels) are "
              "reported, not judged: there deep Post-LN stacks, whose tokens grow alike under attention at "
              "init, sum that gradient coherently and the Post-LN norm rises with depth. Profile: "
              f"PreLNBertForMaskedLM, {PROFILE_DEPTH} layers, d 64, no dropout, encoder linear layers "
              f"Xavier-normal, embeddings and head as the model's own init, masked-LM loss; seeds {profile_seeds}.",
        caveats=protocol.gate_caveats(gates) + [
            f"{seeds} paired seeds: the bootstrap interval is over these seeds' ratios (weights and batch vary "
            "with the seed)."],
    )


def _plot_profile(ctx: RunContext, profiles: dict[str, list[list[float]]], seeds: list[int]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for position, color in (("post", "tab:red"), ("pre", "tab:blue")):
        runs = torch.tensor(profiles[position])
        layers = range(1, runs.shape[1] + 1)
        ax.errorbar(layers, runs.mean(0), yerr=runs.std(0) if len(runs) > 1 else None, marker="o", color=color,
                    capsize=2, label=f"{position.capitalize()}-LN")
    ax.set(xlabel="layer", ylabel="‖∂L/∂W2‖_F (masked-LM loss)", yscale="log",
           title=f"FFN W2 gradient per layer at initialization, {len(seeds)} seeds")
    ax.legend()
    fig.tight_layout()
    figure = ctx.figure_path("gradnorm_profile.png")
    fig.savefig(figure, dpi=110)
    plt.close(fig)
    return figure


#: arm -> (label, layer-norm position, warm-up). Post-LN with warm-up and Pre-LN without it each run at their
#: own best lr; Post-LN without warm-up runs at the grid's top lr, the regime in which the claim says Post-LN
#: needs warm-up (the gate ``regime``).
WARMUP_ARMS: dict[str, tuple[str, str, bool]] = {
    "postln_warmup": ("Post-LN, warm-up (sets the target)", "post", True),
    "preln_nowarmup": ("Pre-LN, no warm-up", "pre", False),
    "postln_nowarmup_top_lr": ("Post-LN, no warm-up, top lr of the grid", "post", False),
}
TUNED = ("postln_warmup", "preln_nowarmup")
#: The grid is searched at --full on the tuning seed (final validation loss after the --full budget); the
#: quick values are what that search chose on the topic rows (docs/preln.md, `--full` run).
WARMUP_LEARNING_RATES = protocol.LearningRates(grid=(1e-3, 3e-3, 1e-2),
                                               quick={"postln_warmup": 3e-3, "preln_nowarmup": 3e-3})
TOP_LR = max(WARMUP_LEARNING_RATES.grid)
#: the gate ``regime``: Post-LN without warm-up at the top lr must end this far above the target (or diverge)
REGIME_MARGIN = 0.1


@dataclass(frozen=True)
class WarmupSettings:
    """Model, data and training every run shares (the learning rate is each arm's own)."""

    steps: int
    eval_every: int
    layers: int = 12
    hidden: int = 32
    heads: int = 4
    batch: int = 64
    dropout: float = 0.0
    beta2: float = 0.98
    warmup_fraction: float = 0.1
    data: TopicData = field(default_factory=TopicData)

    @property
    def warmup_steps(self) -> int:
        return round(self.warmup_fraction * self.steps)

    def training(self, lr: float, warmup: bool) -> MLMTraining:
        """Adam (0.9, ``beta2``), eps 1e-8, no weight decay; with ``warmup`` lr rises linearly over the first
        ``warmup_fraction`` of the steps, then stays constant; without it lr is constant from step 1."""
        return MLMTraining(steps=self.steps, eval_every=self.eval_every, lr=lr, batch=self.batch,
                           warmup_steps=self.warmup_steps if warmup else 0, betas=(0.9, self.beta2), eps=1e-8)


#: 6 runs of 150 steps (12 layers of width 32, batch 64 of 16-token rows) fit the quick budget; a validation
#: every 10 steps resolves the steps to the target to 10. --full is
#: the quick budget with a third seed and the lr grid (its seeds 0 and 1 are the quick run's).
QUICK_WARMUP = WarmupSettings(steps=150, eval_every=10)
FULL_WARMUP = QUICK_WARMUP


def _train(arm: str, lr: float, seed: int, settings: WarmupSettings, corpus: MLMCorpus,
           on_eval: Callable[[int], None] | None = None) -> list[float]:
    """Validation MLM loss every ``eval_every`` steps of one arm (nan from the first non-finite value on). Post-LN
    and Pre-LN have the same parameters, so under one seed they start from the same values."""
    from hf_models import PreLNBertConfig, PreLNBertForMaskedLM

    _, position, warmup = WARMUP_ARMS[arm]
    config = PreLNBertConfig(
        vocab_size=len(corpus.vocab), hidden_size=settings.hidden, num_hidden_layers=settings.layers,
        num_attention_heads=settings.heads, intermediate_size=4 * settings.hidden,
        max_position_embeddings=corpus.max_len, type_vocab_size=0, pad_token_id=corpus.pad,
        hidden_dropout_prob=settings.dropout, attention_probs_dropout_prob=settings.dropout,
        layer_norm_position=position)
    return train_mlm(lambda: PreLNBertForMaskedLM(config), corpus, settings.training(lr, warmup), seed, on_eval)


def _censored(steps: int | None, settings: WarmupSettings) -> int:
    """Steps for the interval: a run that never reached the target counts one evaluation past the budget."""
    return settings.steps + settings.eval_every if steps is None else steps


def _warmup_supported(metrics: dict[str, Any]) -> bool:
    return metrics["steps_postln_minus_preln_ci_low"] > 0


def _words(settings: WarmupSettings, seeds: int) -> str:
    return f"{settings.steps} steps, {seeds} paired seeds"


@experiment(
    "preln-warmup", method="preln",
    claim="Pre-LN trains without learning-rate warm-up and reaches the warmed-up Post-LN's validation loss in "
          "fewer steps (paper: ~40% fewer at BERT-base), while Post-LN needs warm-up at high learning rates; "
          "the effect belongs to deep stacks.",
    rule=f"A {QUICK_WARMUP.layers}-layer BERT on SYNTHETIC topic rows (quick {_words(QUICK_WARMUP, 2)}, "
         f"full {_words(FULL_WARMUP, 3)}); paired seeds (same data order, masks and initial values). Post-LN "
         f"with warm-up ({QUICK_WARMUP.warmup_fraction:.0%} of the steps) and Pre-LN without warm-up each at "
         f"their own lr ({WARMUP_LEARNING_RATES.words()}); Post-LN without warm-up at the top lr {TOP_LR:g}. Per "
         "seed, target = Post-LN-with-warm-up's final validation MLM loss; steps = first evaluation at or below "
         "it (never: one evaluation past the budget). Gates (else undecided): left_plateau — Post-LN with "
         f"warm-up and Pre-LN without end, in every seed, at least {PLATEAU_MARGIN} nats below the unigram "
         f"loss; regime — Post-LN without warm-up at lr {TOP_LR:g} ends on average at least {REGIME_MARGIN} "
         "nats above the target, or diverges. Supported if the 95% bootstrap interval of the paired "
         "difference steps_postln_warmup - steps_preln_nowarmup lies above 0.",
    verdict=protocol.gated(_warmup_supported),
)
def warmup(ctx: RunContext) -> Outcome:
    settings = QUICK_WARMUP if ctx.quick else FULL_WARMUP
    corpus = settings.data.corpus()
    plateau = mlm_run.unigram_loss(corpus)
    seeds = protocol.paired_seeds(ctx.seed, ctx.quick)
    table: list[dict[str, Any]] = []
    lrs = {arm: WARMUP_LEARNING_RATES.quick[arm] for arm in TUNED} if ctx.quick else {}
    if not ctx.quick:
        tuning = protocol.tuning_seed(ctx.seed)
        for arm in TUNED:
            def score(lr: float, arm: str = arm) -> float:
                stage = f"lr grid: {arm} lr {lr:g} seed {tuning}: step"
                return _train(arm, lr, tuning, settings, corpus,
                              lambda step: ctx.progress(stage, step, settings.steps))[-1]
            lrs[arm], scores = protocol.best_learning_rate(WARMUP_LEARNING_RATES.grid, score)
            table += [{"arm": WARMUP_ARMS[arm][0], "lr": lr, "seed": f"{tuning} (tuning)", "final_valid_loss": value,
                       "chosen": lr == lrs[arm]} for lr, value in scores.items()]
    lrs["postln_nowarmup_top_lr"] = TOP_LR

    curves: dict[str, list[list[float]]] = {arm: [] for arm in WARMUP_ARMS}
    for seed in seeds:
        for arm in WARMUP_ARMS:
            stage = f"{arm} lr {lrs[arm]:g} seed {seed}: step"
            curves[arm].append(_train(arm, lrs[arm], seed, settings, corpus,
                                      lambda step, stage=stage: ctx.progress(stage, step, settings.steps)))

    finals = {arm: [c[-1] for c in runs] for arm, runs in curves.items()}
    targets = finals["postln_warmup"]
    steps = {arm: [steps_to_reach(c, t, settings.eval_every) for c, t in zip(curves[arm], targets, strict=True)]
             for arm in TUNED}
    top = finals["postln_nowarmup_top_lr"]
    gaps = [v - t for v, t in zip(top, targets, strict=True)]
    diverged = any(math.isnan(v) for v in top)
    mean_gap = math.nan if diverged else sum(gaps) / len(gaps)
    regime = diverged or mean_gap >= REGIME_MARGIN
    at_top = "diverged" if diverged else f"ends {mean_gap:+.3f} nats from the target on average"
    gates = [mlm_run.left_plateau_gate({arm: finals[arm] for arm in TUNED}, seeds, plateau),
             Gate("regime", regime, f"Post-LN without warm-up at the top lr {TOP_LR:g} {at_top} (needed: diverged "
                                    f"or at least +{REGIME_MARGIN}).")]
    metrics: dict[str, Any] = {"unigram_loss": plateau, **{f"lr_{arm}": lr for arm, lr in lrs.items()},
                               **protocol.gate_metrics(gates)}
    for arm in TUNED:  # the mean over seeds; None when a seed never reached the target
        metrics[f"steps_{arm}"] = None if None in steps[arm] else sum(steps[arm]) / len(steps[arm])
    metrics |= protocol.per_seed("steps_postln_warmup", seeds, steps["postln_warmup"])
    metrics |= protocol.per_seed("steps_preln_nowarmup", seeds, steps["preln_nowarmup"])
    metrics |= protocol.paired_difference(
        "steps_postln_minus_preln", [_censored(s, settings) for s in steps["postln_warmup"]],
        [_censored(s, settings) for s in steps["preln_nowarmup"]])
    metrics["final_postln_nowarmup_top_lr"] = math.nan if diverged else sum(top) / len(top)
    for arm in WARMUP_ARMS:
        metrics |= protocol.per_seed(f"final_{arm}", seeds, finals[arm])
        leave = [steps_to_reach(c, off_plateau_loss(plateau), settings.eval_every) for c in curves[arm]]
        row = {"arm": WARMUP_ARMS[arm][0], "lr": lrs[arm],
               "warmup_steps": settings.warmup_steps if WARMUP_ARMS[arm][2] else 0,
               "final_valid_loss (per seed)": " / ".join("diverged" if math.isnan(v) else f"{v:.3f}"
                                                         for v in finals[arm]),
               "steps_to_leave_plateau (per seed)": " / ".join(mlm_run.NEVER if s is None else str(s)
                                                               for s in leave)}
        if arm in TUNED:
            row["steps_to_target (per seed)"] = " / ".join(mlm_run.NEVER if s is None else str(s)
                                                           for s in steps[arm])
        table.append(row)

    figure = _plot_warmup(ctx, settings, curves, seeds, plateau, lrs)
    caveats = protocol.gate_caveats(gates)
    caveats.append(f"{len(seeds)} paired seeds: the 95% bootstrap interval of a mean over {len(seeds)} values "
                   "spans at most their range; it says how far the seeds agree, not a population interval.")
    caveats.append("The target is the warmed-up Post-LN's own final loss, so its steps to the target are at most "
                   "the budget and often equal to it; Pre-LN is faster when it gets there earlier.")
    return Outcome(
        metrics=metrics, table=table, figures=[figure], data=settings.data.describe(),
        notes=f"PreLNBertForMaskedLM (hf_models): {settings.layers} layers, hidden {settings.hidden}, "
              f"{settings.heads} heads, FFN {4 * settings.hidden}, dropout {settings.dropout:g}, "
              f"batch {settings.batch}, {settings.steps} steps per run, Adam (0.9, {settings.beta2}) eps 1e-8, "
              f"no weight decay; warm-up linear over the first {settings.warmup_steps} steps, then constant; "
              f"lr per arm: {', '.join(f'{a} {lr:g}' for a, lr in lrs.items())} "
              f"({WARMUP_LEARNING_RATES.words()}); seeds {seeds}. The paper trains BERT-base for 1M "
              "steps and reaches Post-LN's validation loss with ~40% fewer steps; this is a minutes-long CPU "
              "analogue.",
        caveats=caveats,
    )


def _plot_warmup(ctx: RunContext, settings: WarmupSettings, curves: dict[str, list[list[float]]],
                 seeds: list[int], plateau: float, lrs: dict[str, float]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = [(i + 1) * settings.eval_every for i in range(settings.steps // settings.eval_every)]
    colors = {"postln_warmup": "tab:red", "preln_nowarmup": "tab:blue", "postln_nowarmup_top_lr": "tab:orange"}
    for arm, runs in curves.items():
        for i, curve in enumerate(runs):
            ax.plot(x, curve, color=colors[arm], linestyle="-" if i == 0 else "--",
                    label=f"{WARMUP_ARMS[arm][0]}, lr {lrs[arm]:g}" if i == 0 else None)
    ax.axhline(plateau, color="black", linewidth=0.8, linestyle=":", label="unigram loss (plateau)")
    ax.set(xlabel="training step", ylabel="validation MLM loss",
           title=f"{settings.layers} layers, d {settings.hidden}, seeds {seeds} (solid: first)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    figure = ctx.figure_path("warmup_curves.png")
    fig.savefig(figure, dpi=110)
    plt.close(fig)
    return figure
