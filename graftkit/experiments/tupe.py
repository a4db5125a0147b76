"""TUPE (Ke, He, Liu, ICLR 2021): untied positional attention reaches BERT's validation loss in fewer steps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from graftkit.experiments import mlm_run
from graftkit.experiments.mlm_run import (
    PLATEAU_MARGIN,
    MLMCorpus,
    MLMTraining,
    mlm_corpus,
    off_plateau_loss,
    steps_to_reach,
    train_mlm,
)
from graftkit.registry import Outcome, RunContext, experiment

# arm -> (label, model kind, TUPE position mode)
ARMS: dict[str, tuple[str, str, str | None]] = {
    "bert_a": ("BERT-A (positions added to the input)", "bert", None),
    "tupe_a": ("TUPE-A (untied absolute, [CLS] untied)", "tupe", "absolute"),
    "tupe_r": ("TUPE-R (TUPE-A + relative buckets)", "tupe", "relative"),
}
#: a TUPE arm must reach BERT-A's final validation loss within this fraction of BERT-A's steps
MAX_STEP_FRACTION = 0.5
#: BERT-A's final loss must have left the unigram plateau for the comparison to decide anything


@dataclass(frozen=True)
class TupeSettings:
    """Model size and training budget, the same for every arm."""

    hidden: int
    layers: int
    steps: int
    eval_every: int
    seeds: int = 1
    lr: float = 2e-3
    warmup_fraction: float = 0.1
    batch: int = mlm_run.BATCH
    max_len: int = mlm_run.MAX_LEN
    vocab: int = mlm_run.VOCAB_SIZE
    heads: int = 4

    def training(self) -> MLMTraining:
        """AdamW (0.9, 0.98), eps 1e-6, weight decay 0.01 (the paper's BERT recipe), lr linear over the first
        ``warmup_fraction`` of the steps, then constant."""
        return MLMTraining(steps=self.steps, eval_every=self.eval_every, lr=self.lr, batch=self.batch,
                           warmup_steps=round(self.warmup_fraction * self.steps), betas=(0.9, 0.98), eps=1e-6,
                           weight_decay=0.01)


QUICK = TupeSettings(hidden=64, layers=4, steps=600, eval_every=25)
FULL = TupeSettings(hidden=64, layers=4, steps=1500, eval_every=50, seeds=2)


def _model(kind: str, position_mode: str | None, settings: TupeSettings, vocab_size: int, pad: int):
    """BERT-A or TUPE on graftkit's core, identical sizes (Post-LN, no token types, no dropout change)."""
    from hf_models import PreLNBertConfig, PreLNBertForMaskedLM, TupeConfig, TupeForMaskedLM

    size = dict(vocab_size=vocab_size, hidden_size=settings.hidden, num_hidden_layers=settings.layers,
                num_attention_heads=settings.heads, intermediate_size=4 * settings.hidden,
                max_position_embeddings=settings.max_len, type_vocab_size=0, pad_token_id=pad,
                layer_norm_position="post")
    if kind == "bert":
        return PreLNBertForMaskedLM(PreLNBertConfig(**size))
    return TupeForMaskedLM(TupeConfig(**size, position_mode=position_mode))


def train_curve(arm: str, seed: int, settings: TupeSettings, corpus: MLMCorpus,
                on_eval: Callable[[int], None] | None = None) -> list[float]:
    """Validation MLM loss every ``eval_every`` steps; weights, batches, masks and dropout follow ``seed``
    (the same batches and masks for every arm), the caller's random state is left untouched."""
    _, kind, position_mode = ARMS[arm]
    return train_mlm(lambda: _model(kind, position_mode, settings, len(corpus.vocab), corpus.pad), corpus,
                     settings.training(), seed, on_eval)


def step_fractions(curves: dict[str, list[float]], eval_every: int) -> dict[str, float | None]:
    """For each TUPE arm: steps to reach BERT-A's final validation loss / BERT-A's steps (None: never)."""
    target, total = curves["bert_a"][-1], len(curves["bert_a"]) * eval_every
    out = {}
    for arm in ARMS:
        if arm != "bert_a":
            steps = steps_to_reach(curves[arm], target, eval_every)
            out[arm] = None if steps is None else steps / total
    return out


def _supported(metrics: dict[str, Any]) -> bool | None:
    if "unigram_loss" in metrics and not metrics["target_loss"] <= off_plateau_loss(metrics["unigram_loss"]):
        return None  # BERT-A never left the word-frequency plateau: reaching its loss shows nothing
    fractions = [metrics.get("fraction_tupe_a"), metrics.get("fraction_tupe_r")]
    return all(f is not None and f <= MAX_STEP_FRACTION for f in fractions)


def _budget(settings: TupeSettings) -> str:
    return f"{settings.steps} steps, {settings.seeds} seed(s)"


@experiment(
    "tupe-vs-bert", method="tupe",
    claim="TUPE (untied positional attention, [CLS] untied) reaches BERT's pre-training quality with a "
          "fraction of the steps (paper: ~30% of BERT-A's; TUPE-A and TUPE-R at 300k steps beat BERT-A at 1M).",
    rule=f"Same size, seeds, batches, masks, lr and steps for BERT-A, TUPE-A and TUPE-R (MLM; quick "
         f"{_budget(QUICK)}, full {_budget(FULL)}; curves averaged over the seeds). Target = BERT-A's final "
         f"validation MLM loss. Supported if TUPE-A and TUPE-R each reach the target within "
         f"{MAX_STEP_FRACTION:.0%} of BERT-A's steps (first evaluation at or below it); undecided if the target "
         f"is not at least {PLATEAU_MARGIN} nats below the unigram loss (BERT-A never left the word-frequency "
         "plateau).",
    verdict=_supported,
)
def tupe_vs_bert(ctx: RunContext) -> Outcome:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = QUICK if ctx.quick else FULL
    corpus = mlm_corpus(settings.vocab, settings.max_len)
    plateau = mlm_run.unigram_loss(corpus)
    seeds = [ctx.seed + s for s in range(settings.seeds)]
    per_seed: dict[str, list[list[float]]] = {arm: [] for arm in ARMS}
    for seed in seeds:
        for arm in ARMS:
            stage = f"{arm} seed {seed}: step"
            per_seed[arm].append(train_curve(arm, seed, settings, corpus,
                                             lambda step, stage=stage: ctx.progress(stage, step, settings.steps)))
    curves = {arm: torch.tensor(runs).mean(0).tolist() for arm, runs in per_seed.items()}
    fractions = step_fractions(curves, settings.eval_every)
    seed_fractions = [step_fractions({arm: per_seed[arm][i] for arm in ARMS}, settings.eval_every)
                      for i in range(len(seeds))]
    target = curves["bert_a"][-1]
    metrics: dict[str, Any] = {"target_loss": target, "unigram_loss": plateau}
    table = []
    for arm, (label, _, _) in ARMS.items():
        leave = steps_to_reach(curves[arm], off_plateau_loss(plateau), settings.eval_every)
        metrics[f"final_loss_{arm}"] = curves[arm][-1]
        metrics[f"steps_to_leave_plateau_{arm}"] = leave
        row = {"arm": label, "final_valid_loss": curves[arm][-1], "best_valid_loss": min(curves[arm]),
               "steps_to_leave_plateau": mlm_run.NEVER if leave is None else leave}
        if arm in fractions:
            metrics[f"fraction_{arm}"] = fractions[arm]
            row["fraction_of_bert_steps_to_target"] = (mlm_run.NEVER if fractions[arm] is None
                                                       else round(fractions[arm], 3))
            if len(seeds) > 1:
                for seed, by_seed in zip(seeds, seed_fractions, strict=True):
                    metrics[f"fraction_{arm}_seed{seed}"] = by_seed[arm]
                    row[f"fraction, seed {seed} alone"] = (mlm_run.NEVER if by_seed[arm] is None
                                                           else round(by_seed[arm], 3))
        table.append(row)

    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = [(i + 1) * settings.eval_every for i in range(len(curves["bert_a"]))]
    for arm, color in zip(ARMS, ("tab:gray", "tab:blue", "tab:green"), strict=True):
        ax.plot(x, curves[arm], color=color, label=ARMS[arm][0])
    ax.axhline(target, color="black", linewidth=0.8, linestyle=":", label="target (BERT-A final)")
    ax.axhline(plateau, color="tab:red", linewidth=0.8, linestyle=":", label="unigram loss (plateau)")
    ax.set(xlabel="training step", ylabel="validation MLM loss",
           title=f"{settings.layers} layers, d {settings.hidden}, lr {settings.lr:g}, {len(seeds)} seed(s)")
    ax.legend()
    fig.tight_layout()
    figure = ctx.figure_path("tupe_vs_bert.png")
    fig.savefig(figure, dpi=110)
    plt.close(fig)
    caveats = [f"BERT-A's final loss is {plateau - target:.3f} nats below the unigram loss ({plateau:.3f}): how "
               "far the baseline got beyond learning word frequencies."]
    if len(seeds) == 1:
        caveats.append("One seed: the seed-to-seed spread of the fractions is not measured in this run (--full "
                       f"runs {FULL.seeds}).")
    return Outcome(
        metrics=metrics, table=table, figures=[figure],
        data="REAL English: graftkit.data.text sentences (Python's help topics and stdlib docstrings), "
             f"word vocabulary of {len(corpus.vocab)} (rarer words are [UNK], never masked), 90/10 "
             f"train/validation split, BERT masking (15%), [CLS] w1 .. wn [SEP] rows of <= {settings.max_len} "
             "tokens.",
        notes=f"hf_models PreLNBertForMaskedLM (Post-LN, learned absolute positions added to the input) vs "
              f"TupeForMaskedLM (Post-LN), both on graftkit's core: {settings.layers} layers, hidden "
              f"{settings.hidden}, {settings.heads} heads, FFN {4 * settings.hidden}, batch {settings.batch}, "
              f"{settings.steps} steps, AdamW (0.9, 0.98) weight decay 0.01, lr {settings.lr:g} after a linear "
              f"warm-up over {settings.warmup_fraction:.0%} of the steps, then constant; seeds {seeds}. A run has "
              f"left the unigram plateau once its validation loss is {PLATEAU_MARGIN} nats below the unigram loss. "
              "The paper pre-trains BERT-base for 1M steps on 16GB of text and judges GLUE; this is a "
              "minutes-long CPU analogue on short sentences, where word order carries less of the loss than in "
              "512-token documents.",
        caveats=caveats,
    )
