"""GraphNorm (Cai et al., ICML 2021) as a PyTorch Geometric normalization layer, with a fused kernel.

For a batch of graphs, the per-graph mean μ and second moment are two segment sums over the batch index (the
second over the nodes shifted by their own graph's αμ, so small graphs keep their precision); for a single
graph, dense column reductions with no index at all. The backward is written in closed form and needs one
more reduction of ``[g, g·(x − αμ)]``: no autograd graph through scatter/gather chains, no per-feature index
tensor, few temporaries.
"""

from __future__ import annotations

import torch
from torch import Tensor

from graftkit.errors import GraftkitError, check_int, check_number

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _column_sums(values: Tensor) -> Tensor:
    """``[1, C]`` sums over rows as a matrix-vector product (BLAS beats a strided reduction on CPU)."""
    return values.new_ones(1, values.size(0)) @ values


def _segment_sums(values: Tensor, batch: Tensor, batch_size: int) -> Tensor:
    """``[batch_size, C]`` per-graph sums of ``values`` (``[N, C]``) in one ``index_add_``."""
    return values.new_zeros(batch_size, values.size(1)).index_add_(0, batch, values)


def check_batch_size(batch_size: object, num_nodes: int, where: str) -> int:
    """``batch_size`` if it is an int in ``1..max(num_nodes, 1)``; else a GraftkitError (a ValueError) naming it.

    Per-graph statistics are allocated for every graph, empty ones included, so a wrong ``batch_size`` of
    10**12 used to end in an allocator error. More graphs than nodes means all but ``num_nodes`` of them are
    empty, which no loader produces: it is refused here, before anything is allocated.
    """
    batch_size = check_int(f"{where}: batch_size", batch_size)
    if batch_size > max(num_nodes, 1):
        raise GraftkitError(f"{where}: batch_size={batch_size} is more graphs than the batch has nodes "
                            f"({num_nodes}); it must be the number of graphs in the batch")
    return batch_size


class _GraphNormFunction(torch.autograd.Function):
    """Forward and closed-form backward of GraphNorm; statistics are kept in float32 for half inputs.

    The statistics take two passes, as PyG's: each graph's mean μ, then the mean square of x − αμ with
    each node shifted by its OWN graph's αμ. A one-pass E[x²] − E[x]² (even around a batch-wide pivot)
    cancels when a graph's spread is small against its distance from the pivot, which 1-3-node graphs hit
    all the time (2-node graphs were off by ~3e-3 in float32). The output and the gradient are formed
    from the shifted values too, so a large |mean| costs no more precision than in PyG. With ``batch=None``
    (one graph) the reductions are dense column sums and broadcasting; otherwise segment sums over the
    batch index.
    """

    @staticmethod
    def forward(ctx, x: Tensor, batch: Tensor | None, batch_size: int, weight: Tensor, bias: Tensor,
                mean_scale: Tensor, eps: float) -> Tensor:
        # autocast would run the column-sum matmul in half precision: statistics stay in float32 or wider
        with torch.autocast(device_type=x.device.type, enabled=False):
            return _GraphNormFunction._forward(ctx, x, batch, batch_size, weight, bias, mean_scale, eps)

    @staticmethod
    def _forward(ctx, x: Tensor, batch: Tensor | None, batch_size: int, weight: Tensor, bias: Tensor,
                 mean_scale: Tensor, eps: float) -> Tensor:
        compute = torch.float32 if x.dtype in _LOW_PRECISION else x.dtype
        xc = x.to(compute)
        gamma, beta, alpha = weight.to(compute), bias.to(compute), mean_scale.to(compute)
        if batch is None:
            num_nodes = max(x.size(0), 1)
            count = xc.new_full((1, 1), num_nodes)
            mean = _column_sums(xc) / num_nodes
            shifted = xc - alpha * mean
            var = torch.linalg.vecdot(shifted, shifted, dim=0).unsqueeze(0) / num_nodes
        else:
            count = _segment_sums(xc.new_ones(x.size(0), 1), batch, batch_size).clamp_(min=1)
            mean = _segment_sums(xc, batch, batch_size) / count
            shifted = torch.index_select(alpha * mean, 0, batch)
            torch.sub(xc, shifted, out=shifted)
            work = shifted * shifted  # [N, C] buffer: the squares, then each node's scale
            var = _segment_sums(work, batch, batch_size) / count
        # var is the second moment around alpha * mean, as the paper's sigma^2
        std = (var + eps).sqrt()
        scale = gamma / std  # one rounding fewer than gamma * rsqrt(...)
        if batch is None:
            out = torch.addcmul(beta, shifted, scale)
        else:
            out = torch.index_select(scale, 0, batch, out=work).mul_(shifted).add_(beta)
        ctx.save_for_backward(shifted, batch, count, mean, std.reciprocal(), gamma, alpha)
        ctx.batch_size = batch_size
        ctx.dtypes = (x.dtype, weight.dtype, bias.dtype, mean_scale.dtype)
        return out.to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        with torch.autocast(device_type=grad_out.device.type, enabled=False):
            return _GraphNormFunction._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out: Tensor):
        shifted, batch, count, mean, rstd, gamma, alpha = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype, a_dtype = ctx.dtypes
        g = grad_out.to(shifted.dtype)
        if batch is None:
            g_sum, gs_sum = _column_sums(g), torch.linalg.vecdot(g, shifted, dim=0).unsqueeze(0)
        else:
            channels = shifted.size(1)
            work = torch.empty(shifted.size(0), 2 * channels, dtype=shifted.dtype, device=shifted.device)
            work[:, :channels] = g
            torch.mul(g, shifted, out=work[:, channels:])
            sums = _segment_sums(work, batch, ctx.batch_size)  # [g, g * (x - alpha*mu)] in one reduction
            g_sum, gs_sum = sums[:, :channels], sums[:, channels:]
        # Q = mean over the graph of g * x_hat, with x_hat = (x - alpha*mu) * rstd; the gradient with respect to
        # the shifted values is d = u*g - v*(x - alpha*mu)
        q = rstd * gs_sum / count
        u = rstd * gamma
        v = u * rstd * q
        # x's gradient is d - alpha * mean(d). mean(d) is summed from the d actually formed, not taken as
        # u*mean(g) - v*(1 - alpha)*mu: the rounded shifted values do not average to (1 - alpha)*mu, and on
        # 1-3-node graphs d - alpha*mean(d) cancels almost entirely, so that residual times v (~ rstd^2)
        # dominated the result (2-node graphs were ~40x less precise than PyG's autograd).
        if batch is None:
            grad_x = torch.mul(g, u)
            grad_x.addcmul_(shifted, v, value=-1)
            d_sum = _column_sums(grad_x)
            grad_x.sub_(alpha * d_sum / count)
        else:
            torch.index_select(torch.cat([u, v], dim=1), 0, batch, out=work)  # reuse the work buffer
            grad_x = torch.mul(g, work[:, :channels])
            grad_x.addcmul_(shifted, work[:, channels:], value=-1)
            d_sum = _segment_sums(grad_x, batch, ctx.batch_size)
            grad_x.sub_(torch.index_select(alpha * d_sum / count, 0, batch, out=work[:, :channels]))
        grad_weight = (count * q).sum(0)
        grad_bias = g_sum.sum(0)
        grad_mean_scale = -(mean * d_sum).sum(0)
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

    The statistics are two segment reductions (the mean, then the second moment around each graph's own
    αμ: float32 error at PyG's level on graphs of any size, 1 node included); the backward is closed form.
    Under autocast, or for float16/bfloat16 inputs, the statistics are computed in float32 and the output
    has the input's dtype. The layer works with ``torch.compile``; it is not TorchScript-able (it is a
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
        check_number("GraphNorm: eps", eps, strict=True)  # inf would map every node to beta, NaN to NaN
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
            batch_size: number of graphs (``max(batch) + 1`` when not given), at most the number of nodes;
                graphs without nodes are allowed and simply produce no output rows.
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
        if batch.device != x.device:
            raise GraftkitError(f"GraphNorm: batch is on {batch.device} but x is on {x.device}")
        if batch.dtype not in (torch.int64, torch.int32):
            raise GraftkitError(f"GraphNorm: batch must be an integer (int64/int32) tensor, got {batch.dtype}")
        if batch_size is not None:
            batch_size = check_batch_size(batch_size, batch.numel(), "GraphNorm")
        if batch.numel() == 0:
            return batch.long(), batch_size or 1
        low, high = (int(v) for v in torch.aminmax(batch))
        if low < 0:
            raise GraftkitError(f"GraphNorm: batch has a negative graph index ({low})")
        if batch_size is None:
            if high >= batch.numel():
                raise GraftkitError(f"GraphNorm: batch has graph index {high} for {batch.numel()} nodes: more "
                                    f"graphs than nodes; graph indices must be 0..number of graphs - 1")
            batch_size = high + 1
        elif high >= batch_size:
            raise GraftkitError(f"GraphNorm: batch has graph index {high} but batch_size={batch_size}")
        return batch.long(), batch_size

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels})"
