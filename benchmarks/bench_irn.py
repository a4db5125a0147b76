"""Benchmark IRN: megapixels/s of downscale + upscale vs a plain conv net of the same FLOPs, in one run.

The plain net is what a user would otherwise run for learned rescaling: pixel-unshuffle, a stack of 3×3
convs (64 channels) at the LR resolution with as many multiply-adds as IRN's downscale + upscale, then
pixel-shuffle. Both are timed interleaved and repeated, so load on a shared machine hits both alike; the
ratio is the median over repeats. Also prints parameter counts against the reference (1.66M ×2, 4.35M ×4).

    .venv/bin/python benchmarks/bench_irn.py [--size 512] [--repeats 3] [--reference-size 512] [--threads N]
        [--keep-freed-memory] [--device cuda --dtype bfloat16]   # on a GPU machine
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from graftkit.runtime import keep_freed_memory
from vision_ext.irn import IRN

REFERENCE_PARAMS = {2: 1.66e6, 4: 4.35e6}


def count_macs(owner: nn.Module, fn: Callable[[], object]) -> int:
    """Multiply-adds of every Conv2d of ``owner`` that runs inside ``fn()`` (the bulk of both models' work)."""
    total = 0

    def hook(module: nn.Conv2d, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        total += output.numel() * (module.in_channels // module.groups) * k

    handles = [m.register_forward_hook(hook) for m in owner.modules() if isinstance(m, nn.Conv2d)]
    try:
        fn()
    finally:
        for h in handles:
            h.remove()
    return total


class PlainRescaler(nn.Module):
    """Pixel-unshuffle → conv stack (width 64) → pixel-shuffle: a plain CNN of chosen depth."""

    def __init__(self, scale: int, depth: int, width: int = 64) -> None:
        super().__init__()
        channels = 3 * scale * scale
        layers: list[nn.Module] = [nn.PixelUnshuffle(scale), nn.Conv2d(channels, width, 3, padding=1)]
        for _ in range(depth):
            layers += [nn.LeakyReLU(0.2), nn.Conv2d(width, width, 3, padding=1)]
        layers += [nn.LeakyReLU(0.2), nn.Conv2d(width, channels, 3, padding=1), nn.PixelShuffle(scale)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def matched_plain(model: IRN, image: torch.Tensor) -> tuple[PlainRescaler, int, int]:
    """A PlainRescaler whose MACs on ``image`` are closest to IRN's downscale + upscale."""

    irn_macs = count_macs(model, lambda: model.upscale(*model.downscale(image)))

    def plain_macs(depth: int) -> int:
        net = PlainRescaler(model.scale, depth)
        return count_macs(net, lambda: net(image))

    base, per_layer = plain_macs(0), plain_macs(1) - plain_macs(0)
    depth = max(0, round((irn_macs - base) / per_layer))
    plain = PlainRescaler(model.scale, depth)
    return plain, irn_macs, plain_macs(depth)


def bench(model: IRN, size: int, repeats: int, label: str, channels_last: bool, device: torch.device,
          dtype: torch.dtype) -> dict[str, float]:
    model = model.to(device="cpu", dtype=torch.float32).eval()  # MACs are counted on CPU, in float32
    image = torch.rand(1, 3, size, size)
    with torch.inference_mode():
        plain, irn_macs, plain_macs = matched_plain(model, image)
        plain.eval()
        # the same memory format, device and dtype for both nets (IRN's default format is channels-last)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model, plain, image = (x.to(device=device, dtype=dtype, memory_format=fmt) for x in (model, plain, image))

        def run_irn() -> None:
            model.upscale(*model.downscale(image))

        def run_plain() -> None:
            plain(image)

        def timed(fn: Callable[[], None]) -> float:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            if device.type == "cuda":  # kernels run asynchronously: wait for them before reading the clock
                torch.cuda.synchronize(device)
            return time.perf_counter() - start

        timed(run_irn), timed(run_plain)  # warm-up (allocator, oneDNN primitives / cuDNN autotuning)
        irn_times, plain_times = [], []
        for _ in range(repeats):
            irn_times.append(timed(run_irn))
            plain_times.append(timed(run_plain))
    megapixels = size * size / 1e6
    ratios = [a / b for a, b in zip(irn_times, plain_times, strict=True)]
    params = sum(p.numel() for p in model.parameters())
    row = {
        "model": label, "format": "channels_last" if channels_last else "NCHW", "size": size, "params": params,
        "irn_mp_s": megapixels / statistics.median(irn_times),
        "plain_mp_s": megapixels / statistics.median(plain_times),
        "irn_gmac": irn_macs / 1e9, "plain_gmac": plain_macs / 1e9, "plain_depth": len(plain.body) // 2 - 1,
        "time_ratio": statistics.median(ratios),
    }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="image side for the small model (default: 512)")
    parser.add_argument("--reference-size", type=int, default=512,
                        help="image side for the reference-size x4 model (default: 512, ~300 GMAC per round trip)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing repeats (default: 3)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help=f"torch intra-op threads (default: {torch.get_num_threads()}, torch's)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="weights and images in this dtype (default float32)")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="glibc keeps freed memory for reuse, as `graftkit irn` sets it (default: glibc's own)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.keep_freed_memory and not keep_freed_memory():
        parser.error("--keep-freed-memory needs glibc")
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)

    print("parameters vs the reference (pkuxmq/Invertible-Image-Rescaling, DenseBlock gc 32, 8 blocks/step):")
    for scale, ref in REFERENCE_PARAMS.items():
        n = sum(p.numel() for p in IRN(scale).parameters())
        print(f"  x{scale}: ours {n:,} ({n / 1e6:.2f}M)  paper {ref / 1e6:.2f}M")

    small = IRN(2, blocks_per_step=8, growth_channels=8)  # a small x2 model (irn-vs-bicubic trains 4 such blocks)
    reference = IRN(4)
    rows = [bench(model, size, args.repeats, label, channels_last, device, dtype)
            for model, size, label in ((small, args.size, "x2 small (8 blocks, gc 8)"),
                                       (reference, args.reference_size, "x4 reference (2x8 blocks, gc 32)"))
            for channels_last in (False, True)]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    allocator = "freed memory kept" if args.keep_freed_memory else "glibc's default allocator settings"
    print(f"\n{where}, torch {torch.__version__}, {args.dtype}, {allocator}; downscale + upscale of one image; "
          f"median of {args.repeats} interleaved repeats")
    header = (f"{'model':<34} {'format':<13} {'size':>5} {'params':>10} {'IRN MP/s':>9} {'plain MP/s':>10} "
              f"{'IRN GMAC':>9} {'plain GMAC':>10} {'IRN/plain time':>15}")
    print(header)
    for r in rows:
        print(f"{r['model']:<34} {r['format']:<13} {r['size']:>5} {r['params']:>10,} {r['irn_mp_s']:>9.3f} "
              f"{r['plain_mp_s']:>10.3f} {r['irn_gmac']:>9.2f} {r['plain_gmac']:>10.2f} {r['time_ratio']:>14.2f}x")
    print("\nplain = pixel-unshuffle + 3x3 conv stack (64 ch) + pixel-shuffle with the same conv MACs; "
          "goal: IRN within 1.2x of it")


if __name__ == "__main__":
    main()
