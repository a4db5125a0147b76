"""MC-BERT (Xu et al. 2020): MLM vs ELECTRA-style RTD vs MC-BERT at an equal pre-training compute (FLOPs),
judged by a few-label linear probe on a semantic downstream task built offline from real English, behind a
"pre-training helps" gate (MLM must beat a random-initialization encoder first)."""

from __future__ import annotations

import importlib
import inspect
import random
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from graftkit.registry import Outcome, RunContext, experiment

OBJECTIVES = ("mlm", "rtd", "mc")
LABELS = {"random": "none (random init)", "mlm": "MLM (BERT)", "rtd": "RTD (ELECTRA)", "mc": "MC-BERT"}
NEITHER = "<neither>"
#: the MLM encoder's mean probe accuracy must exceed the random-initialization encoder's by this much, or the run
#: cannot judge the objectives (pre-training did not help at all)
GATE_MARGIN = 0.03
#: MC-BERT's mean probe accuracy must exceed each competitor's by this much (and in every pre-training seed)
MIN_GAP = 0.01
#: inverse regularization strengths of the probe, picked on the validation split
PROBE_C = (0.01, 0.1, 1.0, 10.0)

#: Topic classes: the part of Python a sentence documents. "language" is the interactive help's topic pages
#: (the language reference); the others are the docstrings of groups of standard-library modules.
TOPICS: dict[str, tuple[str, ...] | None] = {
    "language": None,
    "files": ("os", "pathlib", "shutil", "tarfile", "zipfile", "tempfile", "io"),
    "network": ("socket", "http.client", "urllib.request", "email"),
    "concurrency": ("asyncio", "threading", "subprocess"),
    "numbers": ("decimal", "fractions", "statistics", "random", "datetime"),
}


@dataclass(frozen=True)
class McBertSettings:
    budget_gflop: float  # pre-training FLOPs per objective and seed (forward + backward, counted)
    snapshots: int  # evenly spaced budgets at which the main encoder is probed
    seeds: int  # pre-training seeds (and random initializations)
    finetune_epochs: int  # most epochs of the fine-tuning reported beside the probe (early stopping)
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    mc_size_divider: int = 2
    max_len: int = 64  # a pre-training passage: consecutive sentences of one document, up to max_len - 2 words
    vocab: int = 1000
    batch: int = 12
    lr: float = 3e-3
    warmup_fraction: float = 0.1
    initializer_range: float = 0.1
    per_topic: int = 98  # labelled sentences per topic (held out of pre-training)
    train_per_topic: int = 20
    valid_per_topic: int = 18
    probe_splits: int = 5  # label splits the probe accuracy is averaged over
    finetune_lr: float = 3e-4
    finetune_batch: int = 16
    calibration_batches: int = 3  # batches whose FLOPs are counted to set each objective's steps


def _normalized(text: str) -> str:
    return " ".join(text.split())


def _topic_texts() -> dict[str, str]:
    """Each topic's source text, whitespace-normalized (the corpus joins lines with spaces)."""
    from pydoc_data.topics import topics

    texts = {"language": _normalized(" ".join(topics[k] for k in sorted(topics)))}
    for topic, modules in TOPICS.items():
        if modules is None:
            continue
        docs = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            for name in modules:
                module = importlib.import_module(name)
                for _, obj in sorted(vars(module).items()):
                    if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__ == module.__name__:
                        docs.append(inspect.getdoc(obj) or "")
                docs.append(module.__doc__ or "")
        texts[topic] = _normalized(" ".join(docs))
    return texts


def labelled_pool(sentences: list[str], per_topic: int, seed: int) -> list[list[str]]:
    """Per topic (in :data:`TOPICS` order), up to ``per_topic`` sentences found in exactly that topic's text,
    drawn with ``seed``; every topic gets as many as the smallest has, so the classes are balanced."""
    texts = list(_topic_texts().values())
    by_topic: list[list[str]] = [[] for _ in TOPICS]
    for sentence in sentences:
        hits = [i for i, text in enumerate(texts) if _normalized(sentence) in text]
        if len(hits) == 1:
            by_topic[hits[0]].append(sentence)
    size = min(per_topic, *(len(members) for members in by_topic))
    rng = random.Random(seed)
    return [rng.sample(members, size) for members in by_topic]


def label_split(pool_sizes: int, n_topics: int, train: int, valid: int,
                seed: int) -> tuple[list[int], list[int], list[int]]:
    """Row indices (rows ordered topic by topic, ``pool_sizes`` each) of a (train, validation, test) split with
    ``train`` and ``valid`` rows per topic; the rest of each topic is test."""
    if train + valid >= pool_sizes:
        raise ValueError(f"train ({train}) + valid ({valid}) per topic leave no test sentences of {pool_sizes}")
    rng = random.Random(seed)
    splits: tuple[list[int], list[int], list[int]] = ([], [], [])
    for topic in range(n_topics):
        rows = list(range(topic * pool_sizes, (topic + 1) * pool_sizes))
        rng.shuffle(rows)
        splits[0].extend(rows[:train])
        splits[1].extend(rows[train:train + valid])
        splits[2].extend(rows[train + valid:])
    return splits


def passages(documents: list[list[str]], held_out: set[str], max_words: int) -> list[str]:
    """Each document's sentences (those in ``held_out`` dropped) joined, in order, into passages of at most
    ``max_words`` words; a passage never spans two documents, and a longer sentence is a passage alone (cut
    later by the encoding)."""
    from graftkit.data.text import words

    out = []
    for sentences in documents:
        current: list[str] = []
        for sentence in sentences:
            if sentence in held_out:
                continue
            tokens = words(sentence)
            if current and len(current) + len(tokens) > max_words:
                out.append(" ".join(current))
                current = []
            current += tokens
        if current:
            out.append(" ".join(current))
    return out


def _config(objective: str, settings: McBertSettings, vocab, **extra: Any):
    from graftkit.data.text import MASK, PAD
    from hf_models import McBertConfig

    return McBertConfig(
        vocab_size=len(vocab), hidden_size=settings.hidden, num_hidden_layers=settings.layers,
        num_attention_heads=settings.heads, intermediate_size=4 * settings.hidden,
        max_position_embeddings=settings.max_len, type_vocab_size=0, pad_token_id=vocab.index[PAD],
        mask_token_id=vocab.index[MASK], neither_token_id=vocab.index[NEITHER], objective=objective,
        mc_size_divider=settings.mc_size_divider, layer_norm_position="pre", hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, initializer_range=settings.initializer_range, **extra)


def _step_loss(model, batch: torch.Tensor, pad: int, special: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor:
    return model(batch, attention_mask=(batch != pad).long(), special_tokens_mask=torch.isin(batch, special),
                 generator=generator).loss


def flops_per_step(model, corpus: torch.Tensor, settings: McBertSettings, pad: int, special: torch.Tensor,
                   seed: int) -> float:
    """Mean FLOPs of one pre-training step (forward + backward, every matmul counted by torch's
    ``FlopCounterMode``, the meta controller's and the sampling's included) over calibration batches; the
    model's gradients are cleared afterwards."""
    from torch.utils.flop_counter import FlopCounterMode

    data = torch.Generator().manual_seed(seed)
    with FlopCounterMode(display=False) as counter:
        for _ in range(settings.calibration_batches):
            batch = corpus[torch.randint(len(corpus), (settings.batch,), generator=data)]
            _step_loss(model, batch, pad, special, data).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / settings.calibration_batches


def pretrain(objective: str, settings: McBertSettings, vocab, corpus: torch.Tensor, seed: int,
             ctx: RunContext | None = None) -> list[dict[str, Any]]:
    """Train ``objective`` for ``settings.budget_gflop`` GFLOPs (as steps: the budget over its counted FLOPs
    per step); the main encoder's weights at ``settings.snapshots`` evenly spaced budgets, with the steps done
    and the process CPU seconds spent (1 torch thread)."""
    from graftkit.data.text import CLS, PAD, SEP
    from hf_models import McBertForPreTraining

    pad, special = vocab.index[PAD], torch.tensor([vocab.index[CLS], vocab.index[SEP]])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = McBertForPreTraining(_config(objective, settings, vocab)).train()
        per_step = flops_per_step(model, corpus, settings, pad, special, seed + 7919)
        total = max(1, round(settings.budget_gflop * 1e9 / per_step))
        marks = [round(total * (i + 1) / settings.snapshots) for i in range(settings.snapshots)]
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.01)
        warmup = max(1, round(settings.warmup_fraction * total))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
        data = torch.Generator().manual_seed(seed)
        snapshots, start = [], time.process_time()
        for step in range(1, total + 1):
            batch = corpus[torch.randint(len(corpus), (settings.batch,), generator=data)]
            loss = _step_loss(model, batch, pad, special, data)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if ctx is not None and step % 50 == 0:
                ctx.progress(f"{objective} seed {seed}", step, total)
            if step in marks:
                snapshots.append({"gflop": step * per_step / 1e9, "steps": step, "loss": float(loss.detach()),
                                  "cpu_s": time.process_time() - start, "gflop_per_step": per_step / 1e9,
                                  "state": {k: v.clone() for k, v in model.mc_bert.state_dict().items()}})
    return snapshots


def _encoder(state: dict[str, torch.Tensor] | None, settings: McBertSettings, vocab, seed: int, **extra: Any):
    """The main encoder (``McBertModel``, or the classifier when ``num_labels`` is given) with ``state``'s
    weights, or randomly initialized with ``seed`` when None."""
    from hf_models import McBertForSequenceClassification, McBertModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = _config("mlm", settings, vocab, **extra)
        model = (McBertForSequenceClassification(config) if "num_labels" in extra
                 else McBertModel(config, add_pooling_layer=False))
    if state is not None:
        encoder = model.mc_bert if "num_labels" in extra else model
        missing, unexpected = encoder.load_state_dict(state, strict=False)
        if unexpected or not all(k.startswith("pooler") for k in missing):
            raise RuntimeError(f"snapshot does not fit the encoder: missing {missing}, unexpected {unexpected}")
    return model


def probe_features(encoder, inputs: torch.Tensor, pad: int) -> torch.Tensor:
    """Frozen sentence features: every layer's hidden states (the embeddings' output included), mean-pooled
    over the real tokens and concatenated ([n, (layers + 1) * d])."""
    encoder.eval()
    real = (inputs != pad).unsqueeze(-1).float()
    with torch.no_grad():
        states = encoder(inputs, attention_mask=real.squeeze(-1).long(), output_hidden_states=True).hidden_states
    return torch.cat([(h * real).sum(1) / real.sum(1) for h in states], dim=-1)


def probe_accuracy(features: torch.Tensor, labels: torch.Tensor, splits: list[tuple[list[int], ...]]) -> float:
    """Test accuracy of a logistic regression on standardized ``features``, its C picked on the validation
    rows, averaged over ``splits`` (train, validation, test). Deterministic (lbfgs)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    x, y = features.double().numpy(), labels.numpy()
    accuracies = []
    with threadpool_limits(1):
        for train, valid, test in splits:
            scaler = StandardScaler().fit(x[train])
            best_valid, best = -1.0, None
            for c in PROBE_C:
                model = LogisticRegression(C=c, max_iter=2000).fit(scaler.transform(x[train]), y[train])
                accuracy = model.score(scaler.transform(x[valid]), y[valid])
                if accuracy > best_valid:
                    best_valid, best = accuracy, model
            accuracies.append(float(best.score(scaler.transform(x[test]), y[test])))
    return statistics.fmean(accuracies)


def finetune(state: dict[str, torch.Tensor] | None, settings: McBertSettings, vocab, inputs: torch.Tensor,
             labels: torch.Tensor, split: tuple[list[int], ...], seed: int) -> float:
    """Test accuracy of the main encoder (``state``; random when None) fine-tuned on the split's train rows,
    keeping the epoch with the best validation accuracy (first best; at most ``settings.finetune_epochs``)."""
    from graftkit.data.text import PAD

    pad = vocab.index[PAD]
    model = _encoder(state, settings, vocab, seed, num_labels=len(TOPICS))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.finetune_lr, weight_decay=0.01)
    train, valid, test = (torch.tensor(rows) for rows in split)
    data = torch.Generator().manual_seed(seed)

    def accuracy(rows: torch.Tensor) -> float:
        model.eval()
        with torch.no_grad():
            logits = model(inputs[rows], attention_mask=(inputs[rows] != pad).long()).logits
        return float((logits.argmax(-1) == labels[rows]).float().mean())

    best_valid, best_test = accuracy(valid), accuracy(test)
    for _ in range(settings.finetune_epochs):
        model.train()
        for rows in train[torch.randperm(len(train), generator=data)].split(settings.finetune_batch):
            loss = model(inputs[rows], attention_mask=(inputs[rows] != pad).long(), labels=labels[rows]).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        valid_accuracy = accuracy(valid)
        if valid_accuracy > best_valid:
            best_valid, best_test = valid_accuracy, accuracy(test)
    return best_test


def _verdict(m: dict[str, Any]) -> bool | None:
    if m["pretraining_gain"] < GATE_MARGIN:
        return None  # pre-training did not help: the run cannot judge the objectives
    return all(m[f"mc_gap_min_{other}"] > 0 and m[f"mc_gap_mean_{other}"] >= MIN_GAP for other in ("mlm", "rtd"))


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


@experiment(
    "mcbert-vs-electra-vs-mlm", method="mcbert",
    claim="At equal pre-training compute, MC-BERT's main model transfers better to semantic tasks than "
          "ELECTRA's (RTD) and BERT's (MLM).",
    rule=f"Each objective pre-trains the same main model for the same FLOPs with the same seeds; judged at the "
         f"largest budget by a linear probe (frozen mean-pooled features, logistic regression) on a few-label "
         f"topic task, averaged over label splits. Gate: MLM's mean probe accuracy must beat a random-init "
         f"encoder's by >= {GATE_MARGIN} (else the run cannot judge). Supported if MC-BERT beats RTD and MLM in "
         f"every pre-training seed and by >= {MIN_GAP} on the mean.",
    verdict=_verdict,
)
def mcbert_vs_electra_vs_mlm(ctx: RunContext) -> Outcome:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from graftkit.data.text import PAD, WordVocab, english_documents, english_sentences
    from graftkit.runtime import single_thread

    settings = (McBertSettings(budget_gflop=300, snapshots=2, seeds=2, finetune_epochs=6) if ctx.quick
                else McBertSettings(budget_gflop=1200, snapshots=4, seeds=3, finetune_epochs=20))
    pool = labelled_pool(english_sentences(), settings.per_topic, ctx.seed)
    held_out = {s for members in pool for s in members}  # never seen in pre-training
    corpus_texts = passages(english_documents(), held_out, settings.max_len - 2)
    built = WordVocab.build(corpus_texts, max_size=settings.vocab - 1)
    vocab = WordVocab(built.tokens + [NEITHER], built.counts)
    corpus = vocab.encode_rows(corpus_texts, settings.max_len)
    pad = vocab.index[PAD]
    inputs = vocab.encode_rows([s for members in pool for s in members], settings.max_len)
    labels = torch.tensor([topic for topic, members in enumerate(pool) for _ in members])
    splits = [label_split(len(pool[0]), len(TOPICS), settings.train_per_topic, settings.valid_per_topic,
                          ctx.seed + 1000 + i) for i in range(settings.probe_splits)]
    seeds = [ctx.seed + i for i in range(settings.seeds)]

    probe: dict[str, list[list[float]]] = {}  # arm -> per snapshot -> per seed
    tuned: dict[str, list[float]] = {}  # arm -> per seed, at the largest budget
    runs: dict[str, list[list[dict[str, Any]]]] = {}  # objective -> per seed -> snapshots
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    with single_thread():
        ctx.progress("random init")
        probe["random"] = [[probe_accuracy(probe_features(_encoder(None, settings, vocab, s), inputs, pad),
                                           labels, splits) for s in seeds]]
        tuned["random"] = [finetune(None, settings, vocab, inputs, labels, splits[0], s) for s in seeds]
        for objective in OBJECTIVES:
            runs[objective] = [pretrain(objective, settings, vocab, corpus, s, ctx) for s in seeds]
            probe[objective] = [
                [probe_accuracy(probe_features(_encoder(run[i]["state"], settings, vocab, s), inputs, pad),
                                labels, splits) for run, s in zip(runs[objective], seeds)]
                for i in range(settings.snapshots)]
            ctx.progress(f"{objective} fine-tuning")
            tuned[objective] = [finetune(run[-1]["state"], settings, vocab, inputs, labels, splits[0], s)
                                for run, s in zip(runs[objective], seeds)]
    wall_s, cpu_s = time.perf_counter() - start_wall, time.process_time() - start_cpu

    final = {arm: values[-1] for arm, values in probe.items()}
    metrics: dict[str, Any] = {
        "pretraining_gain": statistics.fmean(final["mlm"]) - statistics.fmean(final["random"]),
        "run_wall_s": wall_s, "run_cpu_s": cpu_s,
    }
    for arm in ("random", *OBJECTIVES):
        metrics[f"probe_{arm}"] = statistics.fmean(final[arm])
        metrics[f"probe_sd_{arm}"] = _sd(final[arm])
        metrics[f"finetune_{arm}"] = statistics.fmean(tuned[arm])
        metrics[f"finetune_sd_{arm}"] = _sd(tuned[arm])
    for other in ("mlm", "rtd"):
        gaps = [mc - o for mc, o in zip(final["mc"], final[other])]
        metrics[f"mc_gap_min_{other}"] = min(gaps)
        metrics[f"mc_gap_mean_{other}"] = statistics.fmean(gaps)
    for objective in OBJECTIVES:
        last = [run[-1] for run in runs[objective]]
        metrics[f"steps_{objective}"] = last[0]["steps"]
        metrics[f"gflop_per_step_{objective}"] = statistics.fmean(r["gflop_per_step"] for r in last)
        metrics[f"pretraining_cpu_s_{objective}"] = statistics.fmean(r["cpu_s"] for r in last)

    table = [{"arm": LABELS["random"], "gflop": 0, "steps": 0, "pretraining_cpu_s": 0.0,
              "probe_mean": metrics["probe_random"], "probe_sd": metrics["probe_sd_random"],
              "probe_per_seed": [round(v, 3) for v in final["random"]],
              "finetune_mean": metrics["finetune_random"], "finetune_sd": metrics["finetune_sd_random"]}]
    for objective in OBJECTIVES:
        for i in range(settings.snapshots):
            snaps = [run[i] for run in runs[objective]]
            row = {"arm": LABELS[objective], "gflop": round(statistics.fmean(s["gflop"] for s in snaps), 1),
                   "steps": "/".join(str(s["steps"]) for s in snaps),
                   "pretraining_cpu_s": round(statistics.fmean(s["cpu_s"] for s in snaps), 1),
                   "probe_mean": statistics.fmean(probe[objective][i]), "probe_sd": _sd(probe[objective][i]),
                   "probe_per_seed": [round(v, 3) for v in probe[objective][i]]}
            if i == settings.snapshots - 1:
                row |= {"finetune_mean": metrics[f"finetune_{objective}"],
                        "finetune_sd": metrics[f"finetune_sd_{objective}"]}
            table.append(row)

    # accuracy against pre-training time beside accuracy against the budget's FLOPs: the same points
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    base, spread = metrics["probe_random"], metrics["probe_sd_random"]
    for ax, key, xlabel in zip(axes, ("gflop", "cpu_s"), ("pre-training compute (GFLOP, forward + backward)",
                                                          "pre-training CPU seconds (1 torch thread)")):
        ax.axhspan(base - spread, base + spread, color="black", alpha=0.08)
        ax.axhline(base, color="black", linewidth=0.8, linestyle=":", label=LABELS["random"])
        for objective, color in zip(OBJECTIVES, ("tab:gray", "tab:orange", "tab:blue")):
            x = [statistics.fmean(run[i][key] for run in runs[objective]) for i in range(settings.snapshots)]
            ax.errorbar(x, [statistics.fmean(v) for v in probe[objective]],
                        yerr=[_sd(v) for v in probe[objective]], marker="o", capsize=3, color=color,
                        label=LABELS[objective])
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel("topic probe test accuracy")
    axes[0].legend()
    fig.suptitle(f"main d {settings.hidden}, {settings.layers} layers; mean ± sd over {settings.seeds} seeds")
    fig.tight_layout()
    figure = ctx.figure_path("probe_accuracy_vs_pretraining_compute_and_time.png")
    fig.savefig(figure, dpi=110)
    plt.close(fig)

    n_test = len(splits[0][2])
    caveats = []
    if metrics["pretraining_gain"] < GATE_MARGIN:
        caveats.append(f"Gate failed: MLM pre-training raised the probe accuracy by "
                       f"{metrics['pretraining_gain']:+.3f} over a random-init encoder (needed >= {GATE_MARGIN}); "
                       "at this budget pre-training does not help, so the run cannot rank the objectives.")
    return Outcome(
        metrics=metrics, table=table, figures=[figure], caveats=caveats,
        data=f"REAL English (graftkit.data.text: Python's help topics and stdlib docstrings). Pre-training: "
             f"{len(corpus_texts)} passages (consecutive sentences of one document, <= {settings.max_len - 2} "
             f"words) with every labelled sentence removed, word vocabulary {len(vocab)} with <neither>. "
             f"Downstream: the topic of a sentence, {len(TOPICS)} balanced classes ({', '.join(TOPICS)}: the "
             f"language reference or a group of stdlib modules), labelled by the text it comes from; "
             f"{len(pool[0])} per topic, per split {settings.train_per_topic} train / {settings.valid_per_topic} "
             f"validation / {len(pool[0]) - settings.train_per_topic - settings.valid_per_topic} test per topic, "
             f"{settings.probe_splits} splits. It tests semantics: the label is what the sentence is about, and "
             f"with {settings.train_per_topic} labelled sentences per topic most test sentences' topic words never "
             "occur in training, so the encoder must already place related words together.",
        notes=f"Main model Pre-LN, {settings.layers} layers, d {settings.hidden}, {settings.heads} heads, FFN "
              f"{4 * settings.hidden}, no dropout, init std {settings.initializer_range:g}, identical for the three "
              f"objectives; the meta controller / generator has the same depth at 1/{settings.mc_size_divider} "
              f"width (RTD and MC-BERT). k 10, λ 20 (MC-BERT) and 50 (RTD), 15% masking. AdamW lr "
              f"{settings.lr:g}, {settings.warmup_fraction:.0%} linear warm-up, batch {settings.batch} x "
              f"{settings.max_len}; {settings.budget_gflop:g} GFLOP per objective and seed (equal FLOPs, as the "
              f"paper compares; counted per step with torch's FlopCounterMode), {settings.seeds} seeds. Probe: "
              f"features of every layer mean-pooled, logistic regression with C in {PROBE_C} picked on validation; "
              f"one test split = {n_test} sentences. Fine-tuning (reported, not judged): split 0, "
              f"lr {settings.finetune_lr:g}, batch {settings.finetune_batch}, up to {settings.finetune_epochs} "
              f"epochs, best validation epoch. Whole run {wall_s:.0f} s wall, {cpu_s:.0f} s CPU (1 torch thread). "
              "The paper pre-trains BERT-base for up to 1M steps and reports GLUE.",
    )
