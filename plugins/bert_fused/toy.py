"""Tiny local set-ups for tests, the experiment and the benchmark: a toy BERT and binarized toy data.

Nothing is downloaded: the "BERT" is a small ``BertModel`` built from a ``BertConfig`` (optionally
pre-trained with masked-LM on source-language text), saved with its tokenizer by ``save_pretrained``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from graftkit.data.parallel import write_parallel_raw


def build_tokenizer(sentences: Sequence[str], kind: str = "word", vocab_size: int = 120,
                    max_length: int = 64):
    """A word-level (``graftkit.data.text.WordVocab``) or WordPiece tokenizer trained on ``sentences``."""
    if kind == "word":
        from graftkit.data.text import WordVocab

        return WordVocab.build(sentences).to_hf_tokenizer(model_max_length=max_length)
    if kind != "wordpiece":
        raise ValueError(f"tokenizer kind must be 'word' or 'wordpiece', got {kind!r}")
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(sentences, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")),
                                                 ("[SEP]", tok.token_to_id("[SEP]"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=max_length)


def save_tiny_bert(out_dir: str | Path, sentences: Sequence[str], *, hidden: int = 32, layers: int = 2,
                   heads: int = 2, tokenizer: str = "word", max_length: int = 64, mlm_steps: int = 0,
                   batch_size: int = 64, lr: float = 1e-3, seed: int = 0, warmup_steps: int | None = None,
                   mask_rates: Mapping[str, float] | None = None,
                   on_step: Callable[[int, int], None] | None = None) -> Path:
    """Build (and with ``mlm_steps`` > 0, pre-train with masked-LM) a tiny BERT; save model and tokenizer.

    ``warmup_steps`` and ``mask_rates``: see :func:`mlm_pretrain`; ``on_step(done, total)`` is called after each
    masked-LM step (progress)."""
    from transformers import BertConfig, BertForMaskedLM, BertModel

    torch.manual_seed(seed)
    tok = build_tokenizer(sentences, tokenizer, max_length=max_length)
    config = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=4 * hidden, max_position_embeddings=max_length,
                        pad_token_id=tok.pad_token_id)
    model = BertForMaskedLM(config)
    if mlm_steps:
        mlm_pretrain(model, tok, sentences, mlm_steps, batch_size, lr, seed, on_step, warmup_steps=warmup_steps,
                     mask_rates=mask_rates)
    encoder = BertModel(config)  # what AutoModel loads: the MLM-trained encoder plus a (unused) pooler
    encoder.load_state_dict(model.bert.state_dict(), strict=False)
    out = Path(out_dir)
    encoder.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def mlm_pretrain(model, tok, sentences: Sequence[str], steps: int, batch_size: int, lr: float, seed: int,
                 on_step: Callable[[int, int], None] | None = None, *, warmup_steps: int | None = None,
                 mask_rates: Mapping[str, float] | None = None) -> float:
    """BERT's masked-LM objective: 15% of tokens, of which 80% [MASK], 10% random, 10% kept. Returns last loss.

    ``mask_rates`` gives other masking rates to the tokens it names (e.g. to mask the words under study more
    often). The lr is constant, or with ``warmup_steps`` rises linearly to ``lr`` over that many steps and
    then falls linearly to 0 at the last step."""
    if warmup_steps is not None and not 0 <= warmup_steps < steps:
        raise ValueError(f"warmup_steps must be in [0, {steps}) for {steps} steps, got {warmup_steps}")
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    schedule = None if warmup_steps is None else torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / max(1, warmup_steps), (steps - s) / (steps - warmup_steps)))
    special = torch.tensor(sorted(set(tok.all_special_ids)))
    rate = torch.full((len(tok),), 0.15)
    for token, token_rate in (mask_rates or {}).items():
        token_id = tok.convert_tokens_to_ids(token)
        if token_id == tok.unk_token_id or not 0 <= token_rate <= 1:
            raise ValueError(f"mask_rates: {token!r} -> {token_rate} needs a token of the vocabulary and a rate "
                             "in [0, 1]")
        rate[token_id] = token_rate
    model.train()
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        batch = tok(rng.sample(list(sentences), min(batch_size, len(sentences))), padding=True,
                    return_tensors="pt")
        ids = batch["input_ids"].clone()
        labels = ids.clone()
        chosen = (torch.rand(ids.shape) < rate[ids]) & ~torch.isin(ids, special)
        labels[~chosen] = -100
        roll = torch.rand(ids.shape)
        ids[chosen & (roll < 0.8)] = tok.mask_token_id
        swap = chosen & (roll >= 0.8) & (roll < 0.9)
        ids[swap] = torch.randint(len(tok), (int(swap.sum()),))
        loss = model(input_ids=ids, attention_mask=batch["attention_mask"], labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        if on_step is not None:
            on_step(step + 1, steps)
    model.eval()
    return float(loss)


def binarize(raw_dir: str | Path, dest_dir: str | Path, splits: Sequence[str] = ("train", "valid", "test"),
             src: str = "src", tgt: str = "tgt", srcdict: str | Path | None = None,
             tgtdict: str | Path | None = None) -> Path:
    """``fairseq-preprocess`` (in-process) of ``raw_dir/{split}.{src,tgt}`` into ``dest_dir``; ``srcdict`` /
    ``tgtdict``: fairseq dictionary files to use instead of building them from the training split."""
    from fairseq import options
    from fairseq_cli import preprocess

    raw = Path(raw_dir)
    argv = ["--source-lang", src, "--target-lang", tgt, "--destdir", str(dest_dir), "--workers", "1"]
    for flag, path in (("--srcdict", srcdict), ("--tgtdict", tgtdict)):
        if path is not None:
            argv += [flag, str(path)]
    for split, flag in zip(("train", "valid", "test"), ("--trainpref", "--validpref", "--testpref")):
        if split in splits:
            argv += [flag, str(raw / split)]
    args = options.get_preprocessing_parser().parse_args(argv)
    preprocess.main(args)
    return Path(dest_dir)


def write_toy_pair(raw_dir: str | Path, pair, sizes: dict[str, int], seed: int = 0) -> Path:
    """Raw toy parallel text for each split, with disjoint seeds per split."""
    return write_parallel_raw(raw_dir, {split: pair.sample(n, seed=seed * 1000 + i)
                                        for i, (split, n) in enumerate(sizes.items())})


def write_bert_vocabulary(bert_dir: str | Path, dict_path: str | Path, embedding_path: str | Path) -> int:
    """BERT's word vocabulary as a fairseq source dictionary (``dict_path``, for ``fairseq-preprocess --srcdict``)
    and BERT's input word embeddings as a text embedding file (``embedding_path``, for fairseq's
    ``--encoder-embed-path``: a "count dim" header, then "token v1 .. vd"), so that a plain transformer's encoder
    embeddings start from BERT's. BERT's special tokens ([PAD], [CLS], ...) are left out: fairseq has its own.
    Returns the embedding width."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bert_dir)
    table = AutoModel.from_pretrained(bert_dir).get_input_embeddings().weight.detach()
    special = set(tok.all_special_tokens)
    words = sorted((index, token) for token, index in tok.get_vocab().items() if token not in special)
    if any(any(c.isspace() for c in token) for _, token in words):
        raise ValueError("BERT's vocabulary holds a token with white space, which a fairseq dictionary cannot")
    Path(dict_path).write_text("".join(f"{token} 1\n" for _, token in words))
    rows = [f"{token} " + " ".join(f"{v:.6g}" for v in table[index].tolist()) for index, token in words]
    Path(embedding_path).write_text(f"{len(rows)} {table.shape[1]}\n" + "\n".join(rows) + "\n")
    return table.shape[1]
