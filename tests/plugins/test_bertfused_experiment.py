"""The bertfused-nmt experiment: the synonym-stem toy design end to end at a tiny size, and its verdict rule."""

import pytest

pytest.importorskip("fairseq")


def test_verdict_needs_a_held_out_gain_over_the_transformer_and_the_untrained_bert_control():
    from graftkit.experiments import bertfused as experiment

    base = {"bleu_heldout_transformer": 40.0, "bleu_heldout_untrained_bert": 41.0,
            "bert_synonym_top1_contextual": experiment.MIN_SYNONYM_TOP1}
    assert experiment._verdict({**base, "bleu_heldout_bert_fused": 42.5})
    assert experiment._verdict({**base, "bleu_heldout_bert_fused": 42.5}) is True
    assert not experiment._verdict({**base, "bleu_heldout_bert_fused": 41.5})  # < 1 BLEU above the control
    assert not experiment._verdict({**base, "bleu_heldout_untrained_bert": 30.0, "bleu_heldout_bert_fused": 40.5})
    assert experiment._verdict({**base, "bleu_heldout_bert_fused": 41.5}) is False


def test_verdict_cannot_judge_when_bert_did_not_learn_the_synonyms():
    from graftkit.experiments import bertfused as experiment

    m = {"bleu_heldout_transformer": 40.0, "bleu_heldout_untrained_bert": 30.0, "bleu_heldout_bert_fused": 60.0,
         "bert_synonym_top1_contextual": experiment.MIN_SYNONYM_TOP1 - 0.01}
    assert experiment._verdict(m) is None  # a big BLEU gain does not count without the synonymy in BERT
    assert experiment._verdict({**m, "bleu_heldout_bert_fused": 35.0}) is None  # nor does a loss


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
            "base_epochs": 1, "more_epochs": 1, "seeds": 1}
    monkeypatch.setitem(experiment.SIZES, "quick", tiny)
    stages: list[str] = []
    with single_thread():  # as `graftkit reproduce` runs it; two threads crawl on a shared machine
        outcome = load_all()["bertfused-nmt"].run(RunContext(mode="quick", seed=0, out_dir=tmp_path,
                                                             on_progress=stages.append))
    arms = ["transformer_warmstart", "transformer", "bert_fused", "bert_fused_pnet0.5", "bert_fused_pnet0",
            "untrained_bert"]
    for arm in arms:
        for subset in ("heldout", "all"):
            assert 0.0 <= outcome.metrics[f"bleu_{subset}_{arm}"] <= 100.0
    assert [row["system"] for row in outcome.table] == arms
    assert stages[-1].endswith("NMT run 6/6")
    assert 0 < outcome.metrics["heldout_sentences"] <= outcome.metrics["test_sentences"] == 12
    for probe in ("bert_synonym_top1_contextual", "bert_synonym_top1_input_embedding",
                  "untrained_bert_synonym_top1_contextual", "untrained_bert_synonym_top1_input_embedding"):
        assert 0.0 <= outcome.metrics[probe] <= 1.0
    (figure,) = outcome.figures
    assert figure.stat().st_size > 1000
