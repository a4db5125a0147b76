"""The bertfused-nmt experiment: the synonym-stem toy design end to end at a tiny size, and its verdict rule."""

import pytest

pytest.importorskip("fairseq")


def _registered_verdict():
    from graftkit.registry import load_all

    return load_all()["bertfused-nmt"].verdict


def _judged(**differences: float) -> dict:
    """Metrics with both gates passed and, per control, the low end of BERT-fused's paired interval."""
    from graftkit.experiments import bertfused as experiment

    lows = {f"bert_fused_minus_{control}_heldout_ci_low": differences.get(control, 1.0)
            for control in experiment.CONTROLS}
    return {**lows, "gate_bert_knows_synonymy": True, "gate_baselines_learned": True, "failed_gate": None}


def test_verdict_needs_the_interval_above_zero_against_every_control():
    from graftkit.experiments import bertfused as experiment

    assert experiment.CONTROLS == ("transformer", "bert_embeddings", "untrained_bert")
    verdict = _registered_verdict()
    assert verdict(_judged()) is True
    for control in experiment.CONTROLS:
        assert verdict(_judged(**{control: 0.0})) is False  # the low end must be above 0, not at it
        assert verdict(_judged(**{control: -29.0})) is False
    assert verdict(_judged(transformer=0.01, bert_embeddings=0.01, untrained_bert=0.01)) is True


def test_verdict_is_undecided_when_a_gate_failed_whatever_the_differences():
    verdict = _registered_verdict()
    for failed in ("bert_knows_synonymy", "baselines_learned"):
        assert verdict({**_judged(), f"gate_{failed}": False, "failed_gate": failed}) is None
        assert verdict({**_judged(transformer=-5.0), f"gate_{failed}": False, "failed_gate": failed}) is None


def test_gates_read_the_contextual_probe_and_every_seed_of_both_baselines():
    from graftkit.experiments import bertfused as experiment

    learned = {"transformer": [30.0, 20.0], "bert_embeddings": [70.0, 60.0]}
    gates = experiment._gates(0.5, learned)
    assert [(g.name, g.passed) for g in gates] == [("bert_knows_synonymy", True), ("baselines_learned", True)]
    assert not experiment._gates(0.49, learned)[0].passed
    one_seed_low = {**learned, "bert_embeddings": [70.0, 19.9]}  # the mean (44.95) would pass: every seed counts
    (_, baselines) = experiment._gates(1.0, one_seed_low)
    assert not baselines.passed and "bert_embeddings 19.9" in baselines.detail


def test_every_run_ends_its_lr_warm_up_inside_its_updates():
    from graftkit.experiments import bertfused as experiment

    assert experiment._updates(240) == ["--max-update", "240", "--warmup-updates", "30"]
    assert experiment._updates(800) == ["--max-update", "800", "--warmup-updates", "100"]
    for size in experiment.SIZES.values():
        for updates in (size["warm_start_updates"], size["updates"]):
            assert int(experiment._updates(updates)[3]) < updates


def test_bert_vocabulary_becomes_the_source_dictionary_and_the_encoder_embeddings_fairseq_loads(tmp_path):
    import torch
    from fairseq import utils
    from fairseq.data import Dictionary
    from transformers import AutoModel, AutoTokenizer

    from graftkit.data.parallel import write_parallel_raw
    from plugins.bert_fused.toy import binarize, save_tiny_bert, write_bert_vocabulary

    text = ["lo kalo mire kevit", "la bitu zosa dabin", "lo nemo zosa kevit"]
    bert = save_tiny_bert(tmp_path / "bert", text, hidden=8, layers=1, heads=2)
    width = write_bert_vocabulary(bert, tmp_path / "dict.txt", tmp_path / "embeddings.txt")
    assert width == 8
    tok, table = AutoTokenizer.from_pretrained(bert), AutoModel.from_pretrained(bert).get_input_embeddings().weight
    dictionary = Dictionary.load(str(tmp_path / "dict.txt"))
    words = sorted({w for line in text for w in line.split()})
    assert sorted(dictionary.symbols[dictionary.nspecial:]) == words  # BERT's [PAD], [CLS], ... left out
    embedding = utils.load_embedding(utils.parse_embedding(tmp_path / "embeddings.txt"), dictionary,
                                     torch.nn.Embedding(len(dictionary), width))
    for word in words:
        assert torch.allclose(embedding.weight[dictionary.index(word)], table[tok.convert_tokens_to_ids(word)],
                              atol=1e-5)
    # binarized with it, a word that only the monolingual text has ("nemo") keeps its own id, not <unk>
    raw = write_parallel_raw(tmp_path / "raw", {"train": [("lo kalo mire kevit", "a b")],
                                                "test": [("lo nemo zosa kevit", "a c")]})
    data = binarize(raw, tmp_path / "bin", splits=("train", "test"), srcdict=tmp_path / "dict.txt")
    assert Dictionary.load(str(data / "dict.src.txt")).symbols == dictionary.symbols
    assert (data / "test.src-tgt.src.bin").exists()


def test_synonym_probes_find_a_synonymy_put_into_the_embeddings_and_none_in_a_random_bert(tmp_path):
    import torch
    from transformers import AutoModel

    from graftkit.data.parallel import SynonymToyPair
    from graftkit.experiments import bertfused as experiment
    from plugins.bert_fused.toy import save_tiny_bert

    pair = SynonymToyPair(lexicon_seed=0)
    mono = pair.monolingual_source(1500, seed=1)
    templates = [src for src, _ in pair.sample_split(4, "test", seed=2)[0]]
    bert = save_tiny_bert(tmp_path / "bert", mono, hidden=16, layers=1, heads=2, seed=0)
    random_bert = experiment.synonym_probes(bert, pair, templates)
    assert random_bert["input_embedding"] <= 0.2 and random_bert["contextual"] <= 0.2  # chance: 1/30
    # a BERT whose second stems have their first stems' input embeddings: both probes find every synonym
    model = AutoModel.from_pretrained(bert)
    vocab = model.get_input_embeddings().weight
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bert)
    with torch.no_grad():
        for noun in pair.nouns:
            for suffix in ("", "en"):
                first, second = tok.convert_tokens_to_ids([pair.nouns[noun] + suffix, pair.synonyms[noun] + suffix])
                vocab[second] = vocab[first]
    model.save_pretrained(tmp_path / "bert")
    assert experiment.synonym_probes(bert, pair, templates) == {"input_embedding": 1.0, "contextual": 1.0}


def test_masked_lm_pretraining_checks_its_warm_up_and_per_token_mask_rates(tmp_path):
    from plugins.bert_fused.toy import save_tiny_bert

    text = ["lo kalo mire kevit", "la bitu zosa dabin"] * 8
    tiny = {"hidden": 8, "layers": 1, "heads": 2, "mlm_steps": 3, "batch_size": 4}
    with pytest.raises(ValueError, match="warmup_steps must be in"):
        save_tiny_bert(tmp_path / "a", text, warmup_steps=3, **tiny)
    with pytest.raises(ValueError, match="mask_rates: 'nope'"):
        save_tiny_bert(tmp_path / "b", text, mask_rates={"nope": 0.5}, **tiny)
    with pytest.raises(ValueError, match="mask_rates: 'kalo' -> 1.5"):
        save_tiny_bert(tmp_path / "c", text, mask_rates={"kalo": 1.5}, **tiny)
    assert (save_tiny_bert(tmp_path / "d", text, warmup_steps=1, mask_rates={"kalo": 1.0}, **tiny)
            / "config.json").exists()


@pytest.mark.slow
def test_experiment_runs_every_arm_and_seed_end_to_end_at_a_tiny_size(tmp_path, monkeypatch):
    from graftkit.experiments import bertfused as experiment
    from graftkit.registry import RunContext, load_all
    from graftkit.runtime import single_thread

    tiny = {**experiment.SIZES["quick"], "mono": 1000, "mlm_steps": 2, "mlm_batch": 16, "train": 40, "test": 12,
            "warm_start_updates": 2, "updates": 3}
    monkeypatch.setitem(experiment.SIZES, "quick", tiny)
    stages: list[str] = []
    with single_thread():  # as `graftkit reproduce` runs it; two threads crawl on a shared machine
        outcome = load_all()["bertfused-nmt"].run(RunContext(mode="quick", seed=0, out_dir=tmp_path,
                                                             on_progress=stages.append))
    arms = ["transformer_warmstart", "transformer", "bert_fused", "untrained_bert", "bert_embeddings"]
    metrics = outcome.metrics
    for arm in arms:
        for subset in ("heldout", "all"):
            assert 0.0 <= metrics[f"bleu_{subset}_{arm}"] <= 100.0
            assert metrics[f"bleu_{subset}_{arm}"] == pytest.approx(
                (metrics[f"bleu_{subset}_{arm}_seed0"] + metrics[f"bleu_{subset}_{arm}_seed1"]) / 2)
    for control in experiment.CONTROLS:  # the paired interval of each control, around its mean difference
        name = f"bert_fused_minus_{control}_heldout"
        assert metrics[f"{name}_mean"] == pytest.approx(metrics["bleu_heldout_bert_fused"]
                                                        - metrics[f"bleu_heldout_{control}"])
        assert metrics[f"{name}_ci_low"] <= metrics[f"{name}_mean"] <= metrics[f"{name}_ci_high"]
    assert [row["system"] for row in outcome.table] == arms
    assert stages[-1].endswith("NMT run 12/12")  # 2 seeds x (warm start, 3 continuations, the control's 2)
    assert (metrics["warm_start_updates"], metrics["updates"], metrics["warmup_updates"]) == (2, 3, 1)
    assert 0 < metrics["heldout_sentences"] <= metrics["test_sentences"] == 12
    # 2 masked-LM steps teach BERT no synonymy: the gate fails and the verdict is undecided, with the reason
    assert metrics["failed_gate"] == "bert_knows_synonymy"
    assert load_all()["bertfused-nmt"].verdict(metrics) is None
    assert any(c.startswith("Undecided: gate 'bert_knows_synonymy' failed") for c in outcome.caveats)
    for probe in ("bert_synonym_top1_contextual", "bert_synonym_top1_input_embedding",
                  "untrained_bert_synonym_top1_contextual", "untrained_bert_synonym_top1_input_embedding"):
        assert 0.0 <= metrics[probe] <= 1.0
    (figure,) = outcome.figures
    assert figure.stat().st_size > 1000
