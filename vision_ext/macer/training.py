"""Training loop for MACER and the Gaussian-augmentation baseline: the same loop, data order and noise for
both, so a comparison differs only in the objective.

Scale-out is PyTorch's own DistributedDataParallel: when ``torch.distributed`` is initialised, the model is
wrapped in DDP (gradients averaged across ranks) and each rank reads its shard through a
``DistributedSampler``. Checkpoints (rank 0, atomic) hold everything a resume needs; the data order and the
noise are functions of (seed, epoch, rank), so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from graftkit.checkpoint import load_checkpoint, save_checkpoint
from graftkit.errors import GraftkitError, check_int, check_number
from vision_ext.macer.configuration_macer import MacerConfig
from vision_ext.macer.modeling_macer import smoothed_training_loss


@dataclass
class TrainSettings:
    """Optimisation settings. Defaults are the reference's: SGD, lr 0.01, momentum 0.9, weight decay 5e-4,
    batch 64, learning rate × ``lr_decay`` at each epoch in ``milestones`` (reference: 200 and 400 of 440)."""

    epochs: int = 440
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: list[int] = field(default_factory=lambda: [200, 400])
    lr_decay: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("epochs", self.epochs)
        check_int("batch_size", self.batch_size)
        check_number("lr", self.lr, strict=True)
        if not 0 <= self.momentum < 1:
            raise GraftkitError(f"momentum must be in [0, 1), got {self.momentum!r}")
        check_number("weight_decay", self.weight_decay)
        check_number("lr_decay", self.lr_decay, strict=True)
        self.milestones = sorted(int(m) for m in self.milestones)

    def lr_at(self, epoch: int) -> float:
        """Learning rate of (1-based) ``epoch``: decayed once per milestone already reached."""
        return self.lr * self.lr_decay ** sum(epoch > m for m in self.milestones)


def _seed_for(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def _check_data(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
    if images.dim() != 4 or labels.dim() != 1 or len(images) != len(labels):
        raise GraftkitError(f"expected images (N, C, H, W) and labels (N,), got {tuple(images.shape)} and "
                            f"{tuple(labels.shape)}")
    if len(labels) == 0:
        raise GraftkitError("the training set is empty")
    if not torch.isfinite(images).all():
        raise GraftkitError("the training images contain NaN or infinite values")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise GraftkitError(f"labels must lie in [0, {num_classes}), got [{int(labels.min())}, "
                            f"{int(labels.max())}]")


def train_smoothed(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, config: MacerConfig,
                   settings: TrainSettings, *, checkpoint: str | Path | None = None, resume: bool = False,
                   model_spec: dict[str, Any] | None = None, progress: bool = True) -> list[dict[str, float]]:
    """Train ``model`` (in place) with the objective of ``config``; return one record per epoch run.

    ``checkpoint``: written atomically after every epoch (rank 0 only); with ``resume`` an existing one is
    loaded first and training continues from its epoch. ``model_spec`` (architecture name and sizes) is stored
    beside the weights so ``graftkit macer certify`` can rebuild the model.
    """
    from tqdm.auto import tqdm

    num_classes = (model_spec or {}).get("num_classes", int(labels.max()) + 1)
    _check_data(images, labels, num_classes)
    device = next(model.parameters()).device
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                                weight_decay=settings.weight_decay)
    history: list[dict[str, float]] = []
    start_epoch = 1
    if resume and checkpoint is not None and Path(checkpoint).exists():
        state = load_checkpoint(checkpoint, map_location=device)
        for key, mine in (("config", config.to_dict()), ("model_spec", model_spec)):
            if state.get(key) != mine:
                raise GraftkitError(f"cannot resume from {checkpoint}: its {key} {state.get(key)} "
                                    f"differs from this run's {mine}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = list(state["history"])
        start_epoch = state["epoch"] + 1

    net = DistributedDataParallel(model) if distributed else model
    sampler = DistributedSampler(TensorDataset(images, labels), num_replicas=world, rank=rank, shuffle=True,
                                 seed=settings.seed)
    loader = DataLoader(TensorDataset(images, labels), batch_size=settings.batch_size, sampler=sampler)
    noise = torch.Generator(device=device)
    epochs = tqdm(range(start_epoch, settings.epochs + 1), desc=f"{config.objective} σ={config.sigma}",
                  unit="epoch", disable=not progress or rank != 0, initial=start_epoch - 1,
                  total=settings.epochs)
    for epoch in epochs:
        sampler.set_epoch(epoch)
        noise.manual_seed(_seed_for(settings.seed, epoch, rank))
        for group in optimizer.param_groups:
            group["lr"] = settings.lr_at(epoch)
        objective = config.at_epoch(epoch)
        net.train()
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # on device: NCCL reduces only GPU tensors
        started = time.perf_counter()
        for inputs, targets in loader:
            inputs, targets = inputs.to(device), targets.to(device)
            terms = smoothed_training_loss(net, inputs, targets, objective, noise)
            optimizer.zero_grad(set_to_none=True)
            terms.loss.backward()
            optimizer.step()
            sums += torch.stack([terms.classification, terms.robustness, terms.loss.new_tensor(len(inputs))])
        seconds = time.perf_counter() - started
        if distributed:
            dist.all_reduce(sums)
        record = {"epoch": epoch, "classification_loss": float(sums[0] / sums[2]),
                  "robustness_loss": float(sums[1] / sums[2]), "seconds": seconds,
                  "lr": settings.lr_at(epoch)}
        history.append(record)
        epochs.set_postfix(l_c=f"{record['classification_loss']:.3f}", l_r=f"{record['robustness_loss']:.3f}")
        if checkpoint is not None and rank == 0:
            save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "epoch": epoch, "config": config.to_dict(), "settings": asdict(settings),
                             "model_spec": model_spec, "history": history}, checkpoint)
    return history
