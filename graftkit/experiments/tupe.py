"""TUPE (Ke, He, Liu, ICLR 2021): untied positional attention reaches BERT's validation loss in fewer steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graftkit.experiments.mlm_run import MLMCorpus, MLMTraining, mlm_corpus, steps_to_reach, train_mlm
from graftkit.registry import Outcome, RunContext, experiment

# arm -> (label, model kind, TUPE position mode)
ARMS: dict[str, tuple[str, str, str | None]] = {
    "bert_a": ("BERT-A (positions added to the input)", "bert", None),
    "tupe_a": ("TUPE-A (untied absolute, [CLS] untied)", "tupe", "absolute"),
    "tupe_r": ("TUPE-R (TUPE-A + relative buckets)", "tupe", "relative"),
}
#: a TUPE arm must reach BERT-A's final validation loss within this fraction of BERT-A's steps
MAX_STEP_FRACTION = 0.5


@dataclass(frozen=True)
class TupeSettings:
    """Model size and training budget; ``vocab`` and ``max_len`` are read by the corpus builder."""

    hidden: int
    layers: int
    steps: int
    eval_every: int
    lr: float = 1e-3
    warmup_fraction: float = 0.1
    batch: int = 16
    max_len: int = 32
    vocab: int = 2000
    heads: int = 4


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


def train_curve(arm: str, seed: int, settings: TupeSettings, corpus: MLMCorpus) -> list[float]:
    """Validation MLM loss every ``eval_every`` steps; weights, batches, masks and dropout follow ``seed``
    (the same batches and masks for every arm), the caller's random state is left untouched."""
    _, kind, position_mode = ARMS[arm]
    training = MLMTraining(steps=settings.steps, eval_every=settings.eval_every, lr=settings.lr,
                           warmup_steps=max(1, round(settings.warmup_fraction * settings.steps)) - 1,
                           batch=settings.batch, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    return train_mlm(lambda: _model(kind, position_mode, settings, len(corpus.vocab), corpus.pad), corpus,
                     training, seed)


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
    fractions = [metrics.get("fraction_tupe_a"), metrics.get("fraction_tupe_r")]
    return all(f is not None and f <= MAX_STEP_FRACTION for f in fractions)


@experiment(
    "tupe-vs-bert", method="tupe",
    claim="TUPE (untied positional attention, [CLS] untied) reaches BERT's pre-training quality with a "
          "fraction of the steps (paper: ~30% of BERT-A's; TUPE-A and TUPE-R at 300k steps beat BERT-A at 1M).",
    rule=f"Same size, seed, batches, masks, lr and steps for BERT-A, TUPE-A and TUPE-R (MLM). Target = BERT-A's "
         f"final validation MLM loss. Supported if TUPE-A and TUPE-R each reach the target within "
         f"{MAX_STEP_FRACTION:.0%} of BERT-A's steps (first evaluation at or below it).",
    verdict=_supported,
)
def tupe_vs_bert(ctx: RunContext) -> Outcome:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = (TupeSettings(hidden=64, layers=4, steps=300, eval_every=20) if ctx.quick
                else TupeSettings(hidden=64, layers=4, steps=1500, eval_every=50, max_len=48))
    corpus = mlm_corpus(settings.vocab, settings.max_len)
    curves = {arm: train_curve(arm, ctx.seed, settings, corpus) for arm in ARMS}
    fractions = step_fractions(curves, settings.eval_every)
    target = curves["bert_a"][-1]
    metrics: dict[str, Any] = {"target_loss": target}
    table = []
    for arm, (label, _, _) in ARMS.items():
        metrics[f"final_loss_{arm}"] = curves[arm][-1]
        row = {"arm": label, "final_valid_loss": curves[arm][-1], "best_valid_loss": min(curves[arm])}
        if arm in fractions:
            metrics[f"fraction_{arm}"] = fractions[arm]
            row["fraction_of_bert_steps_to_target"] = ("not reached" if fractions[arm] is None
                                                       else round(fractions[arm], 3))
        table.append(row)

    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = [(i + 1) * settings.eval_every for i in range(len(curves["bert_a"]))]
    for arm, color in zip(ARMS, ("tab:gray", "tab:blue", "tab:green")):
        ax.plot(x, curves[arm], color=color, label=ARMS[arm][0])
    ax.axhline(target, color="black", linewidth=0.8, linestyle=":", label="target (BERT-A final)")
    ax.set(xlabel="training step", ylabel="validation MLM loss",
           title=f"{settings.layers} layers, d {settings.hidden}, lr {settings.lr:g}")
    ax.legend()
    fig.tight_layout()
    figure = ctx.figure_path("tupe_vs_bert.png")
    fig.savefig(figure, dpi=110)
    plt.close(fig)
    return Outcome(
        metrics=metrics, table=table, figures=[figure],
        data="REAL English: graftkit.data.text sentences (Python's help topics and stdlib docstrings), "
             f"word vocabulary of {len(corpus.vocab)}, 90/10 train/validation split, BERT masking (15%), "
             f"[CLS] w1 .. wn [SEP] rows of <= {settings.max_len} tokens.",
        notes=f"hf_models PreLNBertForMaskedLM (Post-LN, learned absolute positions added to the input) vs "
              f"TupeForMaskedLM (Post-LN), both on graftkit's core: {settings.layers} layers, hidden "
              f"{settings.hidden}, {settings.heads} heads, FFN {4 * settings.hidden}, batch {settings.batch}, "
              f"{settings.steps} steps, AdamW (0.9, 0.98), lr {settings.lr:g} after a linear warm-up over "
              f"{settings.warmup_fraction:.0%} of the steps, then constant; one seed. The paper pre-trains "
              "BERT-base for 1M steps on 16GB of text and judges GLUE; this is a minutes-long CPU analogue on "
              "short sentences, where word order carries less of the loss than in 512-token documents.",
    )
