"""The experiments' shared protocol: gates, paired seeds, the learning-rate choice, the bootstrap interval."""

import math

import pytest
import torch

from graftkit.errors import GraftkitError
from graftkit.experiments import protocol
from graftkit.experiments.protocol import Gate


def test_a_failed_gate_makes_the_verdict_undecided_and_names_the_gate():
    gates = [Gate("left_plateau", True, "ok"), Gate("regime", False, "no-warm-up arm 0.01 nats above"),
             Gate("teacher", False, "p 0.02")]
    metrics = protocol.gate_metrics(gates)
    assert metrics == {"gate_left_plateau": True, "gate_regime": False, "gate_teacher": False,
                       "failed_gate": "regime"}
    verdict = protocol.gated(lambda m: m["x"] > 0)
    assert verdict({**metrics, "x": 1}) is None
    assert verdict({**protocol.gate_metrics(gates[:1]), "x": 1}) is True
    assert verdict({**protocol.gate_metrics(gates[:1]), "x": -1}) is False
    assert verdict({"x": 1}) is None  # no gates checked: decides nothing
    assert protocol.gate_caveats(gates) == ["Undecided: gate 'regime' failed: no-warm-up arm 0.01 nats above",
                                            "Undecided: gate 'teacher' failed: p 0.02"]
    with pytest.raises(GraftkitError, match="at least one gate"):
        protocol.gate_metrics([])


def test_paired_seeds_count_and_tuning_seed_is_never_judged():
    assert protocol.paired_seeds(5, quick=True) == [5, 6]
    assert protocol.paired_seeds(0, quick=False) == [0, 1, 2]
    assert protocol.tuning_seed(0) not in protocol.paired_seeds(0, quick=False)


def test_bootstrap_interval_of_the_mean():
    # two values: every resample mean is a, (a+b)/2 or b, so the 95% interval is [min, max]
    low, high = protocol.bootstrap_interval([1.0, 3.0])
    assert (low, high) == (1.0, 3.0)
    assert protocol.bootstrap_interval([2.0]) == (2.0, 2.0)
    assert all(math.isnan(v) for v in protocol.bootstrap_interval([1.0, math.nan]))
    values = torch.randn(200, generator=torch.Generator().manual_seed(0)).add(1.0).tolist()
    low, high = protocol.bootstrap_interval(values)
    se = torch.tensor(values).std().item() / math.sqrt(len(values))
    mean = sum(values) / len(values)
    assert low == pytest.approx(mean - 1.96 * se, abs=0.3 * se)  # the normal interval, for many values
    assert high == pytest.approx(mean + 1.96 * se, abs=0.3 * se)
    assert protocol.bootstrap_interval(values) == (low, high)  # fixed resamples
    with pytest.raises(GraftkitError, match="at least one value"):
        protocol.bootstrap_interval([])


def test_paired_difference_and_per_seed_metrics():
    out = protocol.paired_difference("a_minus_b", [3.0, 5.0], [1.0, 4.0])
    assert out == {"a_minus_b_mean": 1.5, "a_minus_b_ci_low": 1.0, "a_minus_b_ci_high": 2.0}
    with pytest.raises(GraftkitError, match="one per seed"):
        protocol.paired_difference("d", [1.0], [1.0, 2.0])
    assert protocol.per_seed("loss", [0, 1], [2.5, None]) == {"loss_seed0": 2.5, "loss_seed1": None}
    with pytest.raises(GraftkitError, match="2 values for 1 seeds"):
        protocol.per_seed("loss", [0], [1, 2])


def test_best_learning_rate_takes_the_lowest_finite_score():
    scores = {1e-3: 4.0, 2e-3: 3.5, 5e-3: math.nan}
    assert protocol.best_learning_rate([1e-3, 2e-3, 5e-3], scores.__getitem__) == (2e-3, scores)
    assert protocol.best_learning_rate([1e-3, 2e-3], lambda lr: 1.0)[0] == 1e-3  # tie: the smaller
    assert protocol.best_learning_rate([1e-3, 2e-3], lambda lr: math.nan)[0] == 1e-3
    with pytest.raises(GraftkitError, match="empty"):
        protocol.best_learning_rate([], lambda lr: 0.0)


def test_quick_learning_rates_must_come_from_the_grid():
    rates = protocol.LearningRates(grid=(1e-3, 2e-3), quick={"a": 1e-3, "b": 2e-3})
    assert rates.words() == "lr grid 0.001, 0.002 searched at --full; quick uses a 0.001, b 0.002"
    with pytest.raises(GraftkitError, match="from the grid"):
        protocol.LearningRates(grid=(1e-3,), quick={"a": 3e-3})
    with pytest.raises(GraftkitError, match="positive"):
        protocol.LearningRates(grid=(), quick={})


def test_copy_shared_init_copies_matching_names_and_shapes_only():
    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 5))
    copied = protocol.copy_shared_init(model, reference.state_dict())
    assert copied == ["0.weight", "0.bias"]
    assert torch.equal(model[0].weight, reference[0].weight) and torch.equal(model[0].bias, reference[0].bias)
    assert not torch.equal(model[1].weight[:2], reference[1].weight)
