"""The td-seeds-and-augmentation experiment's parts: registration, verdict rule, augmentation, training."""

from __future__ import annotations

import torch

from graftkit.experiments import td as td_experiment
from graftkit.registry import load_all


def test_registered_with_a_rule_that_reads_the_metrics():
    exp = load_all()["td-seeds-and-augmentation"]
    assert exp.method == "td"
    base = {"none_disagreement": 0.03, "none_td_normalized": 0.14, "decisive_augmentations": 2,
            "discordant_augmentations": 0}
    assert exp.verdict(base) is True
    assert exp.verdict({**base, "discordant_augmentations": 1}) is False
    assert exp.verdict({**base, "decisive_augmentations": 0}) is False
    assert exp.verdict({**base, "none_disagreement": 0.001}) is False


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
