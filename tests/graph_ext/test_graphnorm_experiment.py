"""The graphnorm-convergence experiment: its rule as code (gates → undecided), the paired bootstrap interval,
the SYNTHETIC mean-degree set, the pairing of arms, and a tiny end-to-end run."""


import math
from pathlib import Path

import pytest
import torch

from graftkit.registry import load_all


def _metrics(batch_minus_graph=(0.1, 0.3), frozen_minus_learned=(0.05, 0.2), gate=""):
    metrics = {"gate_failed": gate}
    for name in ("mutag", "mean-degree"):
        low, high = batch_minus_graph
        metrics[f"batch_minus_graph_auc_ci_low_{name}"], metrics[f"batch_minus_graph_auc_ci_high_{name}"] = low, high
    low, high = frozen_minus_learned
    metrics["frozen_minus_learned_alpha_auc_ci_low_mean-degree"] = low
    metrics["frozen_minus_learned_alpha_auc_ci_high_mean-degree"] = high
    return metrics


def test_registered_rule_reads_the_paired_intervals_after_the_gates():
    exp = load_all()["graphnorm-convergence"]
    assert exp.method == "graphnorm" and "bootstrap" in exp.rule and "undecided" in exp.rule
    assert exp.verdict(_metrics()) is True
    assert exp.verdict(_metrics(batch_minus_graph=(-0.1, 0.3))) is False  # interval reaches 0: not shown
    assert exp.verdict(_metrics(frozen_minus_learned=(-0.2, -0.1))) is False  # frozen α fits faster
    assert exp.verdict(_metrics(gate="training happens: ...")) is None  # a failed gate is undecided
    assert exp.verdict({}) is None  # no gate outcome recorded: nothing to judge


def _gate_metrics(**overrides):
    from graftkit.experiments.graphnorm import ARMS, DATASETS

    metrics = {}
    for name in DATASETS:
        for arm in ARMS:
            metrics[f"final_loss_{name}_{arm}"] = 0.3
            metrics[f"lr_{name}_{arm}"] = 3e-3
            metrics[f"diverged_runs_{name}_{arm}"] = 0
    metrics.update(overrides)
    return metrics


def test_gates_name_what_failed():
    from graftkit.experiments.graphnorm import FULL, QUICK, Budget, _caveats, _gates

    assert _gates(_gate_metrics(), QUICK) == ""
    assert _gates(_gate_metrics(), FULL) == ""
    assert _gates(_gate_metrics(), Budget(epochs=8, seeds=4)).startswith("paired seeds: 4 < 5")
    diverged = _gate_metrics(**{"diverged_runs_mutag_batch": 1})
    assert "batch diverged on mutag" in _gates(diverged, QUICK)
    # training must have left chance for at least one compared arm; one slow arm alone is the claim, not a gate
    slow = _gate_metrics(**{"final_loss_mutag_batch": 0.7})
    assert _gates(slow, QUICK) == ""
    neither = _gate_metrics(**{"final_loss_mutag_batch": 0.7, "final_loss_mutag_graph": 0.65})
    assert _gates(neither, QUICK).startswith("training happens: on mutag")
    # every budget searches the grid, so a judged arm at either edge is undecided at quick and at --full
    for budget in (QUICK, FULL):
        top = _gate_metrics(**{"lr_mean-degree_graph": 1e-1})
        assert "graph on mean-degree chose 0.1, an edge" in _gates(top, budget)
        bottom = _gate_metrics(**{"lr_mutag_graph-frozen-alpha": 3e-4})
        assert "graph-frozen-alpha on mutag chose 0.0003" in _gates(bottom, budget)
        assert _gates(_gate_metrics(**{"lr_mutag_batch": 3e-2}), budget) == ""  # inside: fine
    # an arm the verdict does not compare may sit at an edge: a caveat, not a gate
    layer_edge = _gate_metrics(**{"lr_mutag_layer": 3e-4}, gate_failed="")
    assert _gates(layer_edge, QUICK) == ""
    assert any("layer (not judged) chose an edge" in c for c in _caveats(layer_edge))


def test_learning_rate_is_the_lowest_training_auc_on_seeds_no_judged_run_uses(monkeypatch):
    from graftkit.experiments import graphnorm
    from graftkit.registry import RunContext

    calls = []
    best = {"graph": 3e-3, "batch": 1e-2}

    def fake_train(arm, train_set, lr, seed, budget):
        calls.append(seed)
        if arm == "none" and lr >= 3e-2:
            return None  # diverged: counts as worst, never chosen
        target = best.get(arm, 3e-2 if arm == "none" else 1e-3)
        return {"auc": abs(math.log(lr / target)), "final": 0.1, "curve": [0.1]}

    monkeypatch.setattr(graphnorm, "_train", fake_train)
    chosen, cells = graphnorm._choose_lrs(RunContext("quick", 7, Path("."), lambda *a: None), "mutag", [],
                                          graphnorm.QUICK)
    assert chosen["graph"] == 3e-3 and chosen["batch"] == 1e-2 and chosen["layer"] == 1e-3
    assert chosen["none"] == 1e-2  # its best finite score: 3e-2 and above diverged
    assert math.isnan(cells[("none", 3e-2)]) and cells[("graph", 3e-3)] == 0
    assert len(cells) == len(graphnorm.ARMS) * len(graphnorm.LR_GRID)
    judged = set(range(7, 7 + graphnorm.QUICK.seeds))
    assert calls and not judged & set(calls)


def test_mean_degree_graphs_are_labelled_by_their_mean_degree():
    from torch_geometric.utils import degree

    from graph_ext.datasets import mean_degree_graphs

    graphs = mean_degree_graphs(40, max_degree=8, seed=3)
    means = torch.tensor([float(degree(g.edge_index[0], g.num_nodes).mean()) for g in graphs])
    labels = torch.tensor([int(g.y) for g in graphs])
    assert labels.sum() == 20  # balanced: split at the median
    assert means[labels == 1].min() > means[labels == 0].max()
    assert all(g.x.shape[1] == 9 and torch.equal(g.x.sum(1), torch.ones(g.num_nodes)) for g in graphs)
    again = mean_degree_graphs(40, max_degree=8, seed=3)
    assert all(torch.equal(a.edge_index, b.edge_index) for a, b in zip(graphs, again))


def test_arms_of_one_seed_share_init_and_data_order():
    from graftkit.experiments.graphnorm import FROZEN, Budget, _build, _train
    from graph_ext.datasets import mean_degree_graphs

    graph, batch = _build("graph", 9, 2, seed=4), _build("batch", 9, 2, seed=4)
    shared = {k: v for k, v in graph.state_dict().items() if "norm" not in k}
    assert shared and all(torch.equal(v, batch.state_dict()[k]) for k, v in shared.items())
    frozen = _build(FROZEN, 9, 2, seed=4)
    assert not any(m.mean_scale.requires_grad for m in frozen.modules() if hasattr(m, "mean_scale"))
    # α = 1 at init in both: the first step (same weights, same batch, same dropout draws) is identical
    data = mean_degree_graphs(30, seed=1)
    learned, fixed = (_train(arm, data, 1e-2, 4, Budget(epochs=1, seeds=1, batch_size=10)) for arm in ("graph", FROZEN))
    assert len(learned["curve"]) == 3 and learned["curve"][0] == fixed["curve"][0]
    assert learned["curve"][1:] != fixed["curve"][1:]  # then α moves in one arm only


@pytest.mark.slow
def test_tiny_run_reports_per_seed_metrics_and_names_the_failed_gate(tmp_path, monkeypatch):
    from graftkit.experiments import graphnorm
    from graftkit.registry import RunContext

    monkeypatch.setattr(graphnorm, "QUICK", graphnorm.Budget(epochs=1, seeds=2, batch_size=128))
    monkeypatch.setattr(graphnorm, "LR_GRID", (1e-3, 1e-2, 1e-1))  # 36 grid runs instead of 72
    stages: list[str] = []
    outcome = graphnorm.run(RunContext("quick", 0, tmp_path, stages.append))
    metrics = outcome.metrics
    assert metrics["gate_failed"].startswith("paired seeds: 2 < 5")
    assert load_all()["graphnorm-convergence"].verdict(metrics) is None
    assert len(metrics["per_seed_auc_mutag_graph"]) == 2 and "batch_minus_graph_auc_ci_low_mean-degree" in metrics
    assert "instance_minus_graph_auc_ci_high_mutag" in metrics
    assert outcome.caveats[0].startswith("Undecided: gate failed — paired seeds")
    assert stages[0] == "mutag: lr grid, graph lr 0.001" and outcome.figures[0].is_file()
    assert stages[len(graphnorm.ARMS) * len(graphnorm.LR_GRID)].startswith("mutag: GIN+graph (1/6) lr ")
    assert "grid_auc_mean-degree_batch_lr0.1" in metrics
