"""The bertfused-nmt experiment: the synonym-stem toy design end to end at a tiny size, and its verdict rule."""

import pytest

pytest.importorskip("fairseq")


def test_verdict_needs_a_held_out_gain_over_the_transformer_and_the_untrained_bert_control():
    from graftkit.experiments import bertfused as experiment

    base = {"bleu_heldout_transformer": 40.0, "bleu_heldout_untrained_bert": 41.0}
    assert experiment._verdict({**base, "bleu_heldout_bert_fused": 42.5})
    assert not experiment._verdict({**base, "bleu_heldout_bert_fused": 41.5})  # < 1 BLEU above the control
    assert not experiment._verdict({**base, "bleu_heldout_untrained_bert": 30.0, "bleu_heldout_bert_fused": 40.5})


@pytest.mark.slow
def test_experiment_runs_every_arm_and_seed_end_to_end_at_a_tiny_size(tmp_path, monkeypatch):
    from graftkit.experiments import bertfused as experiment
    from graftkit.registry import RunContext, load_all
    from graftkit.runtime import single_thread

    tiny = {"mono": 200, "mlm_steps": 2, "mlm_lr": 1e-3, "train": 40, "test": 12, "base_epochs": 1, "more_epochs": 1,
            "seeds": 1}
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
    assert 0.0 <= outcome.metrics["bert_synonym_top1"] <= 1.0
    (figure,) = outcome.figures
    assert figure.stat().st_size > 1000
