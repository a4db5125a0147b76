"""Why an MC-BERT-pre-trained encoder can fine-tune worse than a random one: measurements of the main encoder.

Pre-trains the main model of the `mcbert-vs-electra-vs-mlm` experiment (its data, sizes and optimiser:
Pre-LN, 2 layers, d 64, init std 0.1, AdamW 3e-3, batch 12 x 64, real English) for the same number of steps
with each objective and MC-BERT setting, then measures on the 490 labelled sentences (held out of
pre-training):

- spread of the sentence vectors per layer: RMS distance of the vectors to their centroid over the RMS norm
  (0 = every sentence the same vector), for the mean-pooled states and for the [CLS] state that fine-tuning
  reads (through the pooler, randomly initialised as in fine-tuning: its output's spread too);
- the last LayerNorm's scale (mean |gamma| of the Pre-LN final LayerNorm);
- what the candidate head's gradient does to the shared word embeddings: at the end of pre-training, on one
  batch, the norm of the gradient of lambda * L_D and of L_MLM on the embedding matrix, and the cosine of the
  discriminator gradient's mean row with the embeddings' mean row (a common direction pushed into every word);
  the embeddings' anisotropy (norm of the mean row over the mean row norm);
- the linear probe and the fine-tuned accuracy of the experiment (split 0).

Run: ``python benchmarks/bench_mcbert_finetune_gap.py --steps 470 --seeds 0 1`` (1 torch thread).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from graftkit.data.text import CLS, PAD, SEP, WordVocab, english_documents, english_sentences
from graftkit.experiments import mcbert as experiment
from graftkit.runtime import single_thread

#: the arms: objective and McBertConfig settings
ARMS: dict[str, dict[str, Any]] = {
    "mlm": {"objective": "mlm"},
    "rtd": {"objective": "rtd"},
    "mc (default: k 10, λ 20, without replacement, original excluded)": {"objective": "mc"},
    "mc (reference code: k 10, λ 50, with replacement, original allowed)": {
        "objective": "mc", "mc_loss_weight": 50.0, "candidates_with_replacement": True,
        "candidates_exclude_original": False},
}


def spread(vectors: torch.Tensor) -> float:
    """RMS distance to the centroid over the RMS norm: 0 when every row is the same vector."""
    centred = vectors - vectors.mean(0)
    return float(centred.pow(2).sum(-1).mean().sqrt() / vectors.pow(2).sum(-1).mean().sqrt())


def encoder_measures(state: dict[str, torch.Tensor] | None, settings, vocab, inputs: torch.Tensor,
                     seed: int) -> dict[str, Any]:
    pad = vocab.index[PAD]
    classifier = experiment._encoder(state, settings, vocab, seed, num_labels=len(experiment.TOPICS)).eval()
    real = (inputs != pad).unsqueeze(-1).float()
    with torch.no_grad():
        out = classifier.mc_bert(inputs, attention_mask=real.squeeze(-1).long(), output_hidden_states=True)
        pooled = [(h * real).sum(1) / real.sum(1) for h in out.hidden_states]
        cls = [h[:, 0] for h in out.hidden_states]
        pooler = classifier.mc_bert.pooler(out.last_hidden_state)
    encoder = classifier.mc_bert.encoder
    return {
        "mean_pooled_spread": [round(spread(v), 3) for v in pooled] + [round(spread(
            (out.last_hidden_state * real).sum(1) / real.sum(1)), 3)],
        "cls_spread": [round(spread(v), 3) for v in cls] + [round(spread(out.last_hidden_state[:, 0]), 3)],
        "pooler_spread": round(spread(pooler), 3),
        "final_ln_scale": (round(float(encoder.final_layer_norm.weight.detach().abs().mean()), 3)
                           if hasattr(encoder, "final_layer_norm") else None),
    }


def embedding_gradients(model, batch: torch.Tensor, pad: int, special: torch.Tensor) -> dict[str, float]:
    """Norms of the gradients of λ·L_D and of L_MLM on the word embeddings, the cosine of the mean row of the
    former with the embeddings' mean row, and the embeddings' anisotropy."""
    embedding = model.get_input_embeddings().weight
    out = model(batch, attention_mask=(batch != pad).long(), special_tokens_mask=torch.isin(batch, special),
                generator=torch.Generator().manual_seed(0))
    weight = model.config.rtd_loss_weight if model.config.objective == "rtd" else model.config.mc_loss_weight
    result = {"anisotropy": float(embedding.mean(0).norm() / embedding.norm(dim=-1).mean())}
    mlm = torch.autograd.grad(out.mlm_loss, embedding, retain_graph=True)[0]
    result["grad_norm_mlm"] = float(mlm.norm())
    if out.discriminator_loss is not None:
        disc = torch.autograd.grad(weight * out.discriminator_loss, embedding)[0]
        result["grad_norm_discriminator"] = float(disc.norm())
        result["cos_discriminator_grad_mean_row_vs_mean_embedding"] = float(
            torch.nn.functional.cosine_similarity(disc.mean(0), embedding.detach().mean(0), dim=0))
    return result


def pretrain(arm: dict[str, Any], settings, vocab, corpus: torch.Tensor, steps: int, seed: int):
    """The experiment's pre-training loop (AdamW, warm-up, batches, masking) for ``steps`` steps."""
    from hf_models import McBertForPreTraining

    pad, special = vocab.index[PAD], torch.tensor([vocab.index[CLS], vocab.index[SEP]])
    extra = {k: v for k, v in arm.items() if k != "objective"}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = McBertForPreTraining(experiment._config(arm["objective"], settings, vocab, **extra)).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.01)
        warmup = max(1, round(settings.warmup_fraction * steps))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
        data = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            batch = corpus[torch.randint(len(corpus), (settings.batch,), generator=data)]
            loss = experiment._step_loss(model, batch, pad, special, data)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        batch = corpus[torch.randint(len(corpus), (settings.batch,), generator=data)]
        gradients = embedding_gradients(model, batch, pad, special)
    return {k: v.clone() for k, v in model.mc_bert.state_dict().items()}, gradients, float(loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=470, help="pre-training steps per arm (quick run: ~470)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--finetune-epochs", type=int, default=6)
    parser.add_argument("--arms", nargs="+", default=None, help="arm names' prefixes (default: all)")
    args = parser.parse_args()

    settings = experiment.McBertSettings(budget_gflop=0, snapshots=1, seeds=len(args.seeds),
                                         finetune_epochs=args.finetune_epochs)
    pool = experiment.labelled_pool(english_sentences(), settings.per_topic, 0)
    held_out = {s for members in pool for s in members}
    texts = experiment.passages(english_documents(), held_out, settings.max_len - 2)
    built = WordVocab.build(texts, max_size=settings.vocab - 1)
    vocab = WordVocab(built.tokens + [experiment.NEITHER], built.counts)
    corpus = vocab.encode_rows(texts, settings.max_len)
    inputs = vocab.encode_rows([s for members in pool for s in members], settings.max_len)
    labels = torch.tensor([topic for topic, members in enumerate(pool) for _ in members])
    splits = [experiment.label_split(len(pool[0]), len(experiment.TOPICS), settings.train_per_topic,
                                     settings.valid_per_topic, 1000 + i) for i in range(settings.probe_splits)]
    pad = vocab.index[PAD]
    arms = {"random init": None} | {name: arm for name, arm in ARMS.items()
                                    if args.arms is None or any(name.startswith(p) for p in args.arms)}
    with single_thread():
        for name, arm in arms.items():
            rows, start = [], time.process_time()
            for seed in args.seeds:
                state, gradients, loss = (None, {}, None) if arm is None else pretrain(
                    arm, settings, vocab, corpus, args.steps, seed)
                row = encoder_measures(state, settings, vocab, inputs, seed) | gradients
                row["probe"] = experiment.probe_accuracy(
                    experiment.probe_features(experiment._encoder(state, settings, vocab, seed), inputs, pad),
                    labels, splits)
                row["finetuned"] = experiment.finetune(state, settings, vocab, inputs, labels, splits[0], seed)
                row["final_loss"] = loss
                rows.append(row)
            print(f"== {name} ({args.steps if arm else 0} steps, seeds {args.seeds}, "
                  f"{time.process_time() - start:.0f} CPU s)")
            for key in rows[0]:
                values = [r[key] for r in rows]
                if isinstance(values[0], float):
                    print(f"  {key}: {statistics.fmean(values):.4f}  ({' / '.join(f'{v:.4f}' for v in values)})")
                else:
                    print(f"  {key}: {' / '.join(str(v) for v in values)}")


if __name__ == "__main__":
    main()
