"""TNF (Wu et al., ICLR 2021): BERT with notes for rare words vs plain BERT, same model, seed and steps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from graftkit.experiments.mlm_run import steps_to_reach
from graftkit.registry import Outcome, RunContext, experiment


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


@dataclass(frozen=True)
class TnfSettings:
    hidden: int
    layers: int
    steps: int
    eval_every: int
    seeds: int
    vocab_size: int = 1000
    min_count: int = 5
    max_count: int = 20
    batch: int = 32
    max_len: int = 64
    lr: float = 1e-3
    warmup_fraction: float = 0.05


def _corpus(settings: TnfSettings) -> dict[str, Any]:
    """Train/validation sentences, the WordPiece tokenizer and the rare-word vocabulary (both from train)."""
    from graftkit.data.text import english_sentences, split_corpus
    from hf_models.tnf import RareVocabulary

    train, valid = split_corpus(english_sentences(), valid_fraction=0.1, seed=0)
    tokenizer = wordpiece_tokenizer(train, settings.vocab_size, model_max_length=settings.max_len)
    rare = RareVocabulary.build(tokenizer, train, settings.min_count, settings.max_count)
    return {"tokenizer": tokenizer, "rare": rare, "train": rare.tokenize(tokenizer, train, settings.max_len),
            "valid": rare.tokenize(tokenizer, valid, settings.max_len)}


def _validation_batches(corpus: dict[str, Any], batch: int) -> list[dict]:
    """Fixed masks (the collator seeded), so every evaluation of every arm scores the same targets."""
    from hf_models.tnf import DataCollatorForTnf

    collator = DataCollatorForTnf(tokenizer=corpus["tokenizer"], mlm_probability=0.15, seed=12345)
    examples = corpus["valid"]
    return [collator(examples[i:i + batch]) for i in range(0, len(examples), batch)]


def _mlm_losses(model, batches: list[dict]) -> dict[str, float]:
    """Validation MLM loss of the model in eval mode (the plain backbone, no notes), mean over the masked
    tokens of: every sentence (``overall``), the sentences with a rare word (``rare``), and the masked tokens
    inside rare words (``rare_tokens``)."""
    from hf_models.tnf.notes import span_token_mask

    model.eval()
    sums = dict.fromkeys(("overall", "rare", "rare_tokens"), 0.0)
    counts = dict.fromkeys(sums, 0)
    with torch.no_grad():
        for b in batches:
            logits = model(b["input_ids"], attention_mask=b["attention_mask"]).logits
            losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), b["labels"], reduction="none")
            target = b["labels"] != -100
            in_rare_word = span_token_mask(b["rare_spans"], target.shape[1]).any(1)
            has_rare = (b["rare_spans"][..., 0] >= 0).any(1, keepdim=True).expand_as(target)
            for key, keep in (("overall", target), ("rare", target & has_rare),
                              ("rare_tokens", target & in_rare_word)):
                sums[key] += float(losses[keep].sum())
                counts[key] += int(keep.sum())
    return {key: sums[key] / max(1, counts[key]) for key in sums}


def _train(arm: str, seed: int, settings: TnfSettings, corpus: dict[str, Any], valid: list[dict]) -> dict:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _train_seeded(arm, seed, settings, corpus, valid)


def _train_seeded(arm: str, seed: int, settings: TnfSettings, corpus: dict[str, Any], valid: list[dict]) -> dict:
    from hf_models.tnf import DataCollatorForTnf, TnfConfig, TnfForMaskedLM

    tokenizer = corpus["tokenizer"]
    model = TnfForMaskedLM(TnfConfig(
        vocab_size=len(tokenizer), hidden_size=settings.hidden, num_hidden_layers=settings.layers,
        num_attention_heads=4, intermediate_size=4 * settings.hidden, max_position_embeddings=settings.max_len,
        type_vocab_size=0, pad_token_id=tokenizer.pad_token_id, num_rare_words=len(corpus["rare"])))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    warmup = max(1, round(settings.warmup_fraction * settings.steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (settings.steps - s) / (settings.steps - warmup))))
    collator = DataCollatorForTnf(tokenizer=tokenizer, mlm_probability=0.15, seed=seed)
    order = torch.Generator().manual_seed(seed)
    train = corpus["train"]
    curves: dict[str, list[float]] = {"overall": [], "rare": [], "rare_tokens": []}
    for step in range(1, settings.steps + 1):
        model.train()
        picks = torch.randint(len(train), (settings.batch,), generator=order).tolist()
        batch = collator([train[i] for i in picks])
        spans = batch.pop("rare_spans")
        loss = model(**batch, rare_spans=spans if arm == "tnf" else None).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % settings.eval_every == 0:
            for key, value in _mlm_losses(model, valid).items():
                curves[key].append(value)
    return {**curves, "words_with_notes": int(model.notes.has_note.sum())}


@experiment(
    "tnf-vs-bert", method="tnf",
    claim="BERT pre-trained with notes for rare words (TNF) reaches plain BERT's final MLM loss in fewer steps "
          "(paper: at 40% of the steps) and models rare-word sentences better.",
    rule="Same model, seed, batches and masks; validation MLM loss of the plain backbone (notes dropped), "
         "curves averaged over seeds. Supported if TNF reaches BERT's final overall validation loss within 90% "
         "of BERT's steps and its final loss on validation sentences with rare words is no higher than BERT's.",
    verdict=lambda m: m["fraction_of_bert_steps"] is not None and m["fraction_of_bert_steps"] <= 0.9
    and m["final_rare_tnf"] <= m["final_rare_bert"],
)
def tnf_vs_bert(ctx: RunContext) -> Outcome:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = (TnfSettings(hidden=64, layers=2, steps=240, eval_every=40, seeds=1) if ctx.quick
                else TnfSettings(hidden=128, layers=2, steps=1000, eval_every=100, seeds=1))
    corpus = _corpus(settings)
    valid = _validation_batches(corpus, 64)
    runs = {arm: [_train(arm, ctx.seed + s, settings, corpus, valid) for s in range(settings.seeds)]
            for arm in ("bert", "tnf")}
    curves = {arm: {part: torch.tensor([r[part] for r in runs[arm]]).mean(0).tolist()
                    for part in ("overall", "rare", "rare_tokens")} for arm in runs}
    target = curves["bert"]["overall"][-1]
    reached = steps_to_reach(curves["tnf"]["overall"], target, settings.eval_every)
    metrics: dict[str, Any] = {
        "final_overall_bert": target, "final_overall_tnf": curves["tnf"]["overall"][-1],
        "final_rare_bert": curves["bert"]["rare"][-1], "final_rare_tnf": curves["tnf"]["rare"][-1],
        "final_rare_tokens_bert": curves["bert"]["rare_tokens"][-1],
        "final_rare_tokens_tnf": curves["tnf"]["rare_tokens"][-1],
        "tnf_steps_to_bert_final": reached,
        "fraction_of_bert_steps": None if reached is None else reached / settings.steps,
        "words_with_notes": runs["tnf"][0]["words_with_notes"]}
    table = [{"arm": arm, "final_valid_loss": curves[arm]["overall"][-1],
              "final_valid_loss_rare_sentences": curves[arm]["rare"][-1],
              "final_valid_loss_rare_word_tokens": curves[arm]["rare_tokens"][-1],
              "steps_to_bert_final": settings.steps if arm == "bert" else (reached or "not reached")}
             for arm in ("bert", "tnf")]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    x = [(i + 1) * settings.eval_every for i in range(settings.steps // settings.eval_every)]
    for ax, part, title in zip(axes, ("overall", "rare", "rare_tokens"),
                               ("all validation sentences", "sentences with rare words", "masked rare-word tokens")):
        for arm, color in (("bert", "tab:gray"), ("tnf", "tab:blue")):
            ax.plot(x, curves[arm][part], color=color, label=arm.upper())
        ax.set(xlabel="training step", ylabel="validation MLM loss", title=title)
        ax.legend()
    axes[0].axhline(target, color="gray", linewidth=0.8, linestyle=":")
    fig.tight_layout()
    figure = ctx.figure_path("tnf_curves.png")
    fig.savefig(figure, dpi=110)
    plt.close(fig)
    rare = corpus["rare"]
    with_rare = sum(bool(e["rare_spans"]) for e in corpus["valid"])
    return Outcome(
        metrics=metrics, table=table, figures=[figure],
        data="REAL English: graftkit.data.text sentences (Python's help topics and stdlib docstrings), 90/10 "
             f"split; WordPiece tokenizer of {len(corpus['tokenizer'])} tokens trained on the train split; rare "
             f"words = tokenizer words with {settings.min_count} to {settings.max_count} occurrences in the train "
             f"split ({len(rare)} words of {rare.corpus['distinct_words']}; the paper's 100-500 is for a 3.3B-word "
             f"corpus, this one has {rare.corpus['words']} words); {with_rare} of "
             f"{len(corpus['valid'])} validation sentences contain one.",
        notes=f"TnfForMaskedLM (Post-LN BERT, hidden {settings.hidden}, {settings.layers} layers, 4 heads), "
              f"{settings.steps} steps of batch {settings.batch} (sequences <= {settings.max_len} tokens), AdamW "
              f"lr {settings.lr:g}, linear warm-up {settings.warmup_fraction:.0%} then linear decay, "
              f"{settings.seeds} seed(s); BERT = the same model without rare_spans. TNF: λ 0.5, γ 0.1, k 16, "
              "first note replaces, masked rare words not mixed. Validation loss in eval mode (no notes), "
              f"every {settings.eval_every} steps, fixed masks. The paper trains BERT-base for 1M steps; this is a "
              "CPU-minutes analogue, differences of a few hundredths of a nat may be run-to-run noise.",
    )
