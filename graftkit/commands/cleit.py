"""``graftkit cleit run``: k-fold cross-validation of CLEIT and its baselines on your own omics files;
``graftkit cleit synthetic``: write a small SYNTHETIC example in the same formats."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from graftkit.errors import GraftkitError, check_input, check_int, seed_argument

METRIC_COLUMNS = ("dpearsonr", "dpearsonr_abs", "cpearsonr", "cpearsonr_abs", "dspearmanr", "dmse")


def _write_csv(frame, path: Path) -> None:
    from graftkit.checkpoint import atomic_write

    atomic_write(path, lambda handle: handle.write(frame.to_csv(index=False).encode()))


def _run(args: argparse.Namespace) -> int:
    import pandas as pd

    from graftkit.checkpoint import atomic_write, check_writable
    from graftkit.runtime import single_thread
    from omics_ext.cleit import CLEITConfig, align_levels, cross_validate, read_matrix, read_mutation, read_responses
    from omics_ext.cleit.pipeline import METHODS

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise GraftkitError(f"--methods: unknown {unknown or 'empty list'}; choose from {', '.join(METHODS)}")
    run_folds = None
    if args.run_folds:
        try:
            run_folds = [int(f) for f in args.run_folds.split(",")]
        except ValueError:
            raise GraftkitError(f"--run-folds must be comma-separated fold numbers, got {args.run_folds!r}") from None
    check_int("--finetune-epochs", args.finetune_epochs)  # 0 would report an untrained head's predictions
    for flag, path in (("--expression", args.expression), ("--mutation", args.mutation),
                       ("--response", args.response)):
        check_input(path, flag)
    out = Path(args.out)
    check_writable(out, folder=True, what="--out")  # before the folds train, not after
    config = CLEITConfig(expression_pretrain_epochs=args.pretrain_epochs, transmission_epochs=args.transmission_epochs,
                         finetune_epochs=args.finetune_epochs, lr=args.lr, patience=args.patience)
    dataset = align_levels(read_matrix(args.expression, "expression"), read_mutation(args.mutation),
                           read_responses(args.response), shared_genes=args.shared_genes,
                           description=f"{args.expression}, {args.mutation}, {args.response}")
    print(f"{len(dataset.labeled)} labelled lines with both levels, {dataset.expression.shape[1]} expression genes, "
          f"{dataset.mutation.shape[1]} mutation genes, {len(dataset.drugs)} drugs")
    with single_thread():
        result = cross_validate(dataset, config, n_folds=args.folds, folds=run_folds, methods=methods,
                                seed=args.seed, progress=not args.no_progress)
    summary = result.summary()
    summary_frame = pd.DataFrame([{"method": m, **{k: summary[m][k] for k in METRIC_COLUMNS}} for m in summary])
    _write_csv(summary_frame, out / "summary.csv")
    _write_csv(result.per_drug_table(), out / "per_drug.csv")
    _write_csv(pd.DataFrame(result.fold_metrics), out / "folds.csv")
    for method, pred in result.predictions.items():
        frame = pd.DataFrame(pred, index=result.lines, columns=result.drugs)
        frame.insert(0, "fold", result.fold_of_line)
        _write_csv(frame.dropna(subset=["fold"]).rename_axis("sample").reset_index(), out / f"predictions_{method}.csv")
    settings = {**config.to_dict(), "folds": args.folds, "run_folds": run_folds, "seed": args.seed,
                "methods": list(methods), "seconds": result.seconds}
    atomic_write(out / "config.json", lambda handle: handle.write(json.dumps(settings, indent=2).encode()))
    print(summary_frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"per-drug Pearson / Spearman / RMSE: {out / 'per_drug.csv'}")
    return 0


def _synthetic(args: argparse.Namespace) -> int:
    from graftkit.checkpoint import atomic_write, check_writable
    from omics_ext.cleit import make_synthetic

    check_int("--samples", args.samples)
    out = Path(args.out)
    check_writable(out, folder=True, what="--out")
    ds = make_synthetic(n_samples=args.samples, seed=args.seed)
    for name, frame in (("expression.csv", ds.expression), ("mutation.csv", ds.mutation.astype(int))):
        atomic_write(out / name, lambda handle, f=frame: handle.write(f.to_csv(index_label="sample").encode()))
    long = ds.responses.stack().rename("auc").reset_index()
    long.columns = ["sample", "drug", "auc"]
    _write_csv(long, out / "response.csv")
    print(f"wrote SYNTHETIC expression.csv, mutation.csv, response.csv ({args.samples} lines) to {out}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("cleit", help="CLEIT drug-response prediction from mutations (omics_ext)",
                              description="CLEIT: an expression teacher transmits to a mutation encoder that "
                                          "predicts drug response of new genotypes from mutations alone.")
    sub = p.add_subparsers(dest="cleit_command", metavar="COMMAND", required=True)

    r = sub.add_parser("run", help="k-fold CV of CLEIT and baselines; writes per-drug and averaged metrics",
                       description="Cross-validate CLEIT, the mutation autoencoder without teacher, the mutation "
                                   "MLP from scratch and the expression upper bound. Test-fold lines never reach "
                                   "a stage that sees labels. Writes summary.csv, per_drug.csv, folds.csv, "
                                   "predictions_<method>.csv and config.json to --out.")
    r.add_argument("--expression", required=True, type=Path, help="samples x genes CSV/TSV (or .h5ad)")
    r.add_argument("--mutation", required=True, type=Path, help="samples x genes binary 0/1 CSV/TSV")
    r.add_argument("--response", required=True, type=Path, help="long table: sample, drug, value columns")
    r.add_argument("--out", required=True, type=Path, help="output folder")
    r.add_argument("--folds", type=int, default=5, help="number of CV folds (default 5)")
    r.add_argument("--run-folds", default="", help="comma-separated folds to run (default: all)")
    r.add_argument("--methods", default="cleit,mutation_ae,mutation_mlp,expression",
                   help="comma-separated: cleit, mutation_ae, mutation_mlp, expression (default: all)")
    r.add_argument("--pretrain-epochs", type=int, default=100, help="expression autoencoder epochs (default 100)")
    r.add_argument("--transmission-epochs", type=int, default=100, help="mutation autoencoder epochs (default 100)")
    r.add_argument("--finetune-epochs", type=int, default=200, help="max fine-tuning epochs (default 200)")
    r.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3; paper 1e-4 with "
                                                          "10x more epochs)")
    r.add_argument("--patience", type=int, default=10, help="early-stopping / unfreezing patience (default 10)")
    r.add_argument("--shared-genes", action="store_true", help="keep only genes present in both levels")
    r.add_argument("--seed", type=seed_argument, default=0, help="seed for folds and training (default 0)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.set_defaults(func=_run)

    s = sub.add_parser("synthetic", help="write a SYNTHETIC example (expression, mutation, response CSVs)",
                       description="Write a small SYNTHETIC data set in the formats `graftkit cleit run` reads: "
                                   "expression.csv and mutation.csv (samples x genes) and response.csv (sample, "
                                   "drug, auc), for --samples cell lines.")
    s.add_argument("--out", required=True, type=Path, help="output folder")
    s.add_argument("--samples", type=int, default=240, help="number of cell lines (default 240)")
    s.add_argument("--seed", type=seed_argument, default=0, help="generator seed (default 0)")
    s.set_defaults(func=_synthetic)
