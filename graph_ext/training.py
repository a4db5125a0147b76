"""Graph-classification training as the GraphNorm reference: Adam, linearly decayed learning rate, training
and held-out accuracy measured in eval mode after every epoch; the training-mode loss of every step; and the
paired bootstrap interval the GraphNorm experiment judges with."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from graftkit.errors import GraftkitError


@torch.no_grad()
def mean_loss(model: torch.nn.Module, loader) -> float:
    """Mean cross-entropy per graph (model in eval mode)."""
    model.eval()
    total = count = 0.0
    for data in loader:
        logits = model(data.x, data.edge_index, data.batch, data.num_graphs)
        total += float(F.cross_entropy(logits, data.y, reduction="sum"))
        count += data.num_graphs
    return total / max(count, 1)


@torch.no_grad()
def accuracy(model: torch.nn.Module, loader) -> float:
    """Fraction of graphs whose argmax prediction equals ``y`` (model in eval mode)."""
    model.eval()
    correct = total = 0
    for data in loader:
        logits = model(data.x, data.edge_index, data.batch, data.num_graphs)
        correct += int((logits.argmax(-1) == data.y).sum())
        total += data.num_graphs
    return correct / max(total, 1)


def train_graph_classifier(model: torch.nn.Module, train_set: Sequence, *, epochs: int = 400,
                           batch_size: int = 128, lr: float = 1e-2, seed: int = 0,
                           eval_sets: dict[str, Sequence] | None = None, progress: bool | None = None,
                           desc: str = "train", score_train: bool = True) -> dict[str, list[float]]:
    """Train ``model`` with cross-entropy and return per-epoch ``loss``, ``train_acc`` and ``<name>_acc``, and
    ``step_loss``: the training-mode loss of every optimizer step (what the model is fitting, with BatchNorm
    on batch statistics and dropout on).

    ``progress``: show a tqdm bar (``None``: only when stderr is a terminal).
    ``train_acc`` is recomputed in eval mode over the whole training set after each epoch, as the reference
    does (so BatchNorm is scored with its running statistics); ``score_train=False`` skips it (no
    ``train_acc``). The learning rate decays linearly to 0. The shuffling order depends on ``seed`` only.
    """
    from torch_geometric.loader import DataLoader
    from tqdm.auto import tqdm

    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise GraftkitError(f"epochs, batch_size and lr must be positive (got {epochs}, {batch_size}, {lr})")
    if len(train_set) == 0:
        raise GraftkitError("the training set is empty")
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=generator)
    # evaluation batches never change: collate them once
    ordered = {"train": list(DataLoader(train_set, batch_size=batch_size))} if score_train else {}
    ordered.update({name: list(DataLoader(ds, batch_size=batch_size)) for name, ds in (eval_sets or {}).items()})
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1 - epoch / epochs)
    history: dict[str, list[float]] = {"loss": [], "step_loss": [], **{f"{name}_acc": [] for name in ordered}}
    bar = tqdm(range(epochs), desc=desc, disable=None if progress is None else not progress, leave=False)
    for _ in bar:
        model.train()
        total_loss = 0.0
        for data in train_loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(data.x, data.edge_index, data.batch, data.num_graphs), data.y)
            if not torch.isfinite(loss):
                raise GraftkitError(f"training loss became {loss.item()} (diverged); lower the learning rate")
            loss.backward()
            optimizer.step()
            history["step_loss"].append(loss.item())
            total_loss += history["step_loss"][-1] * data.num_graphs
        schedule.step()
        history["loss"].append(total_loss / len(train_set))
        for name, loader in ordered.items():
            history[f"{name}_acc"].append(accuracy(model, loader))
        bar.set_postfix(loss=f"{history['loss'][-1]:.3f}")
    return history


def epochs_to_reach(curve: Sequence[float], target: float) -> int | None:
    """First epoch (1-based) whose value is >= ``target``; ``None`` if never reached."""
    for epoch, value in enumerate(curve, start=1):
        if value >= target:
            return epoch
    return None

