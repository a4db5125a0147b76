"""Does an MC-BERT-pre-trained encoder fine-tune worse than a random one, and does the gap close with budget?

Arms with the same main encoder (Pre-LN unless ``--layer-norm-position post``, 2 layers, d 64, 4 heads; the same
initial weights and data order within a seed): random init (no pre-training), BERT's MLM, ELECTRA's RTD, MC-BERT
with graftkit's defaults (k 10, lambda 20, negatives without replacement, original excluded) and MC-BERT with the
reference code's settings (k 10, lambda 50, with replacement, original allowed), all
``hf_models.McBertForPreTraining`` with objective mlm / rtd / mc. Each pre-training run is snapshotted at every
``--steps`` budget (one run: AdamW, linear warm-up over ``--warmup`` steps, then a constant learning rate), and
each snapshot's main encoder is fine-tuned as ``graftkit pretrain`` leaves it in OUT/encoder:
``McBertForSequenceClassification`` with the pre-trained ``mc_bert`` weights and a new (random, identical across
arms of a seed) pooler and classifier.

Pre-training text: the prose of Python's help topics and standard-library docstrings
(``graftkit.data.text.english_documents``) in passages of consecutive sentences, without the labelled
sentences. Fine-tuning task: the source of a sentence, 3 balanced classes (the language reference, i.e.
``pydoc_data.topics``; the docstrings of the typing / data-structure modules; of the file-system modules),
a fixed train / validation / test split of held-out sentences; the epoch with the best validation accuracy is
reported (its test accuracy).

Measured on every snapshot, on the labelled sentences: the spread of the sentence vectors (RMS distance to their
centroid over their RMS norm; 0 = every sentence the same vector) of the mean-pooled states per layer
(embeddings, each layer, after the final LayerNorm), of the [CLS] state that fine-tuning reads and of the
(random) pooler's output on it; the final LayerNorm's scale (mean |gamma|); and on one fixed pre-training
batch the norm of the gradient of lambda * L_D and of L_MLM on the shared word embeddings, the cosine of the
discriminator gradient's mean row with the embedding matrix's mean row, and the embeddings' anisotropy (norm
of the mean row over the mean row norm).

Rule, fixed before the run: for each MC-BERT arm, "the gap vanishes with budget" when at the largest budget the
95% bootstrap interval of the paired difference (MC-BERT - random init, over seeds) includes 0 or lies above
it and its mean is larger than at the smallest budget; "the gap persists" when that interval lies below 0;
otherwise "undecided". When the smallest budget's interval does not lie below 0 there is no gap to close there
(reported as such).

``--swap`` (the intervention): at the largest budget, for each pre-trained arm and seed, two hybrids of the
snapshot's main encoder and the seed's random-init encoder are fine-tuned and measured as above: (a) "pre-trained
layers, init embeddings" (the snapshot with its embedding module, i.e. the word and position embeddings and the
embedding LayerNorm, put back to the random-init values) and (b) "init layers, pre-trained embeddings" (the
random-init encoder with the snapshot's embedding module). Rule for them, fixed before the run: a hybrid
"recovers" when the 95% bootstrap interval of its paired difference to random init includes 0 or lies above it,
and "keeps the gap" when it lies below 0. (a) recovers and (b) keeps the gap: the damage lives in the
embeddings; (b) recovers and (a) keeps it: it lives in the layers; both keep it: either part alone carries it;
both recover: neither part alone carries it (it takes the two together). When the arm itself has no gap at that
budget (its interval reaches 0) there is nothing to isolate (reported as such).

``--prior-init`` (a second intervention): each RTD and MC-BERT arm gets a twin, the same run but for the
discriminator's output starting at its class prior (:func:`init_class_prior`) instead of at 0: it asks whether
the flattening is how Adam learns the prior "original at most tokens" (all states shifted one common way by
many weights at once, faster than one bias moves) rather than anything the objective asks of the states.

Run: ``python benchmarks/bench_mcbert_finetune_gap.py`` (1 torch thread; ``--tiny`` for a seconds-long check).
"""

from __future__ import annotations

import argparse
import copy
import math
import random
import statistics
import time
from typing import Any

import torch

from graftkit.data.text import (
    CLS,
    MASK,
    PAD,
    SEP,
    WordVocab,
    english_documents,
    english_sentences,
    module_docstrings,
    words,
)
from graftkit.experiments.protocol import bootstrap_interval
from graftkit.runtime import single_thread
from hf_models import McBertConfig, McBertForPreTraining, McBertForSequenceClassification

NEITHER = "[NEITHER]"

#: the fine-tuning classes: where a sentence comes from (None: the interactive help's topic pages)
CLASSES: dict[str, tuple[str, ...] | None] = {
    "language reference": None,
    "types and data structures": ("typing", "dataclasses", "enum", "collections", "functools", "itertools",
                                  "inspect", "contextlib"),
    "files": ("os", "pathlib", "shutil", "tarfile", "zipfile", "tempfile", "io"),
}

#: the pre-trained arms: objective and McBertConfig settings
ARMS: dict[str, dict[str, Any]] = {
    "MLM (BERT)": {"objective": "mlm"},
    "RTD (ELECTRA)": {"objective": "rtd"},
    "MC-BERT, graftkit defaults": {"objective": "mc"},
    "MC-BERT, reference settings": {"objective": "mc", "mc_loss_weight": 50.0, "candidates_with_replacement": True,
                                    "candidates_exclude_original": False},
}
RANDOM = "random init"
PRIOR = ", prior init"  # the --prior-init twin of a discriminative arm

#: the --swap hybrids: which part of the main encoder comes from the pre-trained snapshot
HYBRIDS = ("(a) pre-trained layers, init embeddings", "(b) init layers, pre-trained embeddings")
EMBEDDINGS = "embeddings."  # the embedding module's keys in the main encoder's state dict
SWAP_RULE = ("rule, fixed before the run: a hybrid recovers when the interval of hybrid - random init includes 0 "
             "or lies above it, keeps the gap when it lies below 0; (a) recovers, (b) keeps it: the damage lives "
             "in the embeddings; (b) recovers, (a) keeps it: in the layers; both keep it: either part alone "
             "carries it; both recover: neither part alone")


def hybrid(snapshot: dict[str, torch.Tensor], init: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """The main encoder's state with the embedding module from one of ``snapshot`` / ``init`` and everything
    else (the layers and the final LayerNorm) from the other, as ``name`` (one of :data:`HYBRIDS`) says."""
    if snapshot.keys() != init.keys() or not any(k.startswith(EMBEDDINGS) for k in init):
        raise RuntimeError("the snapshot and the init state do not have the same keys")
    embeddings_from, layers_from = (init, snapshot) if name == HYBRIDS[0] else (snapshot, init)
    return {k: (embeddings_from if k.startswith(EMBEDDINGS) else layers_from)[k].clone() for k in init}


def init_class_prior(model: McBertForPreTraining) -> None:
    """The --prior-init intervention: the discriminator's output starts at its class prior (the prior
    initialisation of RetinaNet, Lin et al. 2017) instead of at 0. While the meta controller is still random,
    nearly every masked position is replaced, so p = mask_prob of the tokens are "replaced" and the rest take
    the "original" answer. RTD: the logit's bias = log(p / (1 - p)). MC: every candidate scores about 0 at
    init, so <neither>'s entry of the shared vocabulary bias = log((1 - p) / p · (k - 1)) gives c0 the
    probability 1 - p."""
    config, p = model.config, model.config.mask_prob
    with torch.no_grad():
        if config.objective == "rtd":
            model.head.dense_prediction.bias.fill_(math.log(p / (1 - p)))
        elif config.objective == "mc":
            model.vocabulary_bias[config.neither_token_id] = math.log((1 - p) / p * (config.num_candidates - 1))
        else:
            raise ValueError("the prior initialisation is for the discriminative objectives (rtd, mc)")


def _normalized(text: str) -> str:
    return " ".join(text.split())


def _class_texts() -> list[str]:
    """Each class's source text, whitespace-normalized."""
    from pydoc_data.topics import topics

    return [_normalized(" ".join(topics[k] for k in sorted(topics))) if modules is None
            else _normalized(" ".join(doc for name in modules for doc in module_docstrings(name)))
            for modules in CLASSES.values()]


def labelled_split(per_class: int, train: int, valid: int) -> tuple[list[str], torch.Tensor, list[list[int]]]:
    """``per_class`` sentences of each class (found in exactly that class's source), drawn with seed 0, and a
    fixed (train, validation, test) split of row indices with ``train`` and ``valid`` per class."""
    texts = _class_texts()
    by_class: list[list[str]] = [[] for _ in CLASSES]
    for sentence in english_sentences():
        hits = [i for i, text in enumerate(texts) if _normalized(sentence) in text]
        if len(hits) == 1:
            by_class[hits[0]].append(sentence)
    smallest = min(len(members) for members in by_class)
    if per_class > smallest or train + valid >= per_class:
        raise SystemExit(f"--per-class must be at most {smallest} and above train + valid")
    rng = random.Random(0)
    sentences, labels, split = [], [], [[], [], []]
    for label, members in enumerate(by_class):
        for i, sentence in enumerate(rng.sample(members, per_class)):
            split[0 if i < train else 1 if i < train + valid else 2].append(len(sentences))
            sentences.append(sentence)
            labels.append(label)
    return sentences, torch.tensor(labels), split


def passages(held_out: set[str], max_words: int) -> list[str]:
    """Each document's sentences (``held_out`` dropped) joined into passages of at most ``max_words`` words."""
    out = []
    for sentences in english_documents():
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


def make_config(args, vocab: WordVocab, objective: str = "mlm", **extra: Any) -> McBertConfig:
    return McBertConfig(
        vocab_size=len(vocab), hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, intermediate_size=4 * args.hidden, max_position_embeddings=args.max_len,
        type_vocab_size=0, pad_token_id=vocab.index[PAD], mask_token_id=vocab.index[MASK],
        neither_token_id=vocab.index[NEITHER], objective=objective, mc_size_divider=args.divider,
        layer_norm_position=args.layer_norm_position, **extra)


def classifier(args, vocab: WordVocab, seed: int, encoder_state: dict[str, torch.Tensor] | None):
    """``McBertForSequenceClassification`` initialised with ``seed`` (the random-init arm), with the
    pre-trained main encoder's weights when given (the pooler and classifier stay as initialised: the encoder
    folder that ``graftkit pretrain`` writes has no pooler)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = McBertForSequenceClassification(make_config(args, vocab, num_labels=len(CLASSES)))
    if encoder_state is not None:
        missing, unexpected = model.mc_bert.load_state_dict(encoder_state, strict=False)
        if unexpected or not all(k.startswith("pooler") for k in missing):
            raise RuntimeError(f"the encoder does not fit: missing {missing}, unexpected {unexpected}")
    return model


def spread(vectors: torch.Tensor) -> float:
    """RMS distance to the centroid over the RMS norm: 0 when every row is the same vector."""
    centred = vectors - vectors.mean(0)
    return float(centred.pow(2).sum(-1).mean().sqrt() / vectors.pow(2).sum(-1).mean().sqrt())


def encoder_measures(model, inputs: torch.Tensor, pad: int) -> dict[str, Any]:
    model.eval()
    real = (inputs != pad).unsqueeze(-1).float()
    with torch.no_grad():
        out = model.mc_bert(inputs, attention_mask=real.squeeze(-1).long(), output_hidden_states=True)
        states = [*out.hidden_states, out.last_hidden_state]  # embeddings, each layer, after the final LN
        pooled = [(h * real).sum(1) / real.sum(1) for h in states]
        pooler = model.mc_bert.pooler(out.last_hidden_state)
    row = {"spread_mean_pooled": [spread(v) for v in pooled], "spread_cls": spread(out.last_hidden_state[:, 0]),
           "spread_pooler": spread(pooler)}
    if hasattr(model.mc_bert.encoder, "final_layer_norm"):  # Pre-LN only
        row["final_ln_scale"] = float(model.mc_bert.encoder.final_layer_norm.weight.detach().abs().mean())
    return row


def embedding_gradients(model, batch: torch.Tensor, pad: int, special: torch.Tensor) -> dict[str, float]:
    """On one fixed batch (eval mode, fixed masking and sampling): the norms of the gradients of λ·L_D and of
    L_MLM on the shared word embeddings, the cosine of the former's mean row with the embeddings' mean row,
    and the embeddings' anisotropy."""
    was_training = model.training
    model.eval()
    embedding = model.get_input_embeddings().weight
    out = model(batch, attention_mask=(batch != pad).long(), special_tokens_mask=torch.isin(batch, special),
                generator=torch.Generator().manual_seed(0))
    result = {"anisotropy": float(embedding.detach().mean(0).norm() / embedding.detach().norm(dim=-1).mean()),
              "grad_mlm": float(torch.autograd.grad(out.mlm_loss, embedding, retain_graph=True)[0].norm())}
    if out.discriminator_loss is not None:
        config = model.config
        weight = config.rtd_loss_weight if config.objective == "rtd" else config.mc_loss_weight
        disc = torch.autograd.grad(weight * out.discriminator_loss, embedding)[0]
        result["grad_disc"] = float(disc.norm())
        result["cos_disc_mean_row"] = float(torch.nn.functional.cosine_similarity(
            disc.mean(0), embedding.detach().mean(0), dim=0))
    model.train(was_training)
    return result


def finetune(model, inputs: torch.Tensor, labels: torch.Tensor, split: list[list[int]], pad: int, args,
             seed: int) -> float:
    """Test accuracy at the epoch with the best validation accuracy (the first best; epoch 0 = no training)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.finetune_lr, weight_decay=0.01)
    train, valid, test = (torch.tensor(rows) for rows in split)
    order = torch.Generator().manual_seed(seed)

    def accuracy(rows: torch.Tensor) -> float:
        model.eval()
        with torch.no_grad():
            logits = model(inputs[rows], attention_mask=(inputs[rows] != pad).long()).logits
        return float((logits.argmax(-1) == labels[rows]).float().mean())

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout
        best_valid, best_test = accuracy(valid), accuracy(test)
        for _ in range(args.finetune_epochs):
            model.train()
            for rows in train[torch.randperm(len(train), generator=order)].split(args.finetune_batch):
                loss = model(inputs[rows], attention_mask=(inputs[rows] != pad).long(), labels=labels[rows]).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            valid_accuracy = accuracy(valid)
            if valid_accuracy > best_valid:
                best_valid, best_test = valid_accuracy, accuracy(test)
    return best_test


def evaluate(model, inputs, labels, split, pad, args, seed) -> dict[str, Any]:
    row = encoder_measures(model, inputs, pad)
    row["finetuned"] = finetune(model, inputs, labels, split, pad, args, seed)
    return row


def pretrain_arm(arm: dict[str, Any], args, vocab: WordVocab, corpus: torch.Tensor, init: dict[str, torch.Tensor],
                 seed: int, evaluate_snapshot) -> dict[int, dict[str, Any]]:
    """Pre-train ``arm`` from the main encoder ``init`` for max(--steps) steps; at each budget, the snapshot's
    embedding gradients and ``evaluate_snapshot(state, step)``'s row."""
    pad, special = vocab.index[PAD], torch.tensor([vocab.index[CLS], vocab.index[SEP]])
    extra = {k: v for k, v in arm.items() if k not in ("objective", "prior_init")}
    rows: dict[int, dict[str, Any]] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = McBertForPreTraining(make_config(args, vocab, arm["objective"], **extra)).train()
        model.mc_bert.load_state_dict(init)  # every arm's main encoder starts from the random-init arm's weights
        if arm.get("prior_init"):
            init_class_prior(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / args.warmup))
        data = torch.Generator().manual_seed(seed)  # the same batches and masking draws in every arm
        probe = corpus[torch.randint(len(corpus), (args.batch,), generator=torch.Generator().manual_seed(10_000))]
        for step in range(1, max(args.steps) + 1):
            batch = corpus[torch.randint(len(corpus), (args.batch,), generator=data)]
            out = model(batch, attention_mask=(batch != pad).long(), special_tokens_mask=torch.isin(batch, special),
                        generator=data)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            schedule.step()
            if step in args.steps:
                state = {k: v.detach().clone() for k, v in model.mc_bert.state_dict().items()}
                rows[step] = embedding_gradients(model, probe, pad, special) | {"loss": float(out.loss.detach())}
                rows[step] |= evaluate_snapshot(state, step)
    return rows


def fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def mean_of(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if key in r]
    return statistics.fmean(values) if values else None


def report(results: dict[str, dict[int, list[dict[str, Any]]]], args, seconds: float) -> None:
    steps = sorted(args.steps)
    print(f"\n== fine-tuned test accuracy and measurements (mean over seeds {args.seeds}; "
          f"{seconds:.0f} CPU s in all)")
    print("| arm | steps | fine-tuned (per seed) | mean-pooled spread: emb / "
          + " / ".join(f"L{i + 1}" for i in range(args.layers))
          + " / final LN | [CLS] spread | pooler spread | final LN scale | ‖∇E‖ λ·L_D / L_MLM | "
            "cos(∇E mean row, E mean row) | anisotropy |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for arm, by_steps in results.items():
        for step, rows in sorted(by_steps.items()):
            layers = [statistics.fmean(r["spread_mean_pooled"][i] for r in rows)
                      for i in range(len(rows[0]["spread_mean_pooled"]))]
            accuracies = " / ".join(f"{r['finetuned']:.3f}" for r in rows)
            print(f"| {arm} | {step} | {mean_of(rows, 'finetuned'):.3f} ({accuracies}) | "
                  f"{' / '.join(f'{v:.2f}' for v in layers)} | {fmt(mean_of(rows, 'spread_cls'), 2)} | "
                  f"{fmt(mean_of(rows, 'spread_pooler'), 2)} | {fmt(mean_of(rows, 'final_ln_scale'), 2)} | "
                  f"{fmt(mean_of(rows, 'grad_disc'), 2)} / {fmt(mean_of(rows, 'grad_mlm'), 2)} | "
                  f"{fmt(mean_of(rows, 'cos_disc_mean_row'), 2)} | {fmt(mean_of(rows, 'anisotropy'), 2)} |")
    random_init = [r["finetuned"] for r in results[RANDOM][0]]
    print("\n== paired difference in fine-tuned test accuracy, arm - random init (95% bootstrap interval "
          "over seeds)")
    print("| arm | " + " | ".join(f"{s} steps" for s in steps) + " |")
    print("|---|" + "---|" * len(steps))
    differences: dict[str, dict[int, tuple[float, float, float]]] = {}
    for arm, by_steps in results.items():
        if arm == RANDOM:
            continue
        cells = []
        for step in steps:
            diff = [r["finetuned"] - base for r, base in zip(by_steps[step], random_init, strict=True)]
            low, high = bootstrap_interval(diff)
            differences.setdefault(arm, {})[step] = (statistics.fmean(diff), low, high)
            cells.append(f"{statistics.fmean(diff):+.3f} [{low:+.3f}, {high:+.3f}]")
        print(f"| {arm} | " + " | ".join(cells) + " |")
    print("\n== verdict (rule: at the largest budget the interval of MC-BERT - random init includes 0 or lies "
          "above it and the mean is larger than at the smallest budget: the gap vanishes with budget; the "
          "interval below 0: the gap persists)")
    for arm in (a for a in differences if a.startswith("MC-BERT")):
        (first, first_low, first_high), (last, last_low, last_high) = (differences[arm][steps[0]],
                                                                       differences[arm][steps[-1]])
        start = (f"at {steps[0]} steps {first:+.3f} [{first_low:+.3f}, {first_high:+.3f}]"
                 + (" (no gap: the interval reaches 0)" if first_high >= 0 else ""))
        if last_high < 0:
            verdict = "the gap persists"
        elif first_high >= 0:
            verdict = "no gap at either budget"
        elif last > first:
            verdict = "the gap vanishes with budget"
        else:
            verdict = "undecided"
        print(f"{arm}: {start}; at {steps[-1]} steps {last:+.3f} [{last_low:+.3f}, {last_high:+.3f}]: {verdict}")


def paired(rows: list[dict[str, Any]], random_init: list[float]) -> tuple[float, float, float]:
    """Mean and 95% bootstrap interval of the paired difference in fine-tuned accuracy, rows - random init."""
    diff = [r["finetuned"] - base for r, base in zip(rows, random_init, strict=True)]
    return (statistics.fmean(diff), *bootstrap_interval(diff))


def report_swap(results: dict[str, dict[int, list[dict[str, Any]]]], args) -> None:
    step = args.steps[-1]
    random_init = [r["finetuned"] for r in results[RANDOM][0]]
    print(f"\n== --swap at {step} steps: hybrids of the snapshot and the random init, fine-tuned test accuracy "
          f"and the paired difference to random init (95% bootstrap interval over seeds {args.seeds})")
    print("| arm | encoder | fine-tuned (per seed) | − random init | mean-pooled spread: emb / "
          + " / ".join(f"L{i + 1}" for i in range(args.layers)) + " / final LN |")
    print("|---|---|---|---|---|")
    verdicts = []
    for arm, by_steps in results.items():
        if arm == RANDOM:
            continue
        rows = by_steps[step]
        encoders = {"snapshot": rows} | {name: [r["hybrids"][name] for r in rows] for name in HYBRIDS}
        differences = {}
        for encoder, encoder_rows in encoders.items():
            mean, low, high = differences[encoder] = paired(encoder_rows, random_init)
            layers = [statistics.fmean(r["spread_mean_pooled"][i] for r in encoder_rows)
                      for i in range(len(encoder_rows[0]["spread_mean_pooled"]))]
            accuracies = " / ".join(f"{r['finetuned']:.3f}" for r in encoder_rows)
            print(f"| {arm} | {encoder} | {mean_of(encoder_rows, 'finetuned'):.3f} ({accuracies}) | "
                  f"{mean:+.3f} [{low:+.3f}, {high:+.3f}] | {' / '.join(f'{v:.2f}' for v in layers)} |")
        recovers = [differences[name][2] >= 0 for name in HYBRIDS]
        if differences["snapshot"][2] >= 0:
            verdict = "no gap at this budget (the snapshot's interval reaches 0): nothing to isolate"
        elif recovers == [True, False]:
            verdict = "(a) recovers, (b) keeps the gap: the damage lives in the embeddings"
        elif recovers == [False, True]:
            verdict = "(b) recovers, (a) keeps the gap: the damage lives in the layers"
        elif recovers == [False, False]:
            verdict = "both keep the gap: either part alone carries it"
        else:
            verdict = "both recover: neither part alone carries it"
        verdicts.append(f"{arm}: {verdict}")
    print(f"\n== --swap verdict ({SWAP_RULE})")
    print("\n".join(verdicts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 200, 800],
                        help="pre-training budgets (snapshots of one run per arm and seed)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--arms", nargs="+", default=None, help="pre-trained arms' name prefixes (default: all)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layer-norm-position", choices=("pre", "post"), default="pre",
                        help="the encoders' layer-norm placement (post: BERT's, as the paper's MC-BERT)")
    parser.add_argument("--divider", type=int, default=2, help="the meta controller's width divider")
    parser.add_argument("--vocab", type=int, default=2000)
    parser.add_argument("--max-len", type=int, default=64)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--per-class", type=int, default=160)
    parser.add_argument("--train-per-class", type=int, default=64)
    parser.add_argument("--valid-per-class", type=int, default=32)
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument("--finetune-batch", type=int, default=16)
    parser.add_argument("--swap", action="store_true",
                        help="at the largest budget also fine-tune the hybrids of each snapshot and the random "
                             "init: pre-trained layers with init embeddings, and init layers with pre-trained "
                             "embeddings")
    parser.add_argument("--prior-init", action="store_true",
                        help="add, for each RTD and MC-BERT arm, a twin whose discriminator output starts at its "
                             "class prior (see init_class_prior)")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long check of the whole script")
    args = parser.parse_args()
    if args.tiny:
        args.steps, args.seeds, args.hidden, args.layers, args.heads = [2, 4], [0, 1], 24, 1, 6
        args.divider, args.vocab, args.max_len, args.batch, args.warmup = 3, 300, 32, 2, 1
        args.per_class, args.train_per_class, args.valid_per_class, args.finetune_epochs = 12, 4, 4, 1
    args.steps = sorted(set(args.steps))

    sentences, labels, split = labelled_split(args.per_class, args.train_per_class, args.valid_per_class)
    texts = passages(set(sentences), args.max_len - 2)
    built = WordVocab.build(texts, max_size=args.vocab - 1)
    vocab = WordVocab(built.tokens + [NEITHER], built.counts)
    corpus, inputs = vocab.encode_rows(texts, args.max_len), vocab.encode_rows(sentences, args.max_len)
    pad = vocab.index[PAD]
    arms = {name: arm for name, arm in ARMS.items() if args.arms is None or any(name.startswith(p) for p in args.arms)}
    if args.prior_init:
        arms |= {name + PRIOR: arm | {"prior_init": True} for name, arm in arms.items() if arm["objective"] != "mlm"}
    print(f"fine-tuning: {len(CLASSES)} classes ({', '.join(CLASSES)}), {args.train_per_class} / "
          f"{args.valid_per_class} / {args.per_class - args.train_per_class - args.valid_per_class} sentences per "
          f"class train / valid / test, held out of pre-training; pre-training: {len(texts)} passages, vocabulary "
          f"{len(vocab)}; main encoder {args.layer_norm_position.capitalize()}-LN {args.layers} layers, "
          f"d {args.hidden}, {args.heads} heads; "
          f"batch {args.batch} x {args.max_len}, AdamW lr {args.lr:g} (warm-up {args.warmup} steps); fine-tuning "
          f"lr {args.finetune_lr:g}, {args.finetune_epochs} epochs, batch {args.finetune_batch}")

    if args.swap:
        print(f"--swap at {args.steps[-1]} steps, {SWAP_RULE}", flush=True)
    results: dict[str, dict[int, list[dict[str, Any]]]] = {RANDOM: {0: []}} | {name: {} for name in arms}
    start = time.process_time()
    with single_thread():
        for seed in args.seeds:
            base = classifier(args, vocab, seed, None)
            init = {k: v.clone() for k, v in base.mc_bert.state_dict().items() if not k.startswith("pooler")}
            results[RANDOM][0].append(evaluate(copy.deepcopy(base), inputs, labels, split, pad, args, seed))

            def evaluate_snapshot(state, step, seed=seed, init=init):
                row = evaluate(classifier(args, vocab, seed, state), inputs, labels, split, pad, args, seed)
                if args.swap and step == args.steps[-1]:
                    row["hybrids"] = {name: evaluate(classifier(args, vocab, seed, hybrid(state, init, name)), inputs,
                                                     labels, split, pad, args, seed) for name in HYBRIDS}
                return row

            for name, arm in arms.items():
                arm_start = time.process_time()
                for step, row in pretrain_arm(arm, args, vocab, corpus, init, seed, evaluate_snapshot).items():
                    results[name].setdefault(step, []).append(row)
                print(f"seed {seed}: {name} done ({time.process_time() - arm_start:.0f} CPU s)", flush=True)
    report(results, args, time.process_time() - start)
    if args.swap:
        report_swap(results, args)


if __name__ == "__main__":
    main()
