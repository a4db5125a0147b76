"""GraphNorm (Cai et al., ICML 2021) as a PyTorch Geometric normalization layer, with a fused kernel.

The per-graph statistics come from ONE segment reduction of the concatenation ``[x, x²]`` (one
``index_add_`` over the batch index), and the backward is written in closed form so it needs one more
reduction of ``[g, g·x]``: no autograd graph through scatter/gather chains, no per-feature index tensor.
"""

from __future__ import annotations

import torch
from torch import Tensor

from graftkit.errors import GraftkitError

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _segment_sums(values: Tensor, batch: Tensor | None, batch_size: int) -> Tensor:
    """Sum the rows of ``values`` per graph: shape ``[batch_size, values.size(1)]``."""
    if batch is None:
        return values.sum(0, keepdim=True)
    return values.new_zeros(batch_size, values.size(1)).index_add_(0, batch, values)


def _expand(per_graph: Tensor, batch: Tensor | None) -> Tensor:
    """Per-graph rows to per-node rows (broadcast for a single graph, a gather otherwise)."""
    return per_graph if batch is None else per_graph.index_select(0, batch)


class _GraphNormFunction(torch.autograd.Function):
    """Forward and closed-form backward of GraphNorm; statistics are kept in float32 for half inputs."""

    @staticmethod
    def forward(ctx, x: Tensor, batch: Tensor | None, batch_size: int, weight: Tensor, bias: Tensor,
                mean_scale: Tensor, eps: float) -> Tensor:
        compute = torch.float32 if x.dtype in _LOW_PRECISION else x.dtype
        xc = x.to(compute)
        gamma, beta, alpha = weight.to(compute), bias.to(compute), mean_scale.to(compute)
        if batch is None:
            count = xc.new_full((1, 1), x.size(0))
            var, mean = torch.var_mean(xc, dim=0, correction=0, keepdim=True)
        else:
            count = xc.new_zeros(batch_size).index_add_(0, batch, xc.new_ones(x.size(0))).clamp_(min=1)
            count = count.unsqueeze(1)
            moments = _segment_sums(torch.cat([xc, xc * xc], dim=1), batch, batch_size) / count
            mean, second = moments.split(x.size(1), dim=1)
            var = (second - mean * mean).clamp_(min=0)
        # second moment around alpha*mean = Var + ((1 - alpha) * mean)^2
        shifted_mean = alpha * mean
        sigma2 = var + (mean - shifted_mean).square()
        rstd = (sigma2 + eps).rsqrt()
        scale = gamma * rstd
        shift = beta - scale * shifted_mean
        out = torch.addcmul(_expand(shift, batch), xc, _expand(scale, batch))
        ctx.save_for_backward(xc, batch, count, mean, rstd, gamma, alpha)
        ctx.batch_size = batch_size
        ctx.dtypes = (x.dtype, weight.dtype, bias.dtype, mean_scale.dtype)
        return out.to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        xc, batch, count, mean, rstd, gamma, alpha = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype, a_dtype = ctx.dtypes
        g = grad_out.to(xc.dtype)
        sums = _segment_sums(torch.cat([g, g * xc], dim=1), batch, ctx.batch_size)
        g_sum, gx_sum = sums.split(xc.size(1), dim=1)
        shifted_mean = alpha * mean
        # Q = mean over the graph of g * x_hat, with x_hat = (x - alpha*mu) * rstd
        q = rstd * (gx_sum - shifted_mean * g_sum) / count
        u = rstd * gamma
        # B = mean over the graph of dL/d(x - alpha*mu); x's gradient is dL/d(x - alpha*mu) - alpha*B
        b = u * (g_sum / count - q * rstd * (mean - shifted_mean))
        v = u * rstd * q
        w = v * shifted_mean - alpha * b
        grad_x = torch.addcmul(_expand(w, batch), _expand(u, batch), g) - _expand(v, batch) * xc
        grad_weight = (count * q).sum(0)
        grad_bias = g_sum.sum(0)
        grad_mean_scale = -(count * mean * b).sum(0)
        return (grad_x.to(x_dtype), None, None, grad_weight.to(w_dtype), grad_bias.to(b_dtype),
                grad_mean_scale.to(a_dtype), None)


class GraphNorm(torch.nn.Module):
    r"""Graph normalization (Cai et al., "GraphNorm: A Principled Approach to Accelerating Graph Neural
    Network Training", ICML 2021), applied to each graph of a mini-batch separately.

    .. math::
        \hat{h}_{i,j} = \gamma_j \, \frac{h_{i,j} - \alpha_j \mu_{G,j}}{\sqrt{\sigma^2_{G,j} + \epsilon}}
        + \beta_j, \qquad
        \mu_{G,j} = \frac{1}{n_G}\sum_{i \in G} h_{i,j}, \qquad
        \sigma^2_{G,j} = \frac{1}{n_G}\sum_{i \in G} (h_{i,j} - \alpha_j \mu_{G,j})^2

    :math:`\alpha` (learnable shift, init 1), :math:`\gamma` (init 1) and :math:`\beta` (init 0) are
    per-feature parameters; :math:`\sigma^2` is the second moment around :math:`\alpha\mu` and
    :math:`\epsilon` sits inside the square root, as in the paper and in PyG's ``GraphNorm``, whose
    parameter names (``weight`` = γ, ``bias`` = β, ``mean_scale`` = α) this layer shares, so state dicts are
    interchangeable.

    The statistics are one segment reduction (mean and second moment together); the backward is closed
    form. Under autocast, or for float16/bfloat16 inputs, the statistics are computed in float32 and the
    output has the input's dtype. The layer works with ``torch.compile``; it is not TorchScript-able (it is a
    custom ``autograd.Function``). Its gradient is first order only (no double backward).

    Args:
        in_channels: number of features per node.
        eps: added to :math:`\sigma^2` inside the square root.
        affine: learn :math:`\alpha, \gamma, \beta`; with ``False`` they are fixed buffers (1, 1, 0).
    """

    def __init__(self, in_channels: int, eps: float = 1e-5, affine: bool = True,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
            raise GraftkitError(f"GraphNorm: in_channels must be a positive int, got {in_channels!r}")
        if not eps > 0:
            raise GraftkitError(f"GraphNorm: eps must be > 0, got {eps!r}")
        self.in_channels = in_channels
        self.eps = float(eps)
        self.affine = affine
        for name in ("weight", "bias", "mean_scale"):
            tensor = torch.empty(in_channels, device=device)
            if affine:
                self.register_parameter(name, torch.nn.Parameter(tensor))
            else:
                self.register_buffer(name, tensor)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """γ = 1, β = 0, α = 1."""
        with torch.no_grad():
            self.weight.fill_(1.0)
            self.bias.fill_(0.0)
            self.mean_scale.fill_(1.0)

    def forward(self, x: Tensor, batch: Tensor | None = None, batch_size: int | None = None) -> Tensor:
        """Normalize node features ``x`` ``[num_nodes, in_channels]`` per graph.

        Args:
            x: node features.
            batch: graph index of each node, ``[num_nodes]`` with values in ``0..batch_size-1``, in any
                order; ``None`` means all nodes form one graph.
            batch_size: number of graphs (``max(batch) + 1`` when not given); graphs without nodes are
                allowed and simply produce no output rows.
        """
        batch, batch_size = self._check(x, batch, batch_size)
        if batch_size == 1:
            batch = None  # one graph: plain reductions and broadcasting instead of scatter/gather
        return _GraphNormFunction.apply(x, batch, batch_size, self.weight, self.bias, self.mean_scale,
                                        self.eps)

    def _check(self, x: Tensor, batch: Tensor | None, batch_size: int | None) -> tuple[Tensor | None, int]:
        if not isinstance(x, Tensor) or x.dim() != 2:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise GraftkitError(f"GraphNorm: x must be a 2-D tensor [num_nodes, channels], got {shape}")
        if x.size(1) != self.in_channels:
            raise GraftkitError(f"GraphNorm: x has {x.size(1)} channels but the layer was built for "
                                f"in_channels={self.in_channels}")
        if not x.is_floating_point():
            raise GraftkitError(f"GraphNorm: x must be floating point, got {x.dtype}")
        if batch is None:
            if batch_size not in (None, 1):
                raise GraftkitError(f"GraphNorm: batch_size={batch_size} given without a batch vector")
            return None, 1
        if batch.dim() != 1 or batch.numel() != x.size(0):
            raise GraftkitError(f"GraphNorm: batch must be 1-D with one entry per node ({x.size(0)}), "
                                f"got shape {tuple(batch.shape)}")
        if batch.dtype not in (torch.int64, torch.int32):
            raise GraftkitError(f"GraphNorm: batch must be an integer (int64/int32) tensor, got {batch.dtype}")
        if batch.numel() == 0:
            return batch.long(), batch_size or 1
        low, high = (int(v) for v in torch.aminmax(batch))
        if low < 0:
            raise GraftkitError(f"GraphNorm: batch has a negative graph index ({low})")
        if batch_size is None:
            batch_size = high + 1
        elif high >= batch_size:
            raise GraftkitError(f"GraphNorm: batch has graph index {high} but batch_size={batch_size}")
        return batch.long(), batch_size

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels})"
