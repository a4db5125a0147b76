"""Training IRN as the reference (``models/IRN_model.py::optimize_parameters``, ``train_IRN_x{2,4}.yml``).

Per step, on a batch of HR patches x with reference LR ``bicubic(x)`` (MATLAB-style, :mod:`.resize`):

- forward: y = f(x); L_guide = λ_fit · mean_b Σ (y_LR − bicubic(x))²; L_distr = λ_ce · mean_b Σ z²
- backward: x̂ = f⁻¹([Q(y_LR), ε]), ε ~ N(0, 1), Q = 8-bit rounding with a straight-through gradient;
  L_recon = λ_rec · mean_b Σ sqrt((x̂ − x)² + 1e-6)   (Charbonnier, the reference's "l1")
- Adam (β 0.9/0.999, weight decay 1e-5), lr 2e-4 halved at 20/40/60/80 % of the steps (the reference's
  100k…400k of 500k), gradient norm clipped to 10.

Distributed: when ``torch.distributed`` is initialised the objective is wrapped in torch's
DistributedDataParallel (gradients all-reduced, so every rank holds the same weights); each rank draws its
own patches (seed + rank), only rank 0 writes checkpoints.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from graftkit.checkpoint import load_checkpoint, save_checkpoint
from graftkit.errors import GraftkitError, check_int, check_number
from vision_ext.irn.checks import check_values
from vision_ext.irn.configuration_irn import IRNConfig
from vision_ext.irn.modeling_irn import IRN, quantize
from vision_ext.irn.resize import imresize

CHECKPOINT_FORMAT = "graftkit-irn/1"


class IRNObjective(nn.Module):
    """The three IRN losses of one batch; a module so DDP can wrap the whole step in one forward."""

    def __init__(self, model: IRN) -> None:
        super().__init__()
        self.model = model

    def forward(self, hr: Tensor, lr_ref: Tensor, noise: Tensor | None = None) -> dict[str, Tensor]:
        cfg = self.model.config
        channels = cfg.in_channels
        y = self.model(hr)
        lr, z = y[:, :channels], y[:, channels:]
        batch = hr.shape[0]
        guide = cfg.guide_weight * ((lr - lr_ref.detach()) ** 2).sum() / batch
        distribution = cfg.distribution_weight * (z**2).sum() / batch
        if noise is None:
            noise = torch.randn_like(z)
        restored = self.model.inverse(torch.cat((quantize(lr), noise), dim=1))
        diff = restored - hr
        reconstruction = cfg.reconstruction_weight * torch.sqrt(diff * diff + cfg.charbonnier_eps).sum() / batch
        total = guide + distribution + reconstruction
        return {"total": total, "guide": guide, "distribution": distribution, "reconstruction": reconstruction}


@dataclass
class TrainConfig:
    """Optimisation settings; defaults are the reference's (batch 16, 144² patches, Adam 2e-4, clip 10)."""

    steps: int = 500_000
    batch_size: int = 16
    patch_size: int = 144
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-5
    milestones: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)  # fractions of ``steps``
    gamma: float = 0.5
    grad_clip: float = 10.0
    flip_rotate: bool = True
    checkpoint_every: int = 5000
    seed: int = 0
    max_seconds: float | None = None  # stop early (with a checkpoint) once this much wall time has passed

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "patch_size", "checkpoint_every"):
            check_int(name, getattr(self, name))
        check_number("lr", self.lr, strict=True)
        check_number("grad_clip", self.grad_clip, strict=True)
        if not 0 < self.gamma <= 1:
            raise GraftkitError(f"gamma must be in (0, 1], got {self.gamma!r}")
        if self.max_seconds is not None:
            check_number("max_seconds", self.max_seconds, strict=True)
        if any(not 0 < m < 1 for m in self.milestones):
            raise GraftkitError(f"milestones are fractions of the steps in (0, 1), got {self.milestones}")
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        self.milestones = tuple(self.milestones)

    def milestone_steps(self) -> list[int]:
        return sorted({max(1, round(m * self.steps)) for m in self.milestones})

    def optimizer(self, parameters) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.MultiStepLR]:
        """Adam with these lr, betas and weight decay over ``parameters``, and its lr schedule (times ``gamma``
        at each milestone step): what IRN and the SR baseline train with."""
        optimizer = torch.optim.Adam(parameters, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)
        return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, self.milestone_steps(), self.gamma)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["betas"], data["milestones"] = list(self.betas), list(self.milestones)
        return data


class PatchSampler:
    """Random HR patches from a list of images (3, H, W), with random flips and 90° rotations (the reference's
    ``use_flip``/``use_rot``), and their MATLAB-bicubic reference LR.

    As the reference's ``LQGT_dataset``, the LR is the bicubic downscale of the whole image, cropped at the
    patch (patch corners on multiples of the scale): a bicubic of the patch alone would mirror-pad at the patch
    edges and give the guidance loss a wrong target on its border LR pixels.
    """

    def __init__(self, images: Sequence[Tensor], patch_size: int, scale: int, flip_rotate: bool = True,
                 seed: int = 0) -> None:
        if patch_size % scale:
            raise GraftkitError(f"patch_size {patch_size} must be divisible by the scale {scale}")
        for index, img in enumerate(images):
            if not isinstance(img, Tensor) or img.dim() != 3 or img.shape[0] != 3 or not img.is_floating_point():
                shape = (img.dtype, tuple(img.shape)) if isinstance(img, Tensor) else type(img).__name__
                raise GraftkitError(f"training image {index} must be a float RGB tensor (3, H, W), got {shape}")
            check_values(img, f"training image {index}", unit_range=True)
        usable = [img for img in images if min(img.shape[-2:]) >= patch_size]
        if not usable:
            raise GraftkitError(f"no training image is at least {patch_size}×{patch_size}; lower --patch-size")
        self.images, self.patch_size, self.scale, self.flip_rotate = usable, patch_size, scale, flip_rotate
        self.lr_images = [imresize(img, 1 / scale) for img in usable]
        self.generator = torch.Generator().manual_seed(seed)

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.generator))

    def sample(self, batch_size: int) -> tuple[Tensor, Tensor]:
        size, scale = self.patch_size, self.scale
        patches, lr_patches = [], []
        for _ in range(batch_size):
            index = self._randint(len(self.images))
            img, lr_img = self.images[index], self.lr_images[index]
            top = scale * self._randint((img.shape[-2] - size) // scale + 1)
            left = scale * self._randint((img.shape[-1] - size) // scale + 1)
            pair = [img[:, top : top + size, left : left + size],
                    lr_img[:, top // scale : (top + size) // scale, left // scale : (left + size) // scale]]
            if self.flip_rotate:
                if self._randint(2):
                    pair = [x.flip(-1) for x in pair]
                if self._randint(2):
                    pair = [x.flip(-2) for x in pair]
                if self._randint(2):
                    pair = [x.transpose(-1, -2) for x in pair]
            patches.append(pair[0])
            lr_patches.append(pair[1])
        return torch.stack(patches), torch.stack(lr_patches)


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def save_training_state(path: str | os.PathLike, model: IRN, optimizer: torch.optim.Optimizer | None = None,
                        scheduler: Any = None, step: int = 0, train_config: TrainConfig | None = None,
                        sampler: PatchSampler | None = None) -> Path:
    """Atomically write the model (and, for resuming, the optimizer, schedule, step and RNG states)."""
    state: dict[str, Any] = {"format": CHECKPOINT_FORMAT, "config": model.config.to_dict(),
                             "model": model.state_dict(), "step": step}
    if optimizer is not None:
        state.update(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                     train=train_config.to_dict() if train_config else None,
                     sampler_rng=sampler.generator.get_state() if sampler else None,
                     torch_rng=torch.get_rng_state())
    return save_checkpoint(state, path)


def _read_state(path: str | os.PathLike) -> dict[str, Any]:
    state = load_checkpoint(path)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise GraftkitError(f"{path} is not an IRN checkpoint (expected format {CHECKPOINT_FORMAT})")
    return state


def load_irn(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> IRN:
    """An :class:`IRN` restored from a checkpoint written by :func:`train` (eval mode)."""
    state = _read_state(path)
    model = IRN(config=IRNConfig.from_dict(state["config"]))
    model.load_state_dict(state["model"])
    return model.to(map_location).eval()


def _out_of_time(max_seconds: float | None, started: float, device: torch.device) -> bool:
    """Whether the wall-time budget is spent; under DDP rank 0 decides for all, so ranks stop together."""
    if max_seconds is None:
        return False
    flag = torch.tensor([time.perf_counter() - started >= max_seconds], dtype=torch.int32, device=device)
    if _rank_world()[1] > 1:
        torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())


def train(
    model: IRN,
    images: Sequence[Tensor],
    config: TrainConfig | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place on random patches of ``images`` ((3, H, W) tensors in [0, 1]).

    ``checkpoint``: written atomically every ``checkpoint_every`` steps and at the end; with ``resume`` an
    existing one is loaded first (model, optimizer, schedule, step and RNG states) and training continues
    to ``config.steps`` (or until ``config.max_seconds``). Returns the per-step losses (this run's steps).
    """
    from tqdm.auto import tqdm

    config = config or TrainConfig()
    rank, world = _rank_world()
    device = next(model.parameters()).device
    sampler = PatchSampler(images, config.patch_size, model.scale, config.flip_rotate, seed=config.seed + rank)
    optimizer, scheduler = config.optimizer(model.parameters())
    start = 0
    if resume:
        if checkpoint is None:
            raise GraftkitError("resume needs a checkpoint path")
        if Path(checkpoint).is_file():
            state = _read_state(checkpoint)
            if state["config"] != model.config.to_dict():
                raise GraftkitError(f"{checkpoint} was trained with another IRN config: {state['config']}")
            if "optimizer" not in state:
                raise GraftkitError(f"{checkpoint} holds weights only (no optimizer state); cannot resume")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scheduler.milestones = Counter(config.milestone_steps())  # this run's --steps decide the schedule
            start = int(state["step"])
            if world == 1 and state.get("sampler_rng") is not None:
                sampler.generator.set_state(state["sampler_rng"])
                torch.set_rng_state(state["torch_rng"])
    objective: nn.Module = IRNObjective(model)
    if world > 1:
        objective = nn.parallel.DistributedDataParallel(objective)
    model.train()
    history: list[dict[str, float]] = []
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc=f"IRN x{model.scale}",
               disable=not progress or rank != 0)
    started = time.perf_counter()
    for step in bar:
        hr, lr_ref = sampler.sample(config.batch_size)
        losses = objective(hr.to(device), lr_ref.to(device))
        if not torch.isfinite(losses["total"]):
            raise GraftkitError(f"IRN loss became non-finite at step {step + 1}: "
                                f"{ {k: float(v) for k, v in losses.items()} }; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        record = {k: float(v.detach()) for k, v in losses.items()}
        history.append(record)
        bar.set_postfix(loss=f"{record['total']:.1f}", rec=f"{record['reconstruction']:.1f}")
        done = step + 1
        out_of_time = _out_of_time(config.max_seconds, started, device)
        last = done == config.steps or out_of_time
        if checkpoint is not None and rank == 0 and (done % config.checkpoint_every == 0 or last):
            save_training_state(checkpoint, model, optimizer, scheduler, done, config, sampler)
        if on_step is not None:
            on_step(done, record)
        if out_of_time:
            break
    model.eval()
    return history
