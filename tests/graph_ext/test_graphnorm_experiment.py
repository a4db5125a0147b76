"""The graphnorm-convergence experiment: its rule as code (gates → undecided), the paired bootstrap interval,
the SYNTHETIC mean-degree set, the pairing of arms, and a tiny end-to-end run."""


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
    from graftkit.experiments.graphnorm import FULL, QUICK, Budget, _gates

    assert _gates(_gate_metrics(), QUICK, full=False) == ""
    assert _gates(_gate_metrics(), FULL, full=True) == ""
    assert _gates(_gate_metrics(), Budget(epochs=8, seeds=4), full=False).startswith("paired seeds: 4 < 5")
    diverged = _gate_metrics(**{"diverged_runs_mutag_batch": 1})
    assert "batch diverged on mutag" in _gates(diverged, QUICK, full=False)
    # training must have left chance for at least one compared arm; one slow arm alone is the claim, not a gate
    slow = _gate_metrics(**{"final_loss_mutag_batch": 0.7})
    assert _gates(slow, QUICK, full=False) == ""
    neither = _gate_metrics(**{"final_loss_mutag_batch": 0.7, "final_loss_mutag_graph": 0.65})
    assert _gates(neither, QUICK, full=False).startswith("training happens: on mutag")
    edge = _gate_metrics(**{"lr_mean-degree_graph": 3e-2})
    assert _gates(edge, QUICK, full=False) == ""  # quick uses fixed rates: no grid to be at the edge of
    assert "graph on mean-degree chose 0.03" in _gates(edge, FULL, full=True)


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
    stages: list[str] = []
    outcome = graphnorm.run(RunContext("quick", 0, tmp_path, stages.append))
    metrics = outcome.metrics
    assert metrics["gate_failed"].startswith("paired seeds: 2 < 5")
    assert load_all()["graphnorm-convergence"].verdict(metrics) is None
    assert len(metrics["per_seed_auc_mutag_graph"]) == 2 and "batch_minus_graph_auc_ci_low_mean-degree" in metrics
    assert "instance_minus_graph_auc_ci_high_mutag" in metrics
    assert outcome.caveats[0].startswith("Undecided: gate failed — paired seeds")
    assert stages[0] == "mutag: GIN+graph (1/6) lr 0.003, seed 1/2" and outcome.figures[0].is_file()
