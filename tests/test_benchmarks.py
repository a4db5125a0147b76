"""Every benchmark still runs end to end (tiny sizes): the scripts are not imported by anything else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

# script → (tiny arguments, a string its report must contain)
RUNS = {
    "bench_bertfused.py": (["--sizes", "toy", "--rounds", "1", "--sentences", "8", "--batch-size", "8"],
                           "goal >= 0.7x"),
    "bench_cleit.py": ([], "time ratio CLEIT / RidgeCV"),
    "bench_graphnorm.py": (["--repeats", "1"], "speed-up = PyG / graph_ext"),
    "bench_irn.py": (["--size", "32", "--reference-size", "32", "--repeats", "1"], "goal: IRN within 1.2x"),
    "bench_macer.py": (["--repeats", "1"], "ResNet-20"),
    "bench_mcbert.py": (["--hidden", "24", "--layers", "1", "--heads", "6", "--divider", "3", "--vocab", "50",
                         "--batch", "2", "--seq-len", "16", "--rounds", "1", "--steps", "1"], "MC-BERT / RTD"),
    "bench_mcbert_finetune_gap.py": (["--tiny", "--swap", "--prior-init"], "MC-BERT, graftkit defaults, prior init"),
    "bench_pretraining.py": (["--hidden", "24", "--layers", "1", "--heads", "6", "--vocab", "50", "--batch", "2",
                               "--seq-len", "16", "--rounds", "1", "--steps", "1", "--rare-words", "50"],
                              "product of its parts"),
    "bench_preln.py": (["--hidden", "32", "--layers", "1", "--heads", "2", "--batch", "2", "--seq-len", "16",
                        "--rounds", "1", "--steps", "1"], "RobertaPreLayerNormModel (HF)"),
    "bench_tupe.py": (["--hidden", "32", "--layers", "1", "--heads", "2", "--batch", "2", "--seq-lens", "16,32",
                       "--rounds", "1", "--steps", "1"], "TupeModel R (graftkit)"),
    "bench_tnf.py": (["--hidden", "32", "--layers", "1", "--heads", "2", "--batch", "2", "--seq-len", "16",
                      "--rounds", "1", "--steps", "1", "--rare-words", "50"], "time ratio TNF / BERT"),
    "bench_td.py": (["--n", "500", "--dim", "16", "--tasks", "1", "--repeats", "1"], "speed-up (best vs best)"),
}


def test_every_benchmark_is_covered():
    assert sorted(p.name for p in BENCHMARKS.glob("bench_*.py")) == sorted(RUNS)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(RUNS))
def test_benchmark_runs(script):
    args, expected = RUNS[script]
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                          cwd=BENCHMARKS.parent, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert expected in done.stdout


def test_pretraining_goals_pair_each_round():
    """The composition bound pairs the arms within a round: a round in which every arm ran 3x slower (a busy
    machine) leaves the ratio unchanged, and BERT's time, once per part in the product, cancels."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from bench_pretraining import paired_ratio, verdict
    finally:
        sys.path.remove(str(BENCHMARKS))
    slow = [1.0, 3.0, 1.0, 1.0]  # round 2 ran on a busy machine
    bert = [0.9 * s for s in slow]
    times = {"BERT MLM": bert, "A": [1.1 * b for b in bert], "B": [0.8 * b for b in bert],
             "A + B": [1.1 * 0.8 * 1.05 * b for b in bert]}  # 5% slower than the product of its parts
    value, low, high = paired_ratio(times, ["A + B", "BERT MLM"], ["A", "B"])
    assert value == pytest.approx(1.05) and low == pytest.approx(1.05) and high == pytest.approx(1.05)
    assert verdict(value, low, 1.0) == "NOT met"
    assert verdict(1.02, 0.99, 1.0) == "within timing noise"
    assert verdict(0.98, 0.95, 1.0) == "met"


def test_finetune_gap_hybrids_swap_the_embedding_module():
    """--swap's hybrids: (a) takes the embedding module from the init and the rest from the snapshot, (b) the
    reverse; both are copies."""
    import torch

    sys.path.insert(0, str(BENCHMARKS))
    try:
        from bench_mcbert_finetune_gap import HYBRIDS, hybrid
    finally:
        sys.path.remove(str(BENCHMARKS))
    keys = ["embeddings.word_embeddings.weight", "embeddings.layer_norm.weight",
            "encoder.layers.0.attention.query.weight", "encoder.final_layer_norm.weight"]
    snapshot = {k: torch.ones(2) for k in keys}
    init = {k: torch.zeros(2) for k in keys}
    layers_pretrained, embeddings_pretrained = (hybrid(snapshot, init, name) for name in HYBRIDS)
    assert [float(layers_pretrained[k][0]) for k in keys] == [0, 0, 1, 1]
    assert [float(embeddings_pretrained[k][0]) for k in keys] == [1, 1, 0, 0]
    layers_pretrained[keys[0]] += 5
    assert float(init[keys[0]][0]) == 0


def test_finetune_gap_prior_init_starts_each_discriminator_at_its_class_prior():
    """--prior-init: at init the RTD head predicts "replaced" with probability mask_prob at every token, and the
    multi-choice head gives c0 (<neither>) probability 1 - mask_prob when the candidates' scores are equal."""
    import torch

    sys.path.insert(0, str(BENCHMARKS))
    try:
        from bench_mcbert_finetune_gap import init_class_prior
    finally:
        sys.path.remove(str(BENCHMARKS))
    from hf_models import McBertConfig, McBertForPreTraining

    def model(objective):
        torch.manual_seed(0)
        return McBertForPreTraining(McBertConfig(
            vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            mask_token_id=3, neither_token_id=4, objective=objective, num_candidates=6, mask_prob=0.2,
            mc_size_divider=2))

    rtd = model("rtd")
    init_class_prior(rtd)
    rtd.head.dense_prediction.weight.data.zero_()  # the bias alone
    assert torch.sigmoid(rtd.head(torch.randn(5, 16))).allclose(torch.full((5,), 0.2))
    mc = model("mc")
    init_class_prior(mc)
    bias = mc.vocabulary_bias.detach()
    scores = torch.stack([bias[4], *bias[10:15]])  # c0 and k - 1 = 5 other candidates, features · E[c] = 0
    assert float(torch.softmax(scores, 0)[0]) == pytest.approx(0.8)
    assert float(bias.abs().sum() - bias[4]) == 0  # no other entry moves
    with pytest.raises(ValueError, match="discriminative"):
        init_class_prior(model("mlm"))
