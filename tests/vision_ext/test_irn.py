"""IRN math: Haar transform, coupling blocks, invertibility, quantization, losses, bicubic, metrics."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.nn import functional as F

from graftkit.errors import GraftkitError
from vision_ext.irn import IRN, InvBlock, IRNConfig, quantize
from vision_ext.irn.metrics import psnr, rgb_to_y, ssim
from vision_ext.irn.modeling_irn import HaarTransform
from vision_ext.irn.resize import imresize, resize_weights
from vision_ext.irn.training import IRNObjective


def _randomize(model: torch.nn.Module, std: float = 0.05, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)


def _reference_haar_weights(channels: int) -> torch.Tensor:
    # The reference's filters: +1 everywhere, with the -1 entries of HaarDownsampling.
    w = torch.ones(4, 1, 2, 2)
    w[1, 0, 0, 1] = w[1, 0, 1, 1] = -1
    w[2, 0, 1, 0] = w[2, 0, 1, 1] = -1
    w[3, 0, 1, 0] = w[3, 0, 0, 1] = -1
    return torch.cat([w] * channels)


def test_haar_hand_computed_block():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    y = HaarTransform()(x).flatten().tolist()
    assert y == pytest.approx([2.5, -0.5, -1.0, 0.0])


def test_haar_matches_reference_conv_layout_and_inverts():
    x = torch.rand(2, 3, 6, 8)
    ref = F.conv2d(x, _reference_haar_weights(3), stride=2, groups=3) / 4
    ref = ref.reshape(2, 3, 4, 3, 4).transpose(1, 2).reshape(2, 12, 3, 4)  # band-major, as the reference
    haar = HaarTransform()
    y = haar(x)
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(y[:, :3], F.avg_pool2d(x, 2))  # the low band is the 2×2 mean
    torch.testing.assert_close(haar.inverse(y), x)


def test_inv_block_formula_and_soft_clamp():
    torch.manual_seed(0)
    block = InvBlock(channels=12, split=3, growth_channels=4, clamp=1.0)
    _randomize(block)
    x = torch.randn(2, 12, 5, 5)
    y = block(x)
    y1 = x[:, :3] + block.phi(x[:, 3:])
    s = 2 * torch.sigmoid(block.rho(y1)) - 1
    torch.testing.assert_close(y[:, :3], y1)
    torch.testing.assert_close(y[:, 3:], x[:, 3:] * torch.exp(s) + block.eta(y1))
    torch.testing.assert_close(block.inverse(y), x, atol=1e-5, rtol=0)
    with torch.no_grad():  # a huge ρ output: the scale saturates at e^clamp instead of overflowing
        block.rho.out.bias.fill_(1e4)
        block.eta.out.bias.zero_()
        block.eta.out.weight.zero_()
        block.phi.out.weight.zero_()
        block.phi.out.bias.zero_()
    torch.testing.assert_close(block(x)[:, 3:], x[:, 3:] * math.e)


@pytest.mark.parametrize("scale", [2, 4])
def test_flow_is_invertible_in_float32(scale):
    model = IRN(scale, blocks_per_step=2, growth_channels=4)
    _randomize(model)
    x = torch.rand(2, 3, 8, 12)
    y = model(x)
    assert y.shape == (2, 3 * scale**2, 8 // scale, 12 // scale)
    assert (model.inverse(y) - x).abs().max().item() < 1e-4
    z = torch.randn(2, 3 * scale**2, 8 // scale, 12 // scale)
    assert (model(model.inverse(z)) - z).abs().max().item() < 1e-4


def test_channels_last_layout_changes_speed_not_results():
    model = IRN(4, blocks_per_step=2, growth_channels=4)
    _randomize(model)
    assert model.levels[1][0].eta.out.weight.is_contiguous(memory_format=torch.channels_last)  # the default
    nchw = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    x = torch.rand(2, 3, 8, 12)  # an NCHW input: converted once, at the flow's entry
    y, y_nchw = model(x), nchw(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and y_nchw.is_contiguous()
    torch.testing.assert_close(y, y_nchw, atol=1e-5, rtol=1e-5)
    restored = model.inverse(y)
    assert restored.is_contiguous(memory_format=torch.channels_last)  # the Haar inverse keeps the layout
    torch.testing.assert_close(restored, nchw.inverse(y), atol=1e-5, rtol=1e-5)
    nchw.load_state_dict(model.state_dict())  # checkpoints load across layouts


def test_initial_flow_is_haar_and_parameter_counts_match_reference():
    x = torch.rand(1, 3, 8, 8)
    model = IRN(4, blocks_per_step=1, growth_channels=4)
    haar = HaarTransform()
    step1 = haar(x)
    expected = haar(step1)
    torch.testing.assert_close(model(x), expected)  # last DenseBlock convs start at zero: blocks = identity
    counts = {s: sum(p.numel() for p in IRN(s).parameters()) for s in (2, 4)}
    assert round(counts[2] / 1e6, 2) == 1.67 and abs(counts[2] - 1.66e6) < 0.01e6  # paper: 1.66M
    assert round(counts[4] / 1e6, 2) == 4.36 and abs(counts[4] - 4.35e6) < 0.01e6  # paper: 4.35M


def test_config_defaults_and_validation():
    assert IRNConfig(scale=2).guide_weight == 4.0 and IRNConfig(scale=4).guide_weight == 16.0
    cfg = IRNConfig(scale=4)
    assert (cfg.blocks_per_step, cfg.growth_channels, cfg.clamp, cfg.steps) == (8, 32, 1.0, 2)
    for bad in ({"scale": 3}, {"scale": 1}, {"blocks_per_step": 0}, {"clamp": 0}, {"guide_weight": -1.0}):
        with pytest.raises(GraftkitError):
            IRNConfig(**bad)
    with pytest.raises(GraftkitError, match="unknown"):
        IRNConfig.from_dict({"scale": 2, "width": 3})
    with pytest.raises(GraftkitError, match="either"):
        IRN(2, config=IRNConfig(scale=2))


def test_quantize_rounds_to_8_bits_with_straight_through_gradient():
    x = torch.tensor([-0.2, 0.0, 0.3, 0.6 / 255, 1.4], requires_grad=True)
    q = quantize(x)
    assert q.tolist() == pytest.approx([0.0, 0.0, round(0.3 * 255) / 255, 1 / 255, 1.0])
    q.sum().backward()
    assert x.grad.tolist() == [1.0] * 5


def test_losses_hand_computed_at_initialisation():
    # At init the flow is one Haar step: LR = 2×2 mean, z = high bands, inverse = Haar inverse.
    model = IRN(2, blocks_per_step=1, growth_channels=4)
    hr = torch.rand(2, 3, 4, 4)
    lr_ref = torch.rand(2, 3, 2, 2)
    noise = torch.randn(2, 9, 2, 2)
    losses = IRNObjective(model)(hr, lr_ref, noise)
    bands = HaarTransform()(hr)
    assert losses["guide"].item() == pytest.approx(4 * ((bands[:, :3] - lr_ref) ** 2).sum().item() / 2, rel=1e-5)
    assert losses["distribution"].item() == pytest.approx((bands[:, 3:] ** 2).sum().item() / 2, rel=1e-5)
    restored = HaarTransform().inverse(torch.cat((torch.round(bands[:, :3] * 255) / 255, noise), 1))
    charbonnier = torch.sqrt((restored - hr) ** 2 + 1e-6).sum().item() / 2
    assert losses["reconstruction"].item() == pytest.approx(charbonnier, rel=1e-5)
    total = losses["guide"] + losses["distribution"] + losses["reconstruction"]
    torch.testing.assert_close(losses["total"], total)


def test_gradients_reach_every_subnet_through_the_quantizer():
    model = IRN(2, blocks_per_step=2, growth_channels=4)
    losses = IRNObjective(model)(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 4, 4))
    losses["reconstruction"].backward()  # reaches the forward pass only through Q's straight-through gradient
    for name, p in model.named_parameters():
        if name.endswith("out.weight"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_downscale_upscale_any_size_and_latent_options():
    model = IRN(4, blocks_per_step=1, growth_channels=4)
    _randomize(model, std=0.02)
    hr = torch.rand(1, 3, 13, 10)
    lr, z = model.downscale(hr)
    assert lr.shape == (1, 3, 4, 3) and z.shape == (1, 45, 4, 3)
    assert torch.equal(lr, torch.round(lr * 255) / 255) and lr.min() >= 0 and lr.max() <= 1
    restored = model.upscale(lr, z, size=(13, 10))
    assert restored.shape == hr.shape
    assert model.upscale(lr).shape == (1, 3, 16, 12)
    zero_a = model.upscale(lr, gaussian_scale=0.0)
    torch.testing.assert_close(zero_a, model.upscale(lr, torch.zeros_like(z)))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    torch.testing.assert_close(model.upscale(lr, generator=g1), model.upscale(lr, generator=g2))


def test_bad_tensors_are_rejected_with_clear_errors():
    model = IRN(2, blocks_per_step=1, growth_channels=4)
    with pytest.raises(GraftkitError, match="4-D"):
        model(torch.rand(3, 8, 8))
    with pytest.raises(GraftkitError, match="3 channels"):
        model.downscale(torch.rand(1, 4, 8, 8))
    with pytest.raises(GraftkitError, match="divisible"):
        model(torch.rand(1, 3, 7, 8))
    with pytest.raises(GraftkitError, match="NaN"):
        model.downscale(torch.full((1, 3, 4, 4), float("nan")))
    with pytest.raises(GraftkitError, match="float"):
        model.downscale(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(GraftkitError, match="z must have shape"):
        model.upscale(torch.rand(1, 3, 4, 4), torch.zeros(1, 9, 2, 2))


def test_matlab_bicubic_hand_values():
    # imresize([1 2 3 4], 2): first output uses weights (-3, 29, 111, -9)/128 on the mirrored [2, 1, 1, 2]
    up = imresize(torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64), size=(1, 8))
    assert up[0, 0].item() == pytest.approx(116 / 128)
    assert up[0].flip(0).tolist() == pytest.approx((5 - up[0]).tolist())  # symmetric about the centre
    # downscaling keeps constants and, away from the borders, linear ramps (antialiased kernel spans 8 taps)
    ramp = torch.arange(1, 17, dtype=torch.float64).repeat(16, 1)
    down = imresize(ramp, 0.5)
    assert down.shape == (8, 8)
    assert down[0, 2:6].tolist() == pytest.approx([5.5, 7.5, 9.5, 11.5])
    torch.testing.assert_close(imresize(torch.full((3, 10, 6), 0.7), 0.5), torch.full((3, 5, 3), 0.7))
    rows = resize_weights(16, 4, 0.25)
    assert rows.shape == (4, 16) and torch.allclose(rows.sum(1), torch.ones(4, dtype=torch.float64))
    assert (rows[1] != 0).sum() > 8  # antialiased: the kernel is stretched to 16 input pixels, not 4


def test_metrics_hand_values_and_skimage_ssim():
    black = torch.zeros(3, 16, 16)
    gray = torch.full((3, 16, 16), 1 / 255)
    y = rgb_to_y(gray)
    assert y.shape == (1, 16, 16) and y[0, 0, 0].item() == pytest.approx(16 + 219 / 255)
    assert psnr(black, gray) == pytest.approx(20 * math.log10(255 / (219 / 255)))
    assert psnr(black, gray, y_channel=False) == pytest.approx(20 * math.log10(255))
    assert psnr(gray, gray) == math.inf and ssim(gray, gray) == pytest.approx(1.0)

    from skimage.metrics import structural_similarity

    gen = torch.Generator().manual_seed(0)
    a = torch.rand(3, 40, 36, generator=gen)
    b = (a + 0.1 * torch.randn(3, 40, 36, generator=gen)).clamp(0, 1)
    ya, yb = rgb_to_y(a)[0].double().numpy(), rgb_to_y(b)[0].double().numpy()
    expected = structural_similarity(ya, yb, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     data_range=255)
    assert ssim(a, b) == pytest.approx(expected, abs=2e-3)
    assert psnr(a, b, crop_border=4) != psnr(a, b)
    with pytest.raises(GraftkitError, match="shape"):
        psnr(a, b[:, :20])


def _nan_at(shape, index=(0, 1, 2, 3)):
    x = torch.rand(shape)
    x[index] = float("nan")
    return x


def test_nan_inputs_raise_at_every_public_entry_point():
    # upscale with a NaN z or a NaN gaussian_scale returned a NaN image silently
    from vision_ext.irn.evaluation import evaluate_images
    from vision_ext.irn.images import to_uint8
    from vision_ext.irn.training import PatchSampler, TrainConfig, train

    model = IRN(2, blocks_per_step=1, growth_channels=4)
    lr = torch.rand(1, 3, 4, 4)
    calls = {
        "forward": lambda: model(_nan_at((1, 3, 8, 8))),
        "inverse": lambda: model.inverse(_nan_at((1, 12, 4, 4))),
        "downscale": lambda: model.downscale(_nan_at((1, 3, 8, 8))),
        "upscale lr": lambda: model.upscale(_nan_at((1, 3, 4, 4))),
        "upscale z": lambda: model.upscale(lr, _nan_at((1, 9, 4, 4))),
        "upscale -inf z": lambda: model.upscale(lr, torch.full((1, 9, 4, 4), -math.inf)),
        "evaluate_images": lambda: list(evaluate_images(model, [("x", _nan_at((3, 8, 8), (0, 1, 2)))])),
        "imresize": lambda: imresize(_nan_at((3, 8, 8), (0, 1, 2)), 0.5),
        "psnr": lambda: psnr(_nan_at((3, 8, 8), (0, 1, 2)), torch.rand(3, 8, 8)),
        "ssim": lambda: ssim(torch.rand(3, 16, 16), _nan_at((3, 16, 16), (0, 1, 2))),
        "to_uint8": lambda: to_uint8(_nan_at((3, 8, 8), (0, 1, 2))),
        "PatchSampler": lambda: PatchSampler([_nan_at((3, 8, 8), (0, 1, 2))], 4, 2),
        "train": lambda: train(model, [_nan_at((3, 8, 8), (0, 1, 2))], TrainConfig(steps=1, batch_size=1,
                                                                                 patch_size=4), progress=False),
    }
    for name, call in calls.items():
        with pytest.raises(GraftkitError, match="NaN or infinite"):
            call()
        assert name
    for scale in (math.nan, math.inf, -1.0):
        with pytest.raises(GraftkitError, match="gaussian_scale"):
            model.upscale(lr, gaussian_scale=scale)


@pytest.mark.parametrize("size", [(-3, -3), (0, 4), (8, 0), (8,), (8, 8, 8), (2.5, 4), (True, 4), "88", 8])
def test_upscale_size_must_be_two_positive_ints(size):
    # size=(-3, -3) used to slice to a 13x13 image of a 16x16 upscale
    model = IRN(2, blocks_per_step=1, growth_channels=4)
    with pytest.raises(GraftkitError, match="size must be"):
        model.upscale(torch.rand(1, 3, 8, 8), size=size)
    with pytest.raises(GraftkitError, match="larger than the upscaled"):
        model.upscale(torch.rand(1, 3, 8, 8), size=(17, 16))
    assert model.upscale(torch.rand(1, 3, 8, 8), size=torch.Size([13, 16])).shape == (1, 3, 13, 16)


def test_images_outside_the_unit_range_raise_naming_it():
    # 0-255 images gave a saturated LR image silently
    from vision_ext.irn.training import PatchSampler

    model = IRN(2, blocks_per_step=1, growth_channels=4)
    eight_bit = torch.randint(0, 256, (1, 3, 8, 8)).float()
    for call in (lambda: model.downscale(eight_bit), lambda: model.upscale(eight_bit[..., :4, :4]),
                 lambda: psnr(eight_bit, eight_bit), lambda: PatchSampler([eight_bit[0]], 4, 2)):
        with pytest.raises(GraftkitError, match=r"\[0, 1\].*divide by 255"):
            call()
    with pytest.raises(GraftkitError, match=r"in \[0, 1\].*got values in \[-0\.4"):
        model.downscale(torch.rand(1, 3, 8, 8) - 0.5)
    lr, z = model.downscale(torch.rand(1, 3, 8, 8))  # the bounds themselves are fine
    model.downscale(torch.zeros(1, 3, 8, 8)), model.downscale(torch.ones(1, 3, 8, 8))
    assert model.upscale(lr, z).shape == (1, 3, 8, 8)


@pytest.mark.slow
def test_value_checks_do_not_break_fullgraph_compile():
    model = IRN(2, blocks_per_step=1, growth_channels=4).eval()
    _randomize(model, std=0.02)
    x = torch.rand(1, 3, 8, 8)
    y = torch.compile(model, backend="eager", fullgraph=True)(x)
    torch.testing.assert_close(y, model(x))
    restored = torch.compile(model.inverse, backend="eager", fullgraph=True)(y)
    torch.testing.assert_close(restored, model.inverse(y))
