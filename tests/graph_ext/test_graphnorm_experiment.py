"""The graphnorm-convergence experiment is registered and its verdict follows the stated rule."""

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
