"""The td-seeds-and-augmentation experiment's parts: registration, verdict rule, augmentation, training."""

from __future__ import annotations

import pytest
import torch

from graftkit.experiments import td as td_experiment
from graftkit.registry import load_all


def _metrics(**changes):
    base = {"none_disagreement_heldout": 0.03, "none_td_normalized_heldout": 0.14,
            "td_accuracy_spearman_noise_ci_high": -0.2, "td_accuracy_spearman_shift_ci_high": -0.5,
            "gate_trained": True, "gate_helps_and_hurts": True, "failed_gate": None}
    return {**base, **changes}


def test_registered_with_a_gated_rule_that_reads_both_families():
    exp = load_all()["td-seeds-and-augmentation"]
    assert exp.method == "td"
    assert exp.verdict(_metrics()) is True
    assert exp.verdict(_metrics(td_accuracy_spearman_noise_ci_high=0.1)) is False
    assert exp.verdict(_metrics(td_accuracy_spearman_shift_ci_high=0.0)) is False  # the interval must be below 0
    assert exp.verdict(_metrics(none_disagreement_heldout=0.001)) is False
    assert exp.verdict(_metrics(none_td_normalized_heldout=0.01)) is False
    assert exp.verdict(_metrics(failed_gate="helps_and_hurts")) is None
    assert "td_accuracy_spearman_<family>" in exp.rule and "undecided" in exp.rule


def test_settings_train_dose_zero_once_and_every_dose_of_both_families():
    names = [name for name, *_ in td_experiment.settings()]
    assert names == ["none", "noise0.2", "noise0.4", "noise0.6", "noise1", "shift1", "shift2", "shift3"]
    assert all(shift == 0 for _, family, _, shift, _ in td_experiment.settings() if family == "noise")
    assert [dose for _, family, dose, *_ in td_experiment.settings() if family == "shift"] == [1.0, 2.0, 3.0]


def test_dose_response_spearman_is_per_seed_and_reads_accuracy_change_against_td():
    # seed 0: accuracy rises with the dose and TD falls (opposite: -1); seed 1: both rise (+1)
    accuracy = [[0.90, 0.92, 0.95], [0.90, 0.91, 0.93]]
    td = [[0.30, 0.20, 0.10], [0.10, 0.20, 0.30]]
    assert td_experiment.dose_response_spearman(accuracy, td) == pytest.approx([-1.0, 1.0])
    # ranks, not values: a dose that helps most with the lowest TD, one that hurts with the highest
    assert td_experiment.dose_response_spearman([[0.9, 0.95, 0.85, 0.8]], [[0.2, 0.1, 0.3, 0.25]]) == \
        pytest.approx([-0.8])
    with pytest.raises(ValueError, match="one row per seed"):
        td_experiment.dose_response_spearman(accuracy, td[:1])


def test_every_dose_of_a_seed_sees_the_same_batches(monkeypatch):
    """Paired doses: the augmentation's random draws must not change the batch order of the seed."""
    from graftkit.data.images import digits

    images, labels = digits()
    seen = {}
    for noise in (0.0, 0.5):
        batches = seen.setdefault(noise, [])

        def record(x, shift, noise, generator, batches=batches):
            batches.append(x.clone())
            return x

        monkeypatch.setattr(td_experiment, "augment", record)
        td_experiment.train_lenet(images[:100], labels[:100], 0, 0, noise, td_experiment.TrainConfig(epochs=3))
    assert len(seen[0.0]) == len(seen[0.5]) and all(torch.equal(a, b) for a, b in zip(seen[0.0], seen[0.5]))


def test_augment_shifts_by_whole_pixels_with_zero_fill_and_adds_noise():
    x = torch.zeros(200, 1, 8, 8)
    x[:, :, 3, 4] = 1.0
    shifted = td_experiment.augment(x, 1, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(shifted.sum((1, 2, 3)), torch.ones(200))  # one pixel, moved, not blurred
    rows, cols = shifted[:, 0].nonzero(as_tuple=True)[1:]
    assert set(rows.tolist()) == {2, 3, 4} and set(cols.tolist()) == {3, 4, 5}
    noisy = td_experiment.augment(x, 0, 0.2, torch.Generator().manual_seed(0))
    assert abs(float((noisy - x).std()) - 0.2) < 0.01


def test_train_lenet_learns():
    from graftkit.data.images import digits

    images, labels = digits()
    net = td_experiment.train_lenet(images[:400], labels[:400], 0, 0, 0.0, td_experiment.TrainConfig(epochs=10))
    with torch.no_grad():
        accuracy = float((net(images[1400:]).argmax(1) == labels[1400:]).float().mean())
    assert accuracy > 0.5 and not net.training


def test_held_out_td_equals_the_in_sample_td_when_both_splits_are_the_same_data():
    from vision_ext.td import transferred_discrepancy

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 6, generator=g), torch.randn(300, 5, generator=g)
    labels = torch.randint(0, 4, (300,), generator=g)
    held = td_experiment.held_out_td(a, b, labels, a, b, labels)
    peer = transferred_discrepancy(a, b, labels)
    assert abs(held.normalized - peer.normalized) < 1e-9
    assert held.disagreement == peer.disagreement and held.accuracy_a == peer.accuracy_a


def test_held_out_td_is_zero_for_a_rotated_copy_and_larger_out_of_sample_for_unrelated_features():
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 3, (400,), generator=g)
    signal = torch.nn.functional.pad(torch.nn.functional.one_hot(labels, 3).double(), (0, 5))
    a = signal + 0.8 * torch.randn(400, 8, generator=g, dtype=torch.float64)
    rotation = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))[0]
    same = td_experiment.held_out_td(a[:200], a[:200] @ rotation, labels[:200], a[200:], a[200:] @ rotation,
                                     labels[200:])
    assert same.normalized < 1e-9 and same.disagreement == 0
    noise = torch.randn(400, 8, generator=g, dtype=torch.float64)  # carries nothing about the labels
    held = td_experiment.held_out_td(a[:200], noise[:200], labels[:200], a[200:], noise[200:], labels[200:])
    in_sample = td_experiment.held_out_td(a[200:], noise[200:], labels[200:], a[200:], noise[200:], labels[200:])
    assert held.normalized > in_sample.normalized  # a head fit on noise only matches by overfitting


def test_the_recipe_leaves_the_held_out_digits_untouched():
    assert td_experiment.TRAIN_IMAGES < td_experiment.POOL_IMAGES < 1797
    exp = load_all()["td-seeds-and-augmentation"]
    assert "will not" in exp.claim and "change of test accuracy" in exp.rule


@pytest.mark.slow
def test_run_end_to_end_at_toy_size(monkeypatch, tmp_path):
    from graftkit.registry import RunContext

    monkeypatch.setattr(td_experiment, "EPOCHS", 1)
    monkeypatch.setattr(td_experiment, "TRAIN_IMAGES", 100)
    stages = []
    outcome = td_experiment.run(RunContext(mode="quick", seed=0, out_dir=tmp_path, on_progress=stages.append))
    assert [row["augmentation"] for row in outcome.table] == [name for name, *_ in td_experiment.settings()]
    # one epoch leaves nearly collinear features: rotation invariance holds to the solver's conditioning
    assert outcome.metrics["rotated_td_normalized_heldout"] < 1e-5
    for family in td_experiment.FAMILIES:
        key = f"td_accuracy_spearman_{family}"
        assert {key, f"{key}_ci_low", f"{key}_ci_high", f"{key}_pooled", f"{key}_seed0", f"{key}_seed2"} <= \
            set(outcome.metrics)
    assert outcome.metrics["gate_trained"] is False  # one epoch on 100 digits learns nothing
    assert load_all()["td-seeds-and-augmentation"].verdict(outcome.metrics) is None
    assert outcome.caveats[0].startswith("Undecided: gate 'trained' failed") and "100 training" in outcome.data
    assert len(stages) == td_experiment.QUICK_SEEDS * len(td_experiment.settings()) and outcome.figures[0].exists()
