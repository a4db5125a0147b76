"""TD experiment: are networks trained from different seeds the same representation, and do augmentations
that help generalisation make them more alike? Small LeNets on scikit-learn's digits (real data).

The paper's claim (Feng et al. 2020, abstract): "for the models trained from different initializations, the
learned features are not the same in terms of downstream-task predictions" and "the models trained with proper
data augmentations that improve the generalization capture more similar features in terms of TD, while those
with data augmentations that hurt the generalization will not". Generalisation there is the trained models' own
test accuracy, so that is the accuracy the rule reads (the heads' probe accuracy is reported beside it).
"""

from __future__ import annotations

import itertools
import time
import warnings
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from graftkit.experiments import protocol
from graftkit.registry import Outcome, RunContext, experiment

#: the augmentation families and their doses, applied per training batch: Gaussian noise std, and the largest
#: random integer shift in pixels. Dose 0 (no augmentation) belongs to both families. Fixed before the run from
#: the validation split that set the recipe (noise 0.2 helped, 0.4 less, 1-pixel shifts hurt at 60 epochs), with
#: noise 1.0 and 2-pixel shifts added so that each family runs from mild to harsh: the rule reads the trend.
FAMILIES = {"noise": (0.0, 0.2, 0.4, 0.6, 1.0), "shift": (0, 1, 2, 3)}
#: "not the same" threshold for models from different seeds, fixed in advance: downstream heads on the two
#: representations disagree on >= 1 % of held-out digits and normalised TD >= 0.05 (held-out TD: heads fit on
#: one half of the held-out digits, TD measured on the other half).
MIN_DISAGREEMENT, MIN_NORMALIZED_TD = 0.01, 0.05
#: a dose helps or hurts when it moves mean test accuracy by >= 1 point (8 of 797 held-out digits).
DECISIVE_ACCURACY_CHANGE = 0.01
#: gate: the networks without augmentation must have learned the digits (chance is 0.10; set knowing earlier
#: runs of this recipe reached about 0.91, so that it fails only for a broken run, never on purpose).
MIN_TRAINED_ACCURACY = 0.85
#: the networks train on TRAIN_IMAGES of the first POOL_IMAGES shuffled digits (the rest of the pool was the
#: validation split that fixed this recipe) for EPOCHS epochs: with 1000 images and 20 epochs no augmentation
#: improved accuracy by a point, so nothing that helps could be tested; the other 797 digits are held out.
POOL_IMAGES, TRAIN_IMAGES, EPOCHS = 1000, 300, 200
#: seeds per dose: TD is between seeds, so each seed's TD is its mean over the pairs it is in (>= 3 seeds)
QUICK_SEEDS, FULL_SEEDS = 3, 5


def settings() -> list[tuple[str, str, float, int, float]]:
    """Every (name, family, dose, shift, noise) to train, no augmentation first and once."""
    rows = [("none", "none", 0.0, 0, 0.0)]
    rows += [(f"noise{d:g}", "noise", d, 0, d) for d in FAMILIES["noise"] if d]
    rows += [(f"shift{d}", "shift", float(d), d, 0.0) for d in FAMILIES["shift"] if d]
    return rows


@dataclass
class TrainConfig:
    epochs: int
    batch_size: int = 64
    lr: float = 3e-3


def augment(x: torch.Tensor, shift: int, noise: float, generator: torch.Generator) -> torch.Tensor:
    """Random integer translation in [-shift, shift]² (zero fill) and additive Gaussian noise, per image."""
    if shift:
        n, size = x.shape[0], x.shape[-1]
        offsets = torch.randint(-shift, shift + 1, (n, 2), generator=generator).to(x.dtype) * 2 / size
        theta = torch.zeros(n, 2, 3, dtype=x.dtype)
        theta[:, 0, 0] = theta[:, 1, 1] = 1
        theta[:, :, 2] = offsets
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    if noise:
        x = x + noise * torch.randn(x.shape, generator=generator)
    return x


def train_lenet(images: torch.Tensor, labels: torch.Tensor, seed: int, shift: int, noise: float,
                config: TrainConfig) -> torch.nn.Module:
    """A LeNet trained with Adam from initialisation ``seed``. The seed also drives the batch order and, from a
    generator of its own, the augmentation draws: every dose of one seed starts from the same weights and sees
    the same batches (the doses are paired)."""
    from vision_ext.models import LeNet

    torch.manual_seed(seed)
    net = LeNet(in_channels=1, num_classes=10, input_size=8)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    order_generator = torch.Generator().manual_seed(seed)
    augment_generator = torch.Generator().manual_seed(seed + 1)
    net.train()
    for _ in range(config.epochs):
        order = torch.randperm(images.shape[0], generator=order_generator)
        for start in range(0, images.shape[0], config.batch_size):
            idx = order[start:start + config.batch_size]
            loss = F.cross_entropy(net(augment(images[idx], shift, noise, augment_generator)), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval()


@dataclass
class HeldOutTD:
    """TD of two heads fit on one split and applied to another (the fields of ``TDResult`` it reports)."""

    normalized: float
    disagreement: float
    accuracy_a: float
    accuracy_b: float


def held_out_td(fit_a: torch.Tensor, fit_b: torch.Tensor, fit_labels: torch.Tensor, eval_a: torch.Tensor,
                eval_b: torch.Tensor, eval_labels: torch.Tensor) -> HeldOutTD:
    """Fit TD's least-squares heads (one-hot targets, default ridge) on the fit split, measure on the eval split.

    TD on the eval split is the mean squared distance of the two heads' predictions, normalised by the mean
    of the two predictions' variances there, as ``vision_ext.td`` does in-sample; disagreement and
    accuracies are of the heads' argmax decisions on the eval split.
    """
    from vision_ext.td.discrepancy import least_squares_heads
    from vision_ext.td.statistics import statistics_of

    num_classes = int(max(fit_labels.max(), eval_labels.max())) + 1
    stats = statistics_of(fit_a, fit_b, fit_labels, num_classes=num_classes)
    head_a, head_b = least_squares_heads(stats, warn=False)
    pred_a, pred_b = head_a(eval_a.double()), head_b(eval_b.double())
    discrepancy = ((pred_a - pred_b) ** 2).sum(1).mean()
    variance = (((pred_a - pred_a.mean(0)) ** 2).sum(1).mean() + ((pred_b - pred_b.mean(0)) ** 2).sum(1).mean()) / 2
    decision_a, decision_b = pred_a.argmax(1), pred_b.argmax(1)
    return HeldOutTD(normalized=float(discrepancy / variance),
                     disagreement=float((decision_a != decision_b).double().mean()),
                     accuracy_a=float((decision_a == eval_labels).double().mean()),
                     accuracy_b=float((decision_b == eval_labels).double().mean()))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)



def _spearman(x: list[float], y: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def dose_response_spearman(accuracy: list[list[float]], td: list[list[float]]) -> list[float]:
    """Per seed (outer index), the Spearman correlation over a family's doses (inner index, dose 0 first)
    between the change of held-out accuracy from dose 0 and the seed's between-seed TD. The paper's claim
    reads as a negative correlation: the doses that help make seeds more alike, those that hurt less."""
    if len(accuracy) != len(td) or not accuracy:
        raise ValueError(f"accuracy and TD must come one row per seed, got {len(accuracy)} and {len(td)}")
    return [_spearman([a - row[0] for a in row], seed_td) for row, seed_td in zip(accuracy, td, strict=True)]


def _verdict(m: dict) -> bool:
    return (m["none_disagreement_heldout"] >= MIN_DISAGREEMENT and m["none_td_normalized_heldout"] >= MIN_NORMALIZED_TD
            and m["td_accuracy_spearman_noise_ci_high"] < 0 and m["td_accuracy_spearman_shift_ci_high"] < 0)


def _plot(rows: list[dict], seeds: list[int], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, family in zip(axes, FAMILIES, strict=True):
        doses = [r for r in rows if r["family"] in ("none", family)]
        x = [r["dose"] for r in doses]
        twin = axis.twinx()
        for k in range(len(seeds)):  # thin lines: each seed; thick: the mean
            axis.plot(x, [r["seed_accuracy"][k] for r in doses], color="tab:blue", lw=0.6, alpha=0.5)
            twin.plot(x, [r["seed_td"][k] for r in doses], color="tab:red", lw=0.6, alpha=0.5)
        axis.plot(x, [r["test_accuracy"] for r in doses], "o-", color="tab:blue", label="test accuracy")
        twin.plot(x, [r["td_normalized"] for r in doses], "s-", color="tab:red", label="TD held out")
        axis.set_xlabel("Gaussian noise std" if family == "noise" else "largest shift (pixels)")
        axis.set_ylabel("CNN test accuracy", color="tab:blue")
        twin.set_ylabel("between-seed TD (normalised, held out)", color="tab:red")
        axis.set_title(f"{family}: accuracy and TD by dose ({len(seeds)} seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@experiment(
    "td-seeds-and-augmentation",
    method="td",
    claim="For models trained from different initializations the learned features are not the same in terms "
          "of downstream-task predictions, and models trained with data augmentations that improve the "
          "generalization capture more similar features in terms of TD, while those with augmentations that "
          "hurt the generalization will not (Feng et al. 2020).",
    rule=f"Dose-response within each augmentation family (Gaussian noise std {', '.join(map(str, FAMILIES['noise']))}; "
         f"largest random shift {', '.join(map(str, FAMILIES['shift']))} pixels), the same seeds (paired: same "
         "initial weights and batch order) at every dose. TD is measured held out: linear heads fit on one half "
         "of the held-out digits, TD measured on the other half. Per seed, a seed's TD at a dose is its mean TD "
         "to the other seeds, and td_accuracy_spearman_<family> is the Spearman correlation, over the family's "
         "doses (dose 0 included), between the seed's change of test accuracy from dose 0 and its TD; the metric "
         "is the mean over seeds with a 95% bootstrap interval over seeds. Gates (else undecided): the CNNs "
         f"without augmentation reach mean test accuracy >= {MIN_TRAINED_ACCURACY}; at least one dose raises and "
         f"one lowers mean test accuracy by >= {DECISIVE_ACCURACY_CHANGE:.0%}; within each family the doses' mean "
         f"test accuracies span >= {DECISIVE_ACCURACY_CHANGE:.0%}. Supported iff (a) without augmentation the "
         f"between-seed pairs have mean held-out disagreement >= {MIN_DISAGREEMENT:.0%} and mean held-out "
         f"normalised TD >= {MIN_NORMALIZED_TD}, and (b) in both families the interval of the correlation lies "
         "below 0 (accuracy and TD move in opposite directions)",
    verdict=protocol.gated(_verdict),
)
def run(ctx: RunContext) -> Outcome:
    from graftkit.data.images import digits
    from vision_ext.td import TDWarning, transferred_discrepancy

    cpu_start = time.process_time()
    images, labels = digits()
    split = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(ctx.seed))
    train_idx, test_idx = split[:TRAIN_IMAGES], split[POOL_IMAGES:]
    # the held-out digits in two halves: the heads are fit on the first, TD is measured on the second
    fit_idx, eval_idx = test_idx[: len(test_idx) // 2], test_idx[len(test_idx) // 2:]
    x_train, y_train = images[train_idx], labels[train_idx]
    x_fit, y_fit, x_eval, y_eval = images[fit_idx], labels[fit_idx], images[eval_idx], labels[eval_idx]
    x_test, y_test = images[test_idx], labels[test_idx]
    seeds = [ctx.seed + i for i in range(QUICK_SEEDS if ctx.quick else FULL_SEEDS)]
    config = TrainConfig(epochs=EPOCHS)
    pairs = list(itertools.combinations(range(len(seeds)), 2))

    rows, rank_warnings = [], 0
    for a, (name, family, dose, shift, noise) in enumerate(settings()):
        nets = []
        for k, seed in enumerate(seeds):
            ctx.progress(f"augmentation {name} ({a + 1}/{len(settings())}), LeNet seed", k + 1, len(seeds))
            nets.append(train_lenet(x_train, y_train, seed, shift, noise, config))
        with torch.no_grad():
            fit_feats = [net.features(x_fit) for net in nets]
            feats = [net.features(x_eval) for net in nets]
            accuracy = [float((net(x_test).argmax(1) == y_test).float().mean()) for net in nets]
        in_sample, held_out = [], []
        for i, j in pairs:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", TDWarning)
                in_sample.append(transferred_discrepancy(feats[i], feats[j], y_eval))
            rank_warnings += sum(issubclass(w.category, TDWarning) for w in caught)
            held_out.append(held_out_td(fit_feats[i], fit_feats[j], y_fit, feats[i], feats[j], y_eval))
        rows.append({
            "augmentation": name, "family": family, "dose": dose,
            "test_accuracy": _mean(accuracy),
            "probe_accuracy": _mean([p.accuracy_a for p in held_out] + [p.accuracy_b for p in held_out]),
            "td_normalized": _mean([p.normalized for p in held_out]),
            "td_normalized_min": min(p.normalized for p in held_out),
            "td_normalized_max": max(p.normalized for p in held_out),
            "disagreement": _mean([p.disagreement for p in held_out]),
            "td_normalized_in_sample": _mean([p.normalized for p in in_sample]),
            "disagreement_in_sample": _mean([p.disagreement for p in in_sample]),
            "one_minus_cka": 1 - _mean([p.linear_cka for p in in_sample]),
            "one_minus_cca": 1 - _mean([p.mean_cca for p in in_sample]),
            "seed_accuracy": accuracy,
            # each seed's TD: its mean held-out TD to every other seed at this dose
            "seed_td": [_mean([p.normalized for p, (i, j) in zip(held_out, pairs, strict=True) if k in (i, j)])
                        for k in range(len(seeds))],
        })

    # sanity reference: the same features under an orthogonal rotation are the same under TD
    rotation = torch.linalg.qr(torch.randn(feats[0].shape[1], feats[0].shape[1],
                                           generator=torch.Generator().manual_seed(ctx.seed)))[0]
    rotated = held_out_td(fit_feats[0], fit_feats[0] @ rotation, y_fit, feats[0], feats[0] @ rotation,
                          y_eval).normalized

    none = rows[0]
    for r in rows:
        r["accuracy_change"] = r["test_accuracy"] - none["test_accuracy"]
    helpful = [r["augmentation"] for r in rows if r["accuracy_change"] >= DECISIVE_ACCURACY_CHANGE]
    harmful = [r["augmentation"] for r in rows if r["accuracy_change"] <= -DECISIVE_ACCURACY_CHANGE]
    metrics: dict = {
        "none_td_normalized_heldout": none["td_normalized"],
        "none_disagreement_heldout": none["disagreement"],
        "none_td_normalized_in_sample": none["td_normalized_in_sample"],
        "none_disagreement_in_sample": none["disagreement_in_sample"],
        "none_linear_cka": 1 - none["one_minus_cka"],
        "rotated_td_normalized_heldout": rotated,
        "helpful_doses": len(helpful),
        "harmful_doses": len(harmful),
    }
    gates = [
        protocol.Gate("trained", none["test_accuracy"] >= MIN_TRAINED_ACCURACY,
                      f"mean test accuracy without augmentation {none['test_accuracy']:.3f} (needs >= "
                      f"{MIN_TRAINED_ACCURACY})"),
        protocol.Gate("helps_and_hurts", bool(helpful and harmful),
                      f"doses that raise mean test accuracy by >= {DECISIVE_ACCURACY_CHANGE:.0%}: "
                      f"{', '.join(helpful) or 'none'}; that lower it: {', '.join(harmful) or 'none'}"),
    ]
    for family in FAMILIES:
        doses = [r for r in rows if r["family"] in ("none", family)]
        per_seed_rho = dose_response_spearman([[r["seed_accuracy"][k] for r in doses] for k in range(len(seeds))],
                                              [[r["seed_td"][k] for r in doses] for k in range(len(seeds))])
        low, high = protocol.bootstrap_interval(per_seed_rho)
        key = f"td_accuracy_spearman_{family}"
        metrics |= {key: _mean(per_seed_rho), f"{key}_ci_low": low, f"{key}_ci_high": high,
                    f"{key}_pooled": _spearman([r["accuracy_change"] for r in doses],
                                               [r["td_normalized"] for r in doses]),
                    f"{key}_in_sample_pooled": _spearman([r["accuracy_change"] for r in doses],
                                                         [r["td_normalized_in_sample"] for r in doses]),
                    **protocol.per_seed(key, seeds, per_seed_rho)}
        spread = max(r["test_accuracy"] for r in doses) - min(r["test_accuracy"] for r in doses)
        gates.append(protocol.Gate(f"accuracy_spread_{family}", spread >= DECISIVE_ACCURACY_CHANGE,
                                   f"the {family} doses' mean test accuracies span {100 * spread:.2f} points "
                                   f"(needs >= {100 * DECISIVE_ACCURACY_CHANGE:g})"))
    for r in rows:
        metrics[f"{r['augmentation']}_test_accuracy"] = r["test_accuracy"]
        metrics[f"{r['augmentation']}_td_normalized_heldout"] = r["td_normalized"]
        metrics[f"{r['augmentation']}_td_normalized_in_sample"] = r["td_normalized_in_sample"]
    metrics |= protocol.gate_metrics(gates)
    metrics["cpu_seconds"] = time.process_time() - cpu_start
    figure = ctx.figure_path("td_seeds_augmentation.png")
    _plot(rows, seeds, figure)
    table = [{k: v for k, v in r.items() if k not in ("seed_accuracy", "seed_td")} for r in rows]
    caveats = protocol.gate_caveats(gates) + [
        f"Held-out vs in-sample TD without augmentation: {none['td_normalized']:.3f} vs "
        f"{none['td_normalized_in_sample']:.3f} (disagreement {none['disagreement']:.3f} vs "
        f"{none['disagreement_in_sample']:.3f}).",
        f"The interval is over {len(seeds)} seeds whose TDs share pairs (a seed's TD is its mean TD to the "
        "others), so the per-seed correlations are not independent; the bootstrap treats them as if they were.",
        f"8×8 digits, LeNets trained on {len(train_idx)} images (few, so that augmentation can help): a 1-pixel "
        "shift is 12 % of the image; the paper's CIFAR-10 ResNets are not run.",
    ]
    return Outcome(
        metrics=metrics,
        table=table,
        figures=[figure],
        data=f"REAL: scikit-learn digits (8×8), {len(train_idx)} training / {len(test_idx)} held-out images "
             f"(heads fit on {len(fit_idx)}, TD measured on {len(eval_idx)})",
        notes=(f"LeNet-5 (vision_ext.models, 84-d penultimate features), Adam lr {config.lr}, batch "
               f"{config.batch_size}, {config.epochs} epochs on {len(train_idx)} training digits, {len(seeds)} "
               f"seeds per dose ({len(settings())} settings). The training size and epochs were fixed on a "
               f"validation split before the run ({len(train_idx)} training / {POOL_IMAGES - len(train_idx)} "
               f"validation digits of the {POOL_IMAGES}-digit pool). TD between every pair of seeds with "
               "least-squares heads (one-hot targets, ridge 1e-6 × mean feature variance). Held out (judged): "
               f"heads fit on {len(fit_idx)} held-out digits, TD, disagreement and probe_accuracy measured on the "
               f"other {len(eval_idx)}; *_in_sample: heads fit and measured on those {len(eval_idx)} "
               f"({rank_warnings} rank-deficiency warnings from dead ReLU units in-sample, handled by that ridge). "
               "td_accuracy_spearman_<family> is per seed (mean and bootstrap interval over seeds); *_pooled is "
               "the same correlation on the seed-mean accuracies and TDs. CKA and CCA are computed on the "
               f"measurement half. {metrics['cpu_seconds']:.0f} s of CPU time."),
        caveats=caveats,
    )
