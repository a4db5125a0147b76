"""The three CLEIT stages as one object: ``pretrain_expression`` → ``transmit`` → ``finetune`` → ``predict``.

Scale-out: when ``torch.distributed`` is initialised, every stage wraps its trainable network in
``DistributedDataParallel`` and shards the epoch with ``DistributedSampler`` (batch size per process).
Validation and early-stopping decisions use the full validation set on every rank, so all ranks take the
same decisions and end with identical weights.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from graftkit.checkpoint import load_checkpoint, save_checkpoint
from graftkit.errors import GraftkitError
from omics_ext.cleit.configuration_cleit import CLEITConfig
from omics_ext.cleit.metrics import summarize
from omics_ext.cleit.modeling_cleit import (
    EncoderRegressor,
    MultiOutputRegressor,
    OmicsAutoEncoder,
    contrastive_loss,
    masked_simse,
)

ArrayLike = Any  # torch.Tensor, numpy array or pandas DataFrame


def _as_tensor(x: ArrayLike, name: str, allow_nan: bool = False) -> torch.Tensor:
    values = x.to_numpy() if hasattr(x, "to_numpy") else x
    try:
        t = torch.from_numpy(np.array(values.cpu() if isinstance(values, torch.Tensor) else values,
                                      dtype=np.float32))
    except (TypeError, ValueError) as err:
        raise GraftkitError(f"{name}: not a numeric matrix ({err})") from err
    if t.dim() != 2:
        raise GraftkitError(f"{name}: expected a 2-D [samples, features] matrix, got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise GraftkitError(f"{name}: empty matrix, shape {tuple(t.shape)}")
    bad = torch.isinf(t) if allow_nan else ~torch.isfinite(t)
    if bad.any():
        row, col = (int(v) for v in bad.nonzero()[0])
        raise GraftkitError(f"{name}: non-finite value {t[row, col].item()} at row {row}, column {col}"
                            + ("" if allow_nan else " (impute missing values first; see the README, section CLEIT)"))
    return t


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


class _LabelScaler:
    """Per-drug standardisation fitted on training labels (NaN ignored); predictions are mapped back."""

    def __init__(self, labels: torch.Tensor) -> None:
        mask = ~torch.isnan(labels)
        counts = mask.sum(0)
        if (counts == 0).any():
            missing = (counts == 0).nonzero().flatten().tolist()
            raise GraftkitError(f"responses: drug column(s) {missing} have no label among the training samples")
        filled = torch.nan_to_num(labels)
        self.mean = filled.sum(0) / counts
        var = torch.where(mask, (filled - self.mean) ** 2, torch.zeros_like(filled)).sum(0) / counts
        self.std = var.sqrt().clamp_min(1e-6)

    def transform(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.mean.to(y.device)) / self.std.to(y.device)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.std.to(y.device) + self.mean.to(y.device)

    def state(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> _LabelScaler:
        scaler = cls.__new__(cls)
        scaler.mean, scaler.std = state["mean"], state["std"]
        return scaler


class CLEIT:
    """Cross-level information transmission (He & Xie, Bioinformatics 2021) for drug-response prediction.

    1. :meth:`pretrain_expression`: expression autoencoder (MSE) on expression profiles, then fine-tuned with
       the multi-output regressor on labelled samples; its encoder becomes the frozen teacher.
    2. :meth:`transmit`: mutation autoencoder trained with reconstruction + contrastive loss between the
       teacher's expression code and the mutation code of the same sample (no expression → plain
       autoencoder, the "no teacher" baseline).
    3. :meth:`finetune`: mutation encoder + a new regressor on drug responses, gradual unfreezing; without
       :meth:`transmit` first, the mutation network is trained from scratch (the mutation-only MLP baseline).
    4. :meth:`predict`: responses of new genotypes from mutations alone.

    Inputs are ``[samples, features]`` tensors, arrays or DataFrames; responses may hold NaN (missing labels,
    masked in the loss). Expression should be standardised per gene beforehand (see
    :mod:`omics_ext.cleit.data`).
    """

    def __init__(self, config: CLEITConfig | None = None, *, seed: int = 0,
                 device: str | torch.device = "cpu") -> None:
        self.config = config or CLEITConfig()
        self.seed = int(seed)
        self.device = torch.device(device)
        self.expression_ae: OmicsAutoEncoder | None = None
        self.expression_model: EncoderRegressor | None = None
        self.teacher: nn.Module | None = None
        self.mutation_ae: OmicsAutoEncoder | None = None
        self.mutation_model: EncoderRegressor | None = None
        self._expression_scaler: _LabelScaler | None = None
        self._mutation_scaler: _LabelScaler | None = None

    # ---------------------------------------------------------------- building blocks
    def _autoencoder(self, input_dim: int) -> OmicsAutoEncoder:
        c = self.config
        return OmicsAutoEncoder(input_dim, c.encoder_hidden_dims, c.latent_dim, c.dropout).to(self.device)

    def _regressor(self, n_drugs: int) -> MultiOutputRegressor:
        c = self.config
        return MultiOutputRegressor(c.latent_dim, n_drugs, c.regressor_shared_dim, c.regressor_tower_dims,
                                    c.dropout, c.regressor_activation).to(self.device)

    def _optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=lr, weight_decay=self.config.weight_decay)

    def _seed(self, stage: int) -> int:
        seed = self.seed * 1000 + stage
        torch.manual_seed(seed)
        return seed

    def _epoch_batches(self, n: int, batch_size: int, seed: int, epoch: int, min_size: int = 1
                       ) -> list[torch.Tensor]:
        if _distributed():
            sampler = DistributedSampler(range(n), shuffle=True, seed=seed)
            sampler.set_epoch(epoch)
            order = torch.tensor(list(sampler))
        else:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        batches = list(order.split(batch_size))
        return [b for b in batches if len(b) >= min_size]

    @staticmethod
    def _wrap(module: nn.Module) -> nn.Module:
        return DistributedDataParallel(module) if _distributed() else module

    def _split_validation(self, x: torch.Tensor, y: torch.Tensor, validation, name: str):
        if validation is not None:
            x_val = _as_tensor(validation[0], f"{name} validation inputs")
            y_val = _as_tensor(validation[1], f"{name} validation responses", allow_nan=True)
            if x_val.shape[1] != x.shape[1] or y_val.shape[1] != y.shape[1] or x_val.shape[0] != y_val.shape[0]:
                raise GraftkitError(f"{name}: validation shapes {tuple(x_val.shape)}, {tuple(y_val.shape)} do not "
                                    f"match training {tuple(x.shape)}, {tuple(y.shape)}")
            return x, y, x_val, y_val
        n_val = int(round(x.shape[0] * self.config.validation_fraction))
        if n_val < 3 or x.shape[0] - n_val < 2:
            raise GraftkitError(f"{name}: {x.shape[0]} labelled samples are too few to hold out a validation set")
        order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(self.seed))
        val, train = order[:n_val], order[n_val:]
        return x[train], y[train], x[val], y[val]

    # ---------------------------------------------------------------- generic loops
    def _train_autoencoder(self, ae: OmicsAutoEncoder, x: torch.Tensor, epochs: int, stage: int,
                           paired: torch.Tensor | None = None, progress: bool = False, desc: str = ""
                           ) -> dict[str, list[float]]:
        """Reconstruction MSE, plus the contrastive loss to the frozen teacher when ``paired`` expression is given."""
        c = self.config
        seed = self._seed(stage + 100)  # re-seeded after ``ae`` was built: dropout masks are reproducible
        model = self._wrap(ae)
        optimizer = self._optimizer(model.parameters(), c.lr)
        history: dict[str, list[float]] = {"recon_loss": [], "code_loss": []}
        x = x.to(self.device)
        teacher_codes = None
        if paired is not None:
            self.teacher.eval()
            with torch.no_grad():
                teacher_codes = self.teacher(paired.to(self.device))
        for epoch in tqdm(range(epochs), desc=desc, disable=not progress, leave=False):
            model.train()
            recon_sum = code_sum = 0.0
            batches = self._epoch_batches(x.shape[0], c.pretrain_batch_size, seed, epoch,
                                          min_size=2 if paired is not None else 1)
            for idx in batches:
                recon, code = model(x[idx])
                loss = recon_loss = F.mse_loss(recon, x[idx])
                if teacher_codes is not None:
                    code_loss = contrastive_loss(teacher_codes[idx], code, c.temperature)
                    loss = loss + c.contrastive_weight * code_loss
                    code_sum += code_loss.item()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                recon_sum += recon_loss.item()
            history["recon_loss"].append(recon_sum / max(len(batches), 1))
            if teacher_codes is not None:
                history["code_loss"].append(code_sum / max(len(batches), 1))
        return history

    def _validation_score(self, model: EncoderRegressor, x_val: torch.Tensor, y_val: torch.Tensor) -> float:
        model.eval()
        with torch.no_grad():
            pred = model(x_val.to(self.device)).cpu()
        metric = self.config.validation_metric
        if metric == "loss":
            return -float(masked_simse(pred, y_val, self.config.simse_penalty, self.config.simse_over))
        value = summarize(y_val.numpy(), pred.numpy())[metric]
        return value if np.isfinite(value) else -np.inf

    def _finetune(self, encoder: nn.Module, pretrained: bool, x: torch.Tensor, y: torch.Tensor,
                  x_val: torch.Tensor, y_val: torch.Tensor, stage: int, progress: bool, desc: str
                  ) -> tuple[EncoderRegressor, dict[str, Any]]:
        """The reference's ``fine_tune_encoder``: train the head; when the validation metric has not improved
        for ``patience × resets`` epochs, reload the best weights, unfreeze the next encoder Linear from the
        top and multiply the learning rate by ``decay_coefficient``; stop when no frozen layer is left."""
        c = self.config
        seed = self._seed(stage)
        model = EncoderRegressor(encoder, self._regressor(y.shape[1]))
        linears = [m for m in encoder.modules() if isinstance(m, nn.Linear)]
        if pretrained:
            encoder.requires_grad_(False)
            to_unfreeze = linears
        else:
            encoder.requires_grad_(True)
            to_unfreeze = []
        lr = c.lr
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer, wrapped = self._optimizer(trainable, lr), self._wrap(model)
        x, y = x.to(self.device), y.to(self.device)
        history: dict[str, Any] = {"train_loss": [], "val_score": [], "unfrozen_at": []}
        best_state, best_index, resets = copy.deepcopy(model.state_dict()), 0, 1
        for epoch in tqdm(range(c.finetune_epochs), desc=desc, disable=not progress, leave=False):
            wrapped.train()
            total, batches = 0.0, self._epoch_batches(x.shape[0], c.finetune_batch_size, seed, epoch)
            for idx in batches:
                loss = masked_simse(wrapped(x[idx]), y[idx], c.simse_penalty, c.simse_over)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item()
            history["train_loss"].append(total / max(len(batches), 1))
            score = self._validation_score(model, x_val, y_val)
            history["val_score"].append(score)
            if epoch == 0 or score >= history["val_score"][best_index]:
                best_state, best_index = copy.deepcopy(model.state_dict()), epoch
            if epoch + 1 - best_index > c.patience * resets and best_index > 0:
                if not to_unfreeze:
                    break
                model.load_state_dict(best_state)
                to_unfreeze.pop().requires_grad_(True)
                lr *= c.decay_coefficient
                trainable = [p for p in model.parameters() if p.requires_grad]
                optimizer, wrapped = self._optimizer(trainable, lr), self._wrap(model)
                resets += 1
                history["unfrozen_at"].append(epoch)
        model.load_state_dict(best_state)
        history["best_epoch"] = best_index
        model.eval()
        return model, history

    # ---------------------------------------------------------------- the public stages
    def pretrain_expression(self, expression: ArrayLike, responses: ArrayLike | None = None, *,
                            unlabeled: ArrayLike | None = None, validation: tuple[ArrayLike, ArrayLike] | None = None,
                            progress: bool = False) -> dict[str, Any]:
        """Stage 1: build the frozen expression teacher.

        The autoencoder is pre-trained on ``expression`` (plus ``unlabeled`` profiles, which need no labels);
        with ``responses`` it is then fine-tuned with the regressor (gradual unfreezing, early stopping on
        ``validation`` or on a held-out ``validation_fraction`` of the labelled rows) and the fine-tuned
        encoder becomes the teacher. Without responses the pre-trained encoder is the teacher.
        """
        x = _as_tensor(expression, "expression")
        pool = x
        if unlabeled is not None:
            extra = _as_tensor(unlabeled, "unlabeled expression")
            if extra.shape[1] != x.shape[1]:
                raise GraftkitError(f"unlabeled expression has {extra.shape[1]} genes, expression has {x.shape[1]}")
            pool = torch.cat([x, extra])
        self._seed(1)
        self.expression_ae = self._autoencoder(x.shape[1])
        history = {"pretrain": self._train_autoencoder(self.expression_ae, pool, self.config.expression_pretrain_epochs,
                                                       stage=1, progress=progress, desc="expression AE")}
        encoder = self.expression_ae.encoder
        if responses is not None:
            y = _as_tensor(responses, "responses", allow_nan=True)
            if y.shape[0] != x.shape[0]:
                raise GraftkitError(f"expression has {x.shape[0]} samples but responses has {y.shape[0]}")
            x_tr, y_tr, x_val, y_val = self._split_validation(x, y, validation, "pretrain_expression")
            self._expression_scaler = _LabelScaler(y_tr)
            self.expression_model, history["finetune"] = self._finetune(
                copy.deepcopy(encoder), True, x_tr, self._expression_scaler.transform(y_tr), x_val,
                self._expression_scaler.transform(y_val), stage=2, progress=progress, desc="expression fine-tune")
            encoder = self.expression_model.encoder
        self.teacher = copy.deepcopy(encoder).eval().requires_grad_(False)
        return history

    def transmit(self, mutation: ArrayLike, expression: ArrayLike | None = None, *, progress: bool = False
                 ) -> dict[str, list[float]]:
        """Stage 2: train the mutation autoencoder on samples with both levels (rows paired).

        Loss = reconstruction MSE + ``contrastive_weight`` × contrastive loss to the frozen teacher's code of
        the same sample's ``expression``. With ``expression=None`` only reconstruction (the no-teacher baseline).
        """
        m = _as_tensor(mutation, "mutation")
        paired = None
        if expression is not None:
            if self.teacher is None:
                raise GraftkitError("transmit needs the expression teacher: call pretrain_expression first")
            paired = _as_tensor(expression, "expression")
            if paired.shape[0] != m.shape[0]:
                raise GraftkitError(f"transmit: mutation has {m.shape[0]} samples but expression has "
                                    f"{paired.shape[0]}; rows must be the same samples in the same order")
            if paired.shape[1] != self.expression_ae.input_dim:
                raise GraftkitError(f"transmit: expression has {paired.shape[1]} genes, the teacher was trained "
                                    f"on {self.expression_ae.input_dim}")
            if m.shape[0] < 2:
                raise GraftkitError("transmit: the contrastive loss needs at least 2 paired samples")
        self._seed(3)
        self.mutation_ae = self._autoencoder(m.shape[1])
        return self._train_autoencoder(self.mutation_ae, m, self.config.transmission_epochs, stage=3,
                                       paired=paired, progress=progress, desc="transmission")

    def finetune(self, mutation: ArrayLike, responses: ArrayLike, *,
                 validation: tuple[ArrayLike, ArrayLike] | None = None, progress: bool = False) -> dict[str, Any]:
        """Stage 3: mutation encoder + multi-output regressor on drug responses (NaN = missing label).

        After :meth:`transmit` the encoder starts frozen and is unfrozen layer by layer; otherwise the whole
        network is trained from scratch. Early stopping uses ``validation`` or a held-out
        ``validation_fraction`` of the rows; the test samples must never be passed here.
        """
        m = _as_tensor(mutation, "mutation")
        y = _as_tensor(responses, "responses", allow_nan=True)
        if y.shape[0] != m.shape[0]:
            raise GraftkitError(f"mutation has {m.shape[0]} samples but responses has {y.shape[0]}")
        if self.mutation_ae is not None and self.mutation_ae.input_dim != m.shape[1]:
            raise GraftkitError(f"finetune: mutation has {m.shape[1]} genes, transmit used "
                                f"{self.mutation_ae.input_dim}")
        m_tr, y_tr, m_val, y_val = self._split_validation(m, y, validation, "finetune")
        self._mutation_scaler = _LabelScaler(y_tr)
        pretrained = self.mutation_ae is not None
        encoder = copy.deepcopy(self.mutation_ae.encoder) if pretrained else self._fresh_encoder(m.shape[1])
        self.mutation_model, history = self._finetune(
            encoder, pretrained, m_tr, self._mutation_scaler.transform(y_tr), m_val,
            self._mutation_scaler.transform(y_val), stage=4, progress=progress, desc="mutation fine-tune")
        return history

    def _fresh_encoder(self, input_dim: int) -> nn.Module:
        self._seed(5)
        return self._autoencoder(input_dim).encoder

    def predict(self, mutations: ArrayLike) -> torch.Tensor:
        """Drug responses ``[samples, drugs]`` (original units) of new genotypes from their mutations alone."""
        if self.mutation_model is None:
            raise GraftkitError("predict needs a fine-tuned model: call finetune first")
        return self._predict(self.mutation_model, self._mutation_scaler, mutations, "mutations")

    def predict_expression(self, expression: ArrayLike) -> torch.Tensor:
        """Responses predicted by the fine-tuned expression network (the expression-based upper bound)."""
        if self.expression_model is None:
            raise GraftkitError("predict_expression needs pretrain_expression with responses first")
        return self._predict(self.expression_model, self._expression_scaler, expression, "expression")

    def _predict(self, model: EncoderRegressor, scaler: _LabelScaler, x: ArrayLike, name: str) -> torch.Tensor:
        x = _as_tensor(x, name)
        expected = model.encoder[0][0].in_features
        if x.shape[1] != expected:
            raise GraftkitError(f"{name} has {x.shape[1]} genes, the model was trained on {expected}")
        model.eval()
        with torch.no_grad():
            return scaler.inverse(model(x.to(self.device))).cpu()

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted networks atomically (``graftkit.checkpoint``)."""
        state: dict[str, Any] = {"config": self.config.to_dict(), "seed": self.seed}
        for name in ("expression_model", "mutation_model"):
            model = getattr(self, name)
            if model is not None:
                state[name] = {"state": model.state_dict(), "input_dim": model.encoder[0][0].in_features,
                               "n_drugs": model.regressor.n_drugs}
        for name in ("_expression_scaler", "_mutation_scaler"):
            if getattr(self, name) is not None:
                state[name] = getattr(self, name).state()
        save_checkpoint(state, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> CLEIT:
        state = load_checkpoint(path)
        # checkpoints written before these fields existed were trained with ReLU and the per-line loss
        config = {"regressor_activation": "relu", "simse_over": "cell_line", **state["config"]}
        cleit = cls(CLEITConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}),
                    seed=state["seed"], device=device)
        for name in ("expression_model", "mutation_model"):
            if name in state:
                saved = state[name]
                model = EncoderRegressor(cleit._autoencoder(saved["input_dim"]).encoder,
                                         cleit._regressor(saved["n_drugs"]))
                model.load_state_dict(saved["state"])
                setattr(cleit, name, model.eval())
        for name in ("_expression_scaler", "_mutation_scaler"):
            if name in state:
                setattr(cleit, name, _LabelScaler.from_state(state[name]))
        if cleit.expression_model is not None:
            cleit.teacher = copy.deepcopy(cleit.expression_model.encoder).eval().requires_grad_(False)
        return cleit
