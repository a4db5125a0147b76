"""BERT-fused NMT experiment: does fusing a (tiny) pre-trained BERT into a transformer improve BLEU?

Everything runs through fairseq's own training loop (``fairseq_cli.train``, in-process) with the plugin's
task ``translation_bert_fused`` and arch ``bert_fused``; BLEU is sacrebleu's corpus BLEU with beam 5.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from graftkit.experiments import protocol
from graftkit.registry import Outcome, RunContext, experiment

#: BERT's masked-LM pre-training (tuned on the synonym probes, never on BLEU): AdamW, linear warm-up over
#: ``mlm_warmup`` of the steps then linear decay; every noun form masked ``stem_mask_rate`` of the time (other
#: tokens 15%). NMT budgets are in updates: a transformer trains ``warm_start_updates`` (the warm start), every
#: continuation arm ``updates`` more from it; the bert_embeddings control trains the same two stages.
SIZES = {
    "quick": {"mono": 10000, "mlm_steps": 800, "mlm_lr": 3e-3, "mlm_batch": 128, "mlm_warmup": 0.1,
              "stem_mask_rate": 0.5, "train": 200, "test": 200, "warm_start_updates": 200, "updates": 240},
    "full": {"mono": 30000, "mlm_steps": 2000, "mlm_lr": 3e-3, "mlm_batch": 128, "mlm_warmup": 0.1,
             "stem_mask_rate": 0.5, "train": 400, "test": 1000, "warm_start_updates": 800, "updates": 800},
}
#: every NMT run (warm start and continuation) warms its lr up over this share of its own updates
#: (inverse_sqrt): the warm-up, which fairseq restarts with every continuation, ends inside the run
WARMUP_FRACTION = 0.125
#: the verdict judges only a BERT that learned the synonyms: the contextual probe's top-1 (held-out second stem
#: -> its own first stem, among all 30; chance 1/30) must reach this, fixed before the run; else undecided
MIN_SYNONYM_TOP1 = 0.5
#: ... and only baselines (the transformer, the bert_embeddings control) that learned the language pair: their BLEU
#: on all test sentences must reach this in every seed, fixed before the run
MIN_BASELINE_BLEU = 20.0
#: sentences (drawn like the test set, seed fixed) whose first noun the contextual synonym probe varies
PROBE_TEMPLATES = 20
#: the arms continued from the warm-start transformer: name -> (BERT fused, drop-net p_net), None: a plain
#: transformer; plus ``bert_embeddings`` (its own warm start, see :func:`_run`)
FUSED_ARMS: dict[str, tuple[str, str] | None] = {
    "transformer": None,
    "bert_fused": ("pretrained", "1.0"),
    "untrained_bert": ("untrained", "1.0"),
}
#: BERT-fused (p_net 1.0) must beat each of these, per seed, on the held-out-stem sentences
CONTROLS = ("transformer", "bert_embeddings", "untrained_bert")
#: the NMT model's width, and BERT's, so that BERT's input embeddings fit the bert_embeddings control's encoder
NMT_WIDTH = 64
MODEL = ["--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", str(NMT_WIDTH),
         "--decoder-embed-dim", str(NMT_WIDTH),
         "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128", "--encoder-attention-heads", "4",
         "--decoder-attention-heads", "4", "--dropout", "0.1"]
#: one optimiser and lr for every arm (no per-arm lr search: it would not fit the time)
TRAIN = ["--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "3e-3", "--lr-scheduler", "inverse_sqrt",
         "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
         "--max-tokens", "200", "--no-progress-bar", "--log-interval", "1000", "--no-epoch-checkpoints",
         "--no-save-optimizer-state", "--cpu", "--disable-validation", "--num-workers", "0"]


def _fairseq_train(argv: list[str]) -> None:
    from fairseq import distributed_utils, options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq_cli.train import main

    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    distributed_utils.call_main(convert_namespace_to_omegaconf(args), main)


def _translate(checkpoint: Path, data: Path, bert: Path | None) -> list[str]:
    """Beam-5 translations of the test split, in test-file order."""
    import torch
    from fairseq import checkpoint_utils, tasks
    from fairseq.sequence_generator import SequenceGenerator

    overrides = {"data": str(data)} | ({"bert_model": str(bert)} if bert else {})
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)], arg_overrides=overrides)
    model = models[0].eval()
    task = tasks.setup_task(cfg.task)
    task.load_dataset("test")
    data_set = task.dataset("test")
    generator = SequenceGenerator([model], task.target_dictionary, beam_size=5, max_len_a=1.2, max_len_b=5)
    hyps: dict[int, str] = {}
    itr = task.get_batch_iterator(dataset=data_set, max_sentences=64).next_epoch_itr(shuffle=False)
    with torch.inference_mode():
        for sample in itr:
            for i, hypos in zip(sample["id"].tolist(), generator.generate([model], sample)):
                hyps[i] = task.target_dictionary.string(hypos[0]["tokens"])
    return [hyps[i] for i in range(len(hyps))]


def _bleu(hyps: list[str], refs: list[str], keep: list[bool] | None = None) -> float:
    """Corpus BLEU (sacrebleu) of the hypotheses, over the sentences where ``keep`` is true (default: all)."""
    import sacrebleu

    chosen = [i for i in range(len(refs)) if keep is None or keep[i]]
    return sacrebleu.corpus_bleu([hyps[i] for i in chosen], [[refs[i] for i in chosen]]).score


def synonym_probes(bert: Path, pair, templates: list[str]) -> dict[str, float]:
    """How much of the synonymy BERT picked up from its text: for each held-out concept, is its second stem's
    nearest first stem (cosine, among all noun concepts' first stems) its own? Returns the share of hits of two
    probes.

    ``input_embedding``: BERT's input embedding table. ``contextual``: BERT's last-layer output at the noun's
    position (what BERT-fused attends to) in sentences that differ only in that stem: the first noun of each
    of ``templates`` (source sentences) is replaced by each concept's first stem and each held-out concept's
    second stem (plural forms where the template's noun is plural); hits are counted over templates x held-out
    concepts."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    model, tok = AutoModel.from_pretrained(bert).eval(), AutoTokenizer.from_pretrained(bert)
    nouns = sorted(pair.nouns)
    held = [i for i, n in enumerate(nouns) if n in pair.held_out]

    def top1(first: torch.Tensor, second: torch.Tensor) -> float:
        """``first``: (..., concepts, dim), ``second``: (..., held-out concepts, dim)."""
        first, second = torch.nn.functional.normalize(first, dim=-1), torch.nn.functional.normalize(second, dim=-1)
        nearest = (second @ first.transpose(-1, -2)).argmax(-1)
        return (nearest == torch.tensor(held)).float().mean().item()

    def ids(stems: list[str]) -> list[int]:
        found = tok.convert_tokens_to_ids(stems)
        if tok.unk_token_id in found:
            raise ValueError(f"the synonym probe needs every stem in BERT's vocabulary: {stems}")
        return found

    table = model.get_input_embeddings().weight.detach()
    scores = {"input_embedding": top1(table[ids([pair.nouns[n] for n in nouns])],
                                      table[ids([pair.synonyms[nouns[i]] for i in held])])}
    stems = {pair.nouns[n] for n in nouns} | {pair.synonyms[n] for n in nouns}
    firsts, seconds = [], []
    for template in templates:
        words = template.split()
        slot = next(i for i, w in enumerate(words) if w.removesuffix("en") in stems)
        suffix = words[slot][len(words[slot].removesuffix("en")):]
        variants = ids([pair.nouns[n] + suffix for n in nouns] + [pair.synonyms[nouns[i]] + suffix for i in held])
        # other words outside BERT's vocabulary become [UNK], as `graftkit bertnmt prepare` writes them
        context = tok.convert_tokens_to_ids([tok.cls_token, *words, tok.sep_token])
        batch = torch.tensor([context[:slot + 1] + [v] + context[slot + 2:] for v in variants])
        with torch.inference_mode():
            out = model(input_ids=batch).last_hidden_state[:, slot + 1]  # + 1: [CLS]
        firsts.append(out[:len(nouns)])
        seconds.append(out[len(nouns):])
    scores["contextual"] = top1(torch.stack(firsts), torch.stack(seconds))
    return scores


def _supported(m: dict) -> bool:
    return all(m[f"bert_fused_minus_{control}_heldout_ci_low"] > 0 for control in CONTROLS)


def _gates(probe_top1: float, baseline_all_bleu: dict[str, list[float]]) -> list[protocol.Gate]:
    """BERT learned the synonymy (else a failing fusion cannot be told from an ignorant BERT), and the
    baselines learned the language pair (else beating them says nothing)."""
    worst = {arm: min(values) for arm, values in baseline_all_bleu.items()}
    return [
        protocol.Gate("bert_knows_synonymy", probe_top1 >= MIN_SYNONYM_TOP1,
                      f"contextual synonym probe {probe_top1:.2f} (needs >= {MIN_SYNONYM_TOP1:g}, chance 1/30)"),
        protocol.Gate("baselines_learned", min(worst.values()) >= MIN_BASELINE_BLEU,
                      "lowest seed's BLEU on all test sentences: "
                      + ", ".join(f"{arm} {bleu:.1f}" for arm, bleu in worst.items())
                      + f" (needs >= {MIN_BASELINE_BLEU:g})"),
    ]


def _budget(size: dict) -> str:
    return f"{size['warm_start_updates']} + {size['updates']} updates"


@experiment(
    "bertfused-nmt", method="bertfused",
    claim="Fusing a pre-trained BERT into every encoder and decoder layer of a transformer NMT model (with "
          "drop-net) improves BLEU over the transformer it was warm-started from (IWSLT14 De-En 34.6 -> 36.11): "
          "the BERT brings knowledge of the source language the parallel data lacks, and the per-layer fusion "
          "uses it better than starting the encoder's embeddings from BERT's.",
    rule=f"SYNTHETIC synonym-stem toy pair; per seed ({protocol.QUICK_SEEDS} paired seeds quick, "
         f"{protocol.FULL_SEEDS} --full) a transformer trains a warm start and each arm continues from it (quick "
         f"{_budget(SIZES['quick'])}, --full {_budget(SIZES['full'])}; every run's lr warm-up is "
         f"{WARMUP_FRACTION:.1%} of its own updates, so it ends inside the run): the plain transformer, BERT-fused "
         f"(p_net 1.0, the paper's) and BERT-fused with an untrained BERT; the bert_embeddings control is a "
         f"transformer on BERT's vocabulary whose encoder embeddings start from BERT's input embeddings, trained "
         f"the same two stages. Gates, first (else undecided): BERT knows the synonymy (contextual probe "
         f"bert_synonym_top1_contextual >= {MIN_SYNONYM_TOP1:g}: a held-out concept's second stem's last-layer "
         f"output nearest, by cosine, its own first stem's among all 30 concepts), and the transformer and the "
         f"bert_embeddings control reach >= {MIN_BASELINE_BLEU:g} BLEU on all test sentences in every seed. "
         f"Then, on the test sentences that use a held-out second stem (never in the parallel data), supported if "
         f"the low end of the 95% bootstrap interval of the per-seed BLEU difference BERT-fused minus each of "
         f"transformer, bert_embeddings and untrained_bert is above 0 "
         f"(bert_fused_minus_<control>_heldout_ci_low > 0).",
    verdict=protocol.gated(_supported),
)
def run(ctx: RunContext) -> Outcome:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from graftkit.commands.bertfused import load_plugins

    load_plugins()
    return _run(ctx, SIZES["quick" if ctx.quick else "full"], plt)


def _updates(updates: int) -> list[str]:
    return ["--max-update", str(updates), "--warmup-updates", str(max(1, round(WARMUP_FRACTION * updates)))]


def _run(ctx: RunContext, size: dict, plt) -> Outcome:
    import statistics

    import torch

    from graftkit.cli import main as graftkit_main
    from graftkit.data.parallel import SynonymToyPair, write_parallel_raw
    from plugins.bert_fused.toy import binarize, save_tiny_bert, write_bert_vocabulary

    torch.manual_seed(ctx.seed)
    seconds: dict[str, float] = {}
    pair = SynonymToyPair(lexicon_seed=0)
    templates = [src for src, _ in pair.sample_split(PROBE_TEMPLATES, "test", seed=ctx.seed * 1000 + 2)[0]]
    train_pairs, _ = pair.sample_split(size["train"], "train", seed=ctx.seed * 1000)
    test_pairs, held_out = pair.sample_split(size["test"], "test", seed=ctx.seed * 1000 + 1)
    refs = [tgt for _, tgt in test_pairs]
    mono = pair.monolingual_source(size["mono"], seed=ctx.seed + 101)
    in_text = {word for sentence in mono for word in sentence.split()}
    stem_forms = [form for n in pair.nouns for stem in (pair.nouns[n], pair.synonyms[n])
                  for form in (stem, stem + "en") if form in in_text]  # noun forms, singular and plural
    seeds = protocol.paired_seeds(ctx.seed, ctx.quick)
    warm_start_updates, updates = size["warm_start_updates"], size["updates"]
    runs_per_seed = 1 + len(FUSED_ARMS) + 2  # + the bert_embeddings control's two stages
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        bert_size = {"hidden": NMT_WIDTH, "layers": 2, "heads": 4, "seed": ctx.seed}
        berts = {"pretrained": save_tiny_bert(
            root / "bert", mono, mlm_steps=size["mlm_steps"], lr=size["mlm_lr"], batch_size=size["mlm_batch"],
            warmup_steps=round(size["mlm_warmup"] * size["mlm_steps"]),
            mask_rates=dict.fromkeys(stem_forms, size["stem_mask_rate"]), **bert_size,
            on_step=lambda done, total: ctx.progress(f"BERT masked-LM on {size['mono']} sentences, step", done,
                                                     total)),
                 "untrained": save_tiny_bert(root / "bert_untrained", mono, mlm_steps=0, **bert_size)}
        seconds["bert_mlm"] = time.perf_counter() - start
        probes = {bert: synonym_probes(path, pair, templates) for bert, path in berts.items()}
        raw = write_parallel_raw(root / "raw", {"train": train_pairs, "test": test_pairs})
        data = binarize(raw, root / "bin", splits=("train", "test"))
        # the BERT side from the raw text in BERT's own vocabulary (both BERTs share the tokenizer)
        graftkit_main(["bertnmt", "prepare", "--bert-model", str(berts["pretrained"]), "--source-lang", "src",
                       "--trainpref", str(raw / "train"), "--testpref", str(raw / "test"), "--destdir", str(data),
                       "--remove-bpe", "none"])
        # the bert_embeddings control reads the source in BERT's vocabulary (so a held-out second stem has its
        # own BERT embedding, not <unk>); the target dictionary is the other arms'
        write_bert_vocabulary(berts["pretrained"], root / "dict.bert.txt", root / "bert_embeddings.txt")
        bert_vocab_data = binarize(raw, root / "bin_bert_vocab", splits=("train", "test"),
                                   srcdict=root / "dict.bert.txt", tgtdict=data / "dict.tgt.txt")

        bleu: dict[str, dict[str, list[float]]] = {}
        seconds_per_arm: dict[str, list[float]] = {}
        done = 0

        def train(name: str, seed: int, data_dir: Path, argv: list[str]) -> Path:
            nonlocal done
            done += 1
            ctx.progress(f"seed {seed}: {name}; NMT run", done, runs_per_seed * len(seeds))
            start = time.perf_counter()
            save_dir = root / f"{name}-{seed}"
            _fairseq_train([str(data_dir), "--seed", str(seed + 1), *MODEL, *TRAIN, "--save-dir", str(save_dir),
                            *argv])
            seconds_per_arm.setdefault(name, []).append(time.perf_counter() - start)
            return save_dir / "checkpoint_last.pt"

        for seed in seeds:
            warm_start = train("transformer_warmstart", seed, data,
                               ["--arch", "transformer", *_updates(warm_start_updates)])
            checkpoints = {"transformer_warmstart": (warm_start, data, None)}
            for name, fused in FUSED_ARMS.items():
                if fused is None:
                    argv = ["--arch", "transformer", "--finetune-from-model", str(warm_start)]
                else:
                    bert, p_net = fused
                    argv = ["--task", "translation_bert_fused", "--bert-model", str(berts[bert]), "--arch",
                            "bert_fused", "--bert-remove-bpe", "none", "--warmup-from-nmt", str(warm_start),
                            "--drop-net", p_net]
                checkpoints[name] = (train(name, seed, data, argv + _updates(updates)),
                                     data, berts[fused[0]] if fused else None)
            embeddings_warm_start = train(
                "bert_embeddings_warmstart", seed, bert_vocab_data,
                ["--arch", "transformer", "--encoder-embed-path", str(root / "bert_embeddings.txt"),
                 *_updates(warm_start_updates)])
            checkpoints["bert_embeddings"] = (
                train("bert_embeddings", seed, bert_vocab_data,
                      ["--arch", "transformer", "--finetune-from-model", str(embeddings_warm_start),
                       *_updates(updates)]), bert_vocab_data, None)
            for name, (checkpoint, data_dir, bert) in checkpoints.items():
                hyps = _translate(checkpoint, data_dir, bert)
                scores = bleu.setdefault(name, {"heldout": [], "all": []})
                scores["heldout"].append(_bleu(hyps, refs, held_out))
                scores["all"].append(_bleu(hyps, refs))

    metrics: dict = {}
    for name, scores in bleu.items():
        for subset in ("heldout", "all"):
            metrics[f"bleu_{subset}_{name}"] = statistics.mean(scores[subset])
            metrics[f"bleu_{subset}_std_{name}"] = statistics.stdev(scores[subset])
            metrics |= protocol.per_seed(f"bleu_{subset}_{name}", seeds, scores[subset])
    for control in CONTROLS:
        for subset in ("heldout", "all"):
            metrics |= protocol.paired_difference(f"bert_fused_minus_{control}_{subset}",
                                                  bleu["bert_fused"][subset], bleu[control][subset])
    gates = _gates(probes["pretrained"]["contextual"],
                   {arm: bleu[arm]["all"] for arm in ("transformer", "bert_embeddings")})
    metrics |= protocol.gate_metrics(gates)
    metrics |= {"bert_synonym_top1_contextual": probes["pretrained"]["contextual"],
                "bert_synonym_top1_input_embedding": probes["pretrained"]["input_embedding"],
                "untrained_bert_synonym_top1_contextual": probes["untrained"]["contextual"],
                "untrained_bert_synonym_top1_input_embedding": probes["untrained"]["input_embedding"],
                "heldout_sentences": sum(held_out), "test_sentences": len(held_out),
                "warm_start_updates": warm_start_updates, "updates": updates,
                "warmup_updates": max(1, round(WARMUP_FRACTION * updates)), "seconds_bert_mlm": seconds["bert_mlm"]}

    table = []
    for name, scores in bleu.items():
        fused = FUSED_ARMS.get(name)
        difference = ("-" if name in ("bert_fused", "transformer_warmstart") else
                      "{:+.2f} [{:+.2f}, {:+.2f}]".format(*(metrics[f"bert_fused_minus_{name}_heldout{part}"]
                                                            for part in ("_mean", "_ci_low", "_ci_high"))))
        table.append({"system": name, "BERT": fused[0] if fused else "-", "p_net": fused[1] if fused else "-",
                      "updates": str(warm_start_updates) if name == "transformer_warmstart"
                      else f"{warm_start_updates} + {updates}",
                      "BLEU held-out-stem sentences (mean ± std)":
                          f"{metrics[f'bleu_heldout_{name}']:.2f} ± {metrics[f'bleu_heldout_std_{name}']:.2f}",
                      "BLEU all test sentences (mean ± std)":
                          f"{metrics[f'bleu_all_{name}']:.2f} ± {metrics[f'bleu_all_std_{name}']:.2f}",
                      "held-out BLEU per seed": ", ".join(f"{v:.1f}" for v in scores["heldout"]),
                      "bert_fused minus this, held out [95% interval]": difference,
                      "train seconds (mean)": statistics.mean(seconds_per_arm[name])
                      + (statistics.mean(seconds_per_arm["bert_embeddings_warmstart"])
                         if name == "bert_embeddings" else 0.0)})

    figure = ctx.figure_path("bertfused_bleu.png")
    fig, ax = plt.subplots(figsize=(8, 3.6))
    names = list(bleu)
    for offset, subset, color in ((-0.2, "heldout", "#2a7"), (0.2, "all", "#999")):
        means = [metrics[f"bleu_{subset}_{n}"] for n in names]
        spread = [[m - min(bleu[n][subset]) for m, n in zip(means, names)],
                  [max(bleu[n][subset]) - m for m, n in zip(means, names)]]
        ax.bar([i + offset for i in range(len(names))], means, 0.4, yerr=spread, capsize=2, color=color,
               label="held-out-stem sentences" if subset == "heldout" else "all test sentences")
    ax.set_xticks(range(len(names)), [n.replace("_", "\n", 1) for n in names], fontsize=8)
    ax.set_ylabel(f"test BLEU (beam 5), mean of {len(seeds)} seeds, min–max")
    ax.set_title("BERT-fused vs transformer and controls, SYNTHETIC synonym-stem toy pair")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(figure, dpi=120)
    plt.close(fig)
    caveats = [
        *protocol.gate_caveats(gates),
        f"BERT's knowledge of the synonyms, measured on the held-out concepts (chance 1/30 ≈ 3%): the second "
        f"stem's BERT output is nearest its own first stem's in {probes['pretrained']['contextual']:.0%} of "
        f"probe sentences (the gate, >= {MIN_SYNONYM_TOP1:.0%}), its input embedding nearest its own first stem's "
        f"for {probes['pretrained']['input_embedding']:.0%} of the concepts (what the bert_embeddings control "
        f"starts from); the untrained BERT: {probes['untrained']['contextual']:.0%} and "
        f"{probes['untrained']['input_embedding']:.0%}.",
        *([f"BERT-fused with p_net = 1.0 ends below its own warm start on all test sentences "
           f"({metrics['bleu_all_bert_fused']:.1f} vs {metrics['bleu_all_transformer_warmstart']:.1f} BLEU): "
           f"{updates} updates after the warm start are too few for drop-net 1.0 (which never trains the "
           f"averaged branches it tests with) to recover."]
          if metrics["bleu_all_bert_fused"] < metrics["bleu_all_transformer_warmstart"] else []),
        f"{len(seeds)} paired seeds: the 95% bootstrap interval of a mean over {len(seeds)} values spans at most "
        "their range; it says how far the seeds agree, not a population interval.",
        "A toy language pair and a 2-layer BERT pre-trained for seconds: a test of the mechanism (knowledge "
        "from monolingual text), not of the paper's IWSLT scale.",
    ]
    return Outcome(
        metrics=metrics, table=table, figures=[figure], caveats=caveats,
        data=f"SYNTHETIC: graftkit's synonym-stem toy pair (verb-final source with agreement -> SVO target; every "
             f"noun concept has two synonymous source stems; half of the concepts appear with their first stem "
             f"only in the {size['train']} parallel training pairs and with the second in the test set); "
             f"{size['test']} test pairs, {sum(held_out)} of them with a held-out second stem; "
             f"{size['mono']} monolingual source sentences using both stems of every concept, with "
             f"concept-typical attribute words (monolingual text only) in {pair.attribute_rate:.0%} of noun "
             f"phrases, for BERT.",
        notes=f"BERT: 2 layers, width {NMT_WIDTH}, word-level vocabulary built from the monolingual text (it holds "
              f"both stems), masked-LM pre-trained {size['mlm_steps']} steps (AdamW, batch {size['mlm_batch']}, lr "
              f"{size['mlm_lr']:g} with {size['mlm_warmup']:.0%} linear warm-up then linear decay, noun forms "
              f"masked {size['stem_mask_rate']:.0%} of the time, other tokens 15%; settings tuned on the synonym "
              f"probe, not on BLEU), one BERT for all seeds (seed {ctx.seed}); its input prepared from the raw source "
              f"by `graftkit bertnmt prepare`. The NMT vocabulary comes from the parallel training data, so a "
              f"held-out second stem is <unk> to the NMT encoder. NMT: 2+2 layers, width {NMT_WIDTH}, Adam lr 3e-3 "
              f"(inverse_sqrt, warm-up {WARMUP_FRACTION:.1%} of each run's updates), the same for every arm. Per "
              f"seed ({', '.join(map(str, seeds))}): a transformer trains {warm_start_updates} updates "
              f"(transformer_warmstart); the continuation arms train {updates} more from it: the plain transformer "
              f"('transformer', --finetune-from-model), BERT-fused (strict --warmup-from-nmt, BERT frozen) with "
              f"drop-net p_net 1.0 (the paper's), BERT-fused p_net 1.0 with an "
              f"untrained BERT of the same size and vocabulary ('untrained_bert'); 'bert_embeddings': a "
              f"transformer whose source vocabulary is BERT's and whose encoder embeddings start from BERT's input "
              f"embeddings (fairseq --encoder-embed-path), {warm_start_updates} + {updates} updates in the same two "
              f"stages. BLEU: sacrebleu corpus BLEU, beam 5. Paper: IWSLT14 De-En, BERT-base, 34.6 -> 36.11.",
    )
