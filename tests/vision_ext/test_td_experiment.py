"""The td-seeds-and-augmentation experiment's parts: registration, verdict rule, augmentation, training."""

from __future__ import annotations

import pytest
import torch

from graftkit.experiments import td as td_experiment
from graftkit.registry import load_all


def test_registered_with_a_rule_that_reads_the_metrics():
    exp = load_all()["td-seeds-and-augmentation"]
    assert exp.method == "td"
    base = {"none_disagreement_heldout": 0.03, "none_td_normalized_heldout": 0.14, "decisive_augmentations": 2,
            "discordant_augmentations": 0}
    assert exp.verdict(base) is True
    assert exp.verdict({**base, "discordant_augmentations": 1}) is False
    assert exp.verdict({**base, "decisive_augmentations": 0}) is False
    assert exp.verdict({**base, "none_disagreement_heldout": 0.001}) is False
    assert exp.verdict({**base, "none_td_normalized_heldout": 0.01}) is False


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


def test_discordant_follows_the_papers_wording():
    # helps (accuracy up): must lower TD; hurts (accuracy down): must not lower TD ("will not" be more similar)
    assert not td_experiment.discordant(0.02, -0.01) and td_experiment.discordant(0.02, 0.0)
    assert td_experiment.discordant(0.02, 0.05)
    assert not td_experiment.discordant(-0.05, 0.1) and not td_experiment.discordant(-0.05, 0.0)
    assert td_experiment.discordant(-0.05, -0.02)


def test_the_recipe_leaves_the_held_out_digits_untouched():
    assert td_experiment.TRAIN_IMAGES < td_experiment.POOL_IMAGES < 1797
    exp = load_all()["td-seeds-and-augmentation"]
    assert "will not" in exp.claim and "CNNs' mean test accuracy" in exp.rule


@pytest.mark.slow
def test_run_end_to_end_at_toy_size(monkeypatch, tmp_path):
    from graftkit.registry import RunContext

    monkeypatch.setattr(td_experiment, "EPOCHS", 1)
    monkeypatch.setattr(td_experiment, "TRAIN_IMAGES", 100)
    stages = []
    outcome = td_experiment.run(RunContext(mode="quick", seed=0, out_dir=tmp_path, on_progress=stages.append))
    assert [row["augmentation"] for row in outcome.table] == list(td_experiment.AUGMENTATIONS)
    assert outcome.metrics["rotated_td_normalized_heldout"] < 1e-9
    assert {"decisive_augmentations", "discordant_augmentations", "none_td_normalized_heldout"} <= set(outcome.metrics)
    assert "below it:" in outcome.caveats[1] and "100 training" in outcome.data
    assert len(stages) == 3 * len(td_experiment.AUGMENTATIONS) and outcome.figures[0].exists()
    assert isinstance(load_all()["td-seeds-and-augmentation"].verdict(outcome.metrics), bool)
