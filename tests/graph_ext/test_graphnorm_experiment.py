"""The graphnorm-convergence experiment is registered and its verdict follows the stated rule."""

import pytest

from graftkit.registry import load_all


def _metrics(gn=10.0, bn=15.0, learned=0.95, fixed=0.5):
    return {"epochs_to_target_graph": gn, "epochs_to_target_batch": bn,
            "ablation_acc_learned_alpha": learned, "ablation_acc_fixed_alpha": fixed}


def test_registered_with_rule():
    exp = load_all()["graphnorm-convergence"]
    assert exp.method == "graphnorm" and "BatchNorm" in exp.rule and "α" in exp.rule
    assert exp.verdict(_metrics()) is True
    assert exp.verdict(_metrics(gn=15.0, bn=15.0)) is False  # not faster than BatchNorm
    assert exp.verdict(_metrics(learned=0.6)) is False  # learned shift does not escape the collapse
    assert exp.verdict(_metrics(fixed=0.8, learned=1.0)) is False  # frozen α is not at chance


def test_report_labels_runs_that_never_reach_the_target_instead_of_printing_the_censored_value():
    from graftkit.experiments.graphnorm import _label_epochs

    assert _label_epochs([3, 5, 26], 25) == ("3, 5, never", "4.0 (1 of 3 runs never reached it)")
    assert _label_epochs([26, 26], 25) == ("never, never", "never reached in 25 epochs")
    assert _label_epochs([4, 6], 25) == ("4, 6", "5.0")


def test_caveats_say_when_graphnorm_ties_instancenorm():
    from graftkit.experiments.graphnorm import _caveats

    tie = {"epochs_to_target_graph": 12.4, "epochs_to_target_instance": 12.0, "final_train_acc_graph": 0.93,
           "final_train_acc_instance": 0.94}
    assert _caveats(tie, 25, quick=True)[0].startswith("GraphNorm ties InstanceNorm on MUTAG")
    assert len(_caveats(tie, 25, quick=True)) == 3 and len(_caveats(tie, 25, quick=False)) == 2
    apart = {**tie, "epochs_to_target_instance": 20.0}
    assert _caveats(apart, 25, quick=False)[0].startswith("GraphNorm vs InstanceNorm on MUTAG")


@pytest.mark.slow
def test_convergence_and_ablation_report_named_progress(tmp_path):
    from graftkit.experiments import graphnorm
    from graftkit.registry import RunContext
    from graph_ext.datasets import load_mutag

    stages: list[str] = []
    ctx = RunContext("quick", 0, tmp_path, stages.append)
    dataset = load_mutag(str(tmp_path / "mutag"))
    curves, _ = graphnorm._convergence(ctx, dataset, 1, [(0, list(range(20)), None)])
    ablation = graphnorm._ablation(ctx, [0], 1)
    assert all(len(runs) == 1 for runs in curves.values()) and all(len(r) == 1 for r in ablation.values())
    assert stages[0] == "MUTAG GIN+graph norm 1/5, run 1/1"
    assert stages[-1] == "regular graphs, GraphNorm α fixed, seed 1/1"
