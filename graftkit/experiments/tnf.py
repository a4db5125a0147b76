"""TNF (Wu et al., ICLR 2021): BERT with notes for rare words vs plain BERT, branched from one shared checkpoint.

The corpus (:mod:`graftkit.data.rare_words`, SYNTHETIC) gives every rare word a hidden class that only its
other sentences show; the probe rows mask a class word beside a rare word, so the probe loss measures what a
model knows of a rare word's meaning. Per seed: BERT is pre-trained from scratch off the word-frequency
plateau (the shared checkpoint); from it BERT and BERT-TNF continue with the same data order, masks and
dropout, each at its own learning rate (:data:`LEARNING_RATES`, under graftkit's protocol).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from graftkit.data.rare_words import RareWordCorpus, RareWordData
from graftkit.experiments import mlm_run, protocol
from graftkit.experiments.mlm_run import MLMTraining, bert_mask, steps_to_reach
from graftkit.experiments.protocol import Gate
from graftkit.registry import Outcome, RunContext, experiment

ARMS = {"bert": "BERT", "tnf": "BERT-TNF"}
#: The continuation's grid is searched at --full on the tuning seed (each arm's final validation MLM loss, TNF
#: with its notes); the quick values are what that search chose from the 500-step checkpoint (docs/tnf.md,
#: `--full` run: 1e-3 for both arms).
LEARNING_RATES = protocol.LearningRates(grid=(3e-4, 1e-3, 3e-3), quick={"bert": 1e-3, "tnf": 1e-3})
#: the verdict's speed part: TNF reaches BERT's final loss within this fraction of BERT's steps (paper: 0.4)
STEPS_FRACTION_BOUND = 0.9
#: the gate ``notes_taken``: at least this fraction of the rare words hold a note at the end (the batches are
#: drawn with replacement, so in 200 steps of 32 rows a rare word of 8 rows in 8000 goes unseen with p ~0.002)
NOTES_TAKEN_FRACTION = 0.95
#: the gate ``classes_learned``: at the end both arms' loss on the common rows' masked partners (the slot shows
#: the class) is this far below ln(class words), the loss of knowing that a class word goes there and no more
CLASS_MARGIN = 0.1
#: the pre-training that makes the shared checkpoint draws its batches from seed + this: not the branch's order
PRETRAIN_DATA_OFFSET = 500


@dataclass(frozen=True)
class TnfSettings:
    """Model, pre-training and continuation every arm shares (the continuation's lr is each arm's own)."""

    pretrain_steps: int
    steps: int
    eval_every: int
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    layer_norm: str = "post"
    batch: int = 32
    #: 500 steps at 3e-3 take the checkpoint off the plateau with the classes learned (200 at 1e-3 did not, in
    #: seed 0): a note can carry a class only once the model knows the classes (docs/tnf.md)
    pretrain_lr: float = 3e-3
    pretrain_warmup: int = 20
    branch_warmup: int = 10
    note_half_window: int = 1
    data: RareWordData = field(default_factory=RareWordData)

    def pretraining(self) -> MLMTraining:
        return MLMTraining(steps=self.pretrain_steps, eval_every=self.pretrain_steps, lr=self.pretrain_lr,
                           warmup_steps=self.pretrain_warmup, batch=self.batch)

    def continuation(self, lr: float) -> MLMTraining:
        return MLMTraining(steps=self.steps, eval_every=self.eval_every, lr=lr, warmup_steps=self.branch_warmup,
                           batch=self.batch)


#: --full is the quick budget with a third seed and the lr grid (its seeds 0 and 1 are the quick run's)
QUICK = TnfSettings(pretrain_steps=500, steps=200, eval_every=25)
FULL = QUICK


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


def _build(settings: TnfSettings, data: RareWordCorpus):
    from hf_models.tnf import TnfConfig, TnfForMaskedLM

    corpus = data.corpus
    return TnfForMaskedLM(TnfConfig(
        vocab_size=len(corpus.vocab), hidden_size=settings.hidden, num_hidden_layers=settings.layers,
        num_attention_heads=settings.heads, intermediate_size=4 * settings.hidden,
        max_position_embeddings=corpus.max_len, type_vocab_size=0, pad_token_id=corpus.pad,
        num_rare_words=data.num_rare, note_half_window=settings.note_half_window,
        layer_norm_position=settings.layer_norm))


def logits_with_notes(model, inputs: torch.Tensor, attention: torch.Tensor, spans: torch.Tensor | None,
                      labels: torch.Tensor) -> torch.Tensor:
    """Eval-mode logits of a ``TnfForMaskedLM``: with ``spans`` the notes are mixed into the rare words' inputs
    exactly as in its training forward (rare words with a target among their tokens not mixed), but no note is
    taken (the dictionary is left as it is); without, the plain backbone (the model one keeps)."""
    from hf_models.core.embeddings import resolve_position_ids
    from hf_models.tnf import note_inputs_embeds

    model.eval()
    if spans is None:
        return model(inputs, attention_mask=attention).logits
    embeddings = model.bert.embeddings
    positions = resolve_position_ids(None, attention, inputs.shape[1], inputs.device)
    mix, notes = model.notes.token_notes(spans, inputs.shape[1], labels)
    mixed = note_inputs_embeds(embeddings.word_embeddings(inputs), embeddings.position_embeddings(positions),
                               notes, mix, model.config.note_weight)
    return model(inputs_embeds=mixed, attention_mask=attention, position_ids=positions).logits


def masked_loss(model, inputs: torch.Tensor, labels: torch.Tensor, attention: torch.Tensor,
                spans: torch.Tensor | None) -> float:
    """Mean cross-entropy over the targets of ``labels`` (see :func:`logits_with_notes`)."""
    with torch.no_grad():
        logits = logits_with_notes(model, inputs, attention, spans, labels)
        return float(torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1)))


@dataclass(frozen=True)
class Validation:
    """The validation rows under the fixed masks every run is scored on, and their rare-word spans."""

    inputs: torch.Tensor
    labels: torch.Tensor
    attention: torch.Tensor
    spans: torch.Tensor

    @classmethod
    def of(cls, data: RareWordCorpus) -> Validation:
        corpus = data.corpus
        inputs, labels = bert_mask(corpus.valid, corpus.vocab,
                                   torch.Generator().manual_seed(mlm_run.VALID_MASK_SEED))
        return cls(inputs, labels, (corpus.valid != corpus.pad).long(), data.rare_spans(corpus.valid))

    def loss(self, model, notes: bool) -> float:
        return masked_loss(model, self.inputs, self.labels, self.attention, self.spans if notes else None)


def train(model, data: RareWordCorpus, training: MLMTraining, seed: int, take_notes: bool,
          evaluate: Callable[[Any], float], on_eval: Callable[[int], None] | None = None) -> list[float]:
    """Train ``model`` (BERT masking; with ``take_notes`` the batches' rare-word spans go to the TNF forward)
    and return ``evaluate(model)`` after every ``eval_every`` steps (nan from the first non-finite value on).
    Batches, masks and dropout follow ``seed``; the caller's random state is left untouched."""
    from hf_models.tnf.modeling_tnf import NO_RARE_VOCABULARY

    corpus = data.corpus
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        if not take_notes:  # BERT on purpose: the model's warning that it trains without notes says nothing here
            warnings.filterwarnings("ignore", message=re.escape(NO_RARE_VOCABULARY[:40]))
        torch.manual_seed(seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=training.lr, betas=training.betas, eps=training.eps,
                                      weight_decay=training.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, training.lr_factor)
        order = torch.Generator().manual_seed(seed)
        curve: list[float] = []
        for step in range(1, training.steps + 1):
            model.train()
            batch = corpus.train[torch.randint(len(corpus.train), (training.batch,), generator=order)]
            inputs, labels = bert_mask(batch, corpus.vocab, order)
            spans = data.rare_spans(batch) if take_notes else None  # from the unmasked rows, as the paper
            loss = model(inputs, attention_mask=(batch != corpus.pad).long(), labels=labels, rare_spans=spans).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if step % training.eval_every == 0:
                value = evaluate(model)
                if not math.isfinite(value):
                    return curve + [math.nan] * (training.evaluations - len(curve))
                curve.append(value)
                if on_eval is not None:
                    on_eval(step)
    return curve


def shuffled_spans(spans: torch.Tensor, num_rare: int, seed: int) -> torch.Tensor:
    """``spans`` with every rare word's index replaced by another rare word's (one random cycle through all
    of them, so no word keeps its own): each rare word gets another rare word's note."""
    order = torch.randperm(num_rare, generator=torch.Generator().manual_seed(seed))
    other = torch.empty_like(order)
    other[order] = order.roll(-1)
    return torch.where(spans[..., :1] >= 0, torch.cat([other[spans[..., 0].clamp_min(0)][..., None],
                                                       spans[..., 1:]], -1), spans)


def probe_losses(model, data: RareWordCorpus, arm: str, seed: int) -> dict[str, float]:
    """Loss on the probes' masked class words: BERT as it is; TNF with its notes, with another rare word's notes
    (``shuffled_notes``) and without notes (the kept backbone)."""
    attention = torch.ones_like(data.probe_inputs)
    spans = data.rare_spans(data.probe_inputs)

    def loss(with_spans: torch.Tensor | None) -> float:
        return masked_loss(model, data.probe_inputs, data.probe_labels, attention, with_spans)

    if arm == "bert":
        return {"bert": loss(None)}
    return {"tnf": loss(spans), "tnf_shuffled_notes": loss(shuffled_spans(spans, data.num_rare, seed)),
            "tnf_without_notes": loss(None)}


def pretrain(settings: TnfSettings, data: RareWordCorpus, valid: Validation, seed: int,
             on_eval: Callable[[int], None] | None = None) -> tuple[dict[str, torch.Tensor], float]:
    """The shared checkpoint of ``seed``: BERT (a TnfForMaskedLM trained without spans, notes empty) from its
    seeded init; returns its state and its validation loss."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build(settings, data)
    curve = train(model, data, settings.pretraining(), seed + PRETRAIN_DATA_OFFSET, False,
                  lambda m: valid.loss(m, notes=False), on_eval)
    return {k: v.clone() for k, v in model.state_dict().items()}, curve[-1]


def branch(arm: str, lr: float, checkpoint: dict[str, torch.Tensor], settings: TnfSettings, data: RareWordCorpus,
           valid: Validation, seed: int, on_eval: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Continue ``checkpoint`` as ``arm`` for ``settings.steps`` steps: its validation curve (TNF with its notes),
    probe losses and how many rare words hold a note."""
    model = _build(settings, data)
    protocol.copy_shared_init(model, checkpoint)
    notes = arm == "tnf"
    curve = train(model, data, settings.continuation(lr), seed, notes, lambda m: valid.loss(m, notes), on_eval)
    inputs, labels = data.common_partners()
    return {"curve": curve, "probe": probe_losses(model, data, arm, seed),
            "common_partner": masked_loss(model, inputs, labels, torch.ones_like(inputs), None),
            "final_without_notes": valid.loss(model, notes=False),
            "words_with_notes": int(model.notes.has_note.sum())}


def _censored_fraction(steps: int | None, settings: TnfSettings) -> float:
    """TNF's steps over BERT's; never reached counts one evaluation past the budget."""
    return (settings.steps + settings.eval_every if steps is None else steps) / settings.steps


def _supported(m: dict[str, Any]) -> bool:
    return (m["rare_bert_minus_tnf_ci_low"] > 0 and m["rare_shuffled_minus_tnf_ci_low"] > 0
            and m["steps_fraction_tnf_ci_high"] <= STEPS_FRACTION_BOUND)


@experiment(
    "tnf-vs-bert", method="tnf",
    claim="BERT pre-trained with notes for rare words (TNF) reaches plain BERT's MLM loss in fewer steps (paper: "
          "at 40% of the steps, '60% less time'), because a rare word's note carries its meaning from the "
          "contexts it was seen in.",
    rule=f"SYNTHETIC rows whose rare words (20% of sentences, {QUICK.data.occurrences} training sentences each) "
         f"stand for a hidden class that only their other sentences show; note window k {QUICK.note_half_window} "
         f"(3 tokens of {QUICK.data.words}). Per seed a {QUICK.layers}-layer BERT is pre-trained "
         f"{QUICK.pretrain_steps} steps (the shared checkpoint), then BERT and BERT-TNF continue from it "
         f"{QUICK.steps} steps with the same data order, masks and dropout, each at its own lr "
         f"({LEARNING_RATES.words()}); {protocol.QUICK_SEEDS} paired seeds at quick, {protocol.FULL_SEEDS} at "
         "--full. loss_rare_* = loss on the probe rows' masked class words (each beside a rare word). Gates (else "
         f"undecided): checkpoint_off_plateau and left_plateau (the checkpoint and both arms end, in every seed, "
         f"at least {mlm_run.PLATEAU_MARGIN} nats below the unigram loss; TNF scored with its notes), "
         f"notes_taken (at least {NOTES_TAKEN_FRACTION:.0%} of the rare words hold a note at the end), "
         f"classes_learned (both arms' loss on the common rows' masked partners ends, in every seed, at least "
         f"{CLASS_MARGIN} below ln of the number of class words). Supported if the 95% bootstrap intervals of the "
         "paired differences loss_rare_bert - loss_rare_tnf and loss_rare_tnf_shuffled_notes - loss_rare_tnf "
         "both lie above 0 and that of steps_fraction_tnf (steps for TNF, with its notes, to reach BERT's final "
         "validation loss, over BERT's steps; never reached: one evaluation past the budget) lies at or below "
         f"{STEPS_FRACTION_BOUND}.",
    verdict=protocol.gated(_supported),
)
def tnf_vs_bert(ctx: RunContext) -> Outcome:
    settings = QUICK if ctx.quick else FULL
    data = settings.data.make()
    valid = Validation.of(data)
    plateau = mlm_run.unigram_loss(data.corpus)
    seeds = protocol.paired_seeds(ctx.seed, ctx.quick)
    table: list[dict[str, Any]] = []

    def progress(stage: str, total: int) -> Callable[[int], None]:
        return lambda step: ctx.progress(stage, step, total)

    lrs = dict(LEARNING_RATES.quick) if ctx.quick else {}
    if not ctx.quick:
        tuning = protocol.tuning_seed(ctx.seed)
        checkpoint, _ = pretrain(settings, data, valid, tuning, progress(f"pre-training seed {tuning}: step",
                                                                         settings.pretrain_steps))
        for arm in ARMS:
            def score(lr: float, arm: str = arm) -> float:
                stage = f"lr grid: {arm} lr {lr:g} seed {tuning}: step"
                return branch(arm, lr, checkpoint, settings, data, valid, tuning,
                              progress(stage, settings.steps))["curve"][-1]
            lrs[arm], scores = protocol.best_learning_rate(LEARNING_RATES.grid, score)
            table += [{"arm": ARMS[arm], "lr": lr, "seed": f"{tuning} (tuning)", "final_valid_loss": value,
                       "chosen": lr == lrs[arm]} for lr, value in scores.items()]

    checkpoint_losses: list[float] = []
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    for seed in seeds:
        checkpoint, loss = pretrain(settings, data, valid, seed,
                                    progress(f"pre-training seed {seed}: step", settings.pretrain_steps))
        checkpoint_losses.append(loss)
        for arm in ARMS:
            runs[arm].append(branch(arm, lrs[arm], checkpoint, settings, data, valid, seed,
                                    progress(f"{arm} lr {lrs[arm]:g} seed {seed}: step", settings.steps)))

    finals = {arm: [r["curve"][-1] for r in runs[arm]] for arm in ARMS}
    probes = {"bert": [r["probe"]["bert"] for r in runs["bert"]],
              **{key: [r["probe"][key] for r in runs["tnf"]]
                 for key in ("tnf", "tnf_shuffled_notes", "tnf_without_notes")}}
    reached = [steps_to_reach(r["curve"], target, settings.eval_every)
               for r, target in zip(runs["tnf"], finals["bert"], strict=True)]
    fractions = [_censored_fraction(s, settings) for s in reached]
    noted = min(r["words_with_notes"] for r in runs["tnf"])
    common = {arm: [r["common_partner"] for r in runs[arm]] for arm in ARMS}
    no_class = math.log(settings.data.classes * settings.data.words_per_class) - CLASS_MARGIN
    off = mlm_run.off_plateau_loss(plateau)
    gates = [Gate("checkpoint_off_plateau", max(checkpoint_losses) <= off,
                  f"the shared checkpoints' validation losses are {_join(checkpoint_losses)}; leaving the plateau "
                  f"needs at most {off:.3f} (the unigram loss {plateau:.3f} - {mlm_run.PLATEAU_MARGIN})."),
             mlm_run.left_plateau_gate(finals, seeds, plateau),
             Gate("notes_taken", noted >= NOTES_TAKEN_FRACTION * data.num_rare,
                  f"the TNF arm ends with notes for {noted} of {data.num_rare} rare words (fewest over seeds; "
                  f"needed: {NOTES_TAKEN_FRACTION:.0%})."),
             Gate("classes_learned", max(max(v) for v in common.values()) <= no_class,
                  f"the loss on the common rows' masked partners is {_join(common['bert'])} (BERT) and "
                  f"{_join(common['tnf'])} (BERT-TNF, no notes there) per seed; knowing the classes needs at most "
                  f"{no_class:.3f} (ln of the {settings.data.classes * settings.data.words_per_class} class words - "
                  f"{CLASS_MARGIN}): without them no note can carry a class.")]
    metrics: dict[str, Any] = {"unigram_loss": plateau, **{f"lr_{arm}": lr for arm, lr in lrs.items()},
                               **protocol.gate_metrics(gates)}
    for key, values in probes.items():
        metrics[f"loss_rare_{key}"] = sum(values) / len(values)
        metrics |= protocol.per_seed(f"loss_rare_{key}", seeds, values)
    metrics |= protocol.paired_difference("rare_bert_minus_tnf", probes["bert"], probes["tnf"])
    metrics |= protocol.paired_difference("rare_shuffled_minus_tnf", probes["tnf_shuffled_notes"], probes["tnf"])
    metrics["steps_fraction_tnf"] = sum(fractions) / len(fractions)
    low, high = protocol.bootstrap_interval(fractions)
    metrics |= {"steps_fraction_tnf_ci_low": low, "steps_fraction_tnf_ci_high": high}
    metrics |= protocol.per_seed("steps_fraction_tnf", seeds,
                                 [None if s is None else s / settings.steps for s in reached])
    for arm in ARMS:
        metrics |= protocol.per_seed(f"loss_common_partner_{arm}", seeds, common[arm])
    metrics |= protocol.per_seed("words_with_notes", seeds, [r["words_with_notes"] for r in runs["tnf"]])
    metrics |= protocol.per_seed("checkpoint_valid_loss", seeds, checkpoint_losses)
    for arm in ARMS:
        metrics |= protocol.per_seed(f"final_valid_loss_{arm}", seeds, finals[arm])
    metrics |= protocol.per_seed("final_valid_loss_tnf_without_notes", seeds,
                                 [r["final_without_notes"] for r in runs["tnf"]])

    table += _table(runs, probes, reached, settings, lrs)
    figure = _plot(ctx, settings, runs, seeds, plateau, lrs)
    caveats = protocol.gate_caveats(gates)
    caveats.append(f"{len(seeds)} paired seeds: the 95% bootstrap interval of a mean over {len(seeds)} values "
                   "spans at most their range; it says how far the seeds agree, not a population interval.")
    caveats.append("A shuffled note belongs to another rare word, of the same hidden class with probability "
                   f"1/{settings.data.classes}.")
    return Outcome(
        metrics=metrics, table=table, figures=[figure], data=settings.data.describe(),
        notes=f"TnfForMaskedLM (hf_models; Post-LN BERT, hidden {settings.hidden}, {settings.layers} layers, "
              f"{settings.heads} heads, dropout 0.1), batch {settings.batch}, Adam (0.9, 0.98), no weight decay. "
              f"Shared checkpoint: {settings.pretrain_steps} steps at lr {settings.pretrain_lr:g} (warm-up "
              f"{settings.pretrain_warmup} steps) without notes, its batches from seed + {PRETRAIN_DATA_OFFSET}; "
              f"each arm then {settings.steps} steps from it with a fresh optimizer (warm-up "
              f"{settings.branch_warmup} steps, then constant lr: {', '.join(f'{a} {lr:g}' for a, lr in lrs.items())}"
              f"; {LEARNING_RATES.words()}). TNF: λ 0.5, γ 0.1, k {settings.note_half_window}, first note replaces, "
              "masked rare words not mixed, notes from the unmasked rows' rare words. Validation every "
              f"{settings.eval_every} steps on fixed masks; TNF's curve and probes with its notes mixed in eval mode "
              f"(no note taken). Seeds {seeds}. The paper trains BERT-base for 1M steps on 3.3B words; this is a "
              "CPU-minutes analogue on data built so that the notes can matter.",
        caveats=caveats,
    )


def _join(values: Sequence[float]) -> str:
    return " / ".join("diverged" if math.isnan(v) else f"{v:.3f}" for v in values)


def _table(runs: dict[str, list[dict[str, Any]]], probes: dict[str, list[float]], reached: list[int | None],
           settings: TnfSettings, lrs: dict[str, float]) -> list[dict[str, Any]]:
    rows = []
    for arm in ARMS:
        row: dict[str, Any] = {"arm": ARMS[arm], "lr": lrs[arm],
                               "final_valid_loss (per seed)": _join([r["curve"][-1] for r in runs[arm]]),
                               "loss_common_partner (per seed)": _join([r["common_partner"] for r in runs[arm]])}
        if arm == "bert":
            row |= {"loss_rare (per seed)": _join(probes["bert"]), "steps_to_bert_final": settings.steps}
        else:
            row |= {"loss_rare (per seed)": _join(probes["tnf"]),
                    "loss_rare, shuffled notes": _join(probes["tnf_shuffled_notes"]),
                    "loss_rare, no notes (kept model)": _join(probes["tnf_without_notes"]),
                    "steps_to_bert_final": " / ".join(mlm_run.NEVER if s is None else str(s) for s in reached)}
        rows.append(row)
    return rows


def _plot(ctx: RunContext, settings: TnfSettings, runs: dict[str, list[dict[str, Any]]], seeds: list[int],
          plateau: float, lrs: dict[str, float]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = [settings.pretrain_steps + (i + 1) * settings.eval_every for i in range(settings.steps // settings.eval_every)]
    for arm, color in (("bert", "tab:gray"), ("tnf", "tab:blue")):
        for i, run in enumerate(runs[arm]):
            ax.plot(x, run["curve"], color=color, linestyle="-" if i == 0 else "--",
                    label=f"{ARMS[arm]}, lr {lrs[arm]:g}" if i == 0 else None)
    ax.axhline(plateau, color="black", linewidth=0.8, linestyle=":", label="unigram loss (plateau)")
    ax.set(xlabel="training step (from scratch; arms branch at the shared checkpoint)",
           ylabel="validation MLM loss", title=f"seeds {seeds} (solid: first); TNF with its notes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    figure = ctx.figure_path("tnf_curves.png")
    fig.savefig(figure, dpi=110)
    plt.close(fig)
    return figure
