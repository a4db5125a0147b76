"""The IRN experiment's starting point and settings: what step 0 restores, and the reference's losses and
optimiser settings kept under the short-budget schedule."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from vision_ext.irn import IRN
from vision_ext.irn.metrics import psnr
from vision_ext.irn.modeling_irn import HaarTransform, quantize


def test_step0_irn_is_box_downscale_and_haar_latent_restores_exactly():
    # At init every coupling block is the identity (last DenseBlock convs zero), so the flow is one Haar step:
    # the LR is the 8-bit 2×2 mean (box downscale), z the three high bands. Restoring with z = those bands gives
    # the HR image back up to the LR's rounding (<= 0.5/255 per pixel); z = 0 is pixel replication of the LR.
    model = IRN(2, blocks_per_step=2, growth_channels=4).eval()
    hr = torch.rand(1, 3, 16, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lr, z = model.downscale(hr)
        box = quantize(F.avg_pool2d(hr, 2))
        torch.testing.assert_close(lr, box, rtol=0, atol=1e-6)
        torch.testing.assert_close(z, HaarTransform()(hr)[:, 3:], rtol=0, atol=1e-6)
        exact = model.upscale(lr, z)
        assert (exact - hr).abs().max() <= 0.5 / 255 + 1e-6
        replicated = model.upscale(lr, gaussian_scale=0.0)
        torch.testing.assert_close(replicated, F.interpolate(box, scale_factor=2, mode="nearest"), rtol=0, atol=1e-6)


def test_step0_sampled_latent_is_far_off_the_photos_high_bands():
    # Why the first steps of training go into damping z: N(0, 1) is ~50x the high bands of a photo-like image
    # (std ~0.02 on 0..1), so a sampled z at step 0 restores noise, while z = 0 restores a blurred image.
    from graftkit.experiments.irn import _photo_tensor

    hr = _photo_tensor("astronaut")[:, 200:296, 200:296][None]
    model = IRN(2, blocks_per_step=1, growth_channels=4).eval()
    with torch.no_grad():
        lr, z = model.downscale(hr)
        zero = quantize(model.upscale(lr, gaussian_scale=0.0))
        sampled = quantize(model.upscale(lr, generator=torch.Generator().manual_seed(0)))
    assert 0.01 < z.std().item() < 0.04
    assert psnr(zero, hr, 2) > 20 > 12 > psnr(sampled, hr, 2)


def test_experiment_keeps_the_reference_losses_and_optimiser_settings():
    from graftkit.experiments import irn as experiment

    for mode in ("quick", "full"):
        model, config = experiment.build(experiment.SETTINGS[mode], seed=0)
        assert model.scale == 2 and model.config.clamp == 1.0
        # λ_fit = 4 at x2, λ_ce = 1, Charbonnier reconstruction 1 (eps 1e-6): train_IRN_x2.yml
        assert (model.config.guide_weight, model.config.distribution_weight, model.config.reconstruction_weight,
                model.config.charbonnier_eps) == (4.0, 1.0, 1.0, 1e-6)
        # Adam betas 0.9/0.999, weight decay 1e-5, gradient norm clipped to 10, lr halved at each milestone
        assert (config.betas, config.weight_decay, config.grad_clip, config.gamma) == ((0.9, 0.999), 1e-5, 10.0, 0.5)
        assert config.flip_rotate
        assert config.lr == pytest.approx(experiment.SETTINGS[mode]["lr"])
        # the gate compares the curve's last point with its point at 3/4 of the steps: both must be measured
        settings = experiment.SETTINGS[mode]
        assert (3 * settings["steps"] // 4) % settings["curve_every"] == 0
        assert settings["steps"] % settings["curve_every"] == 0


def test_validation_and_test_photos_are_held_out_from_training_and_each_other():
    from graftkit.experiments import irn as experiment

    assert len(experiment.TEST_PHOTOS) >= 3
    assert not set(experiment.TEST_PHOTOS) & set(experiment.TRAIN_PHOTOS)
    assert experiment.VALIDATION_PHOTO not in (*experiment.TRAIN_PHOTOS, *experiment.TEST_PHOTOS)
    image = experiment.validation_photo()
    assert image.shape[0] == 3 and min(image.shape[-2:]) >= experiment.CURVE_CROP
    assert 0.0 <= image.min() and image.max() <= 1.0


def test_untrained_sr_baseline_is_bicubic_upscaling():
    # The upscaler's last conv starts at zero, so before training it adds nothing to the bicubic upscale of the
    # 8-bit bicubic LR: its restore is the bicubic round trip exactly, and training can only add a correction.
    from vision_ext.irn.evaluation import bicubic_roundtrip
    from vision_ext.irn.sr_baseline import ConvUpscaler, sr_restore

    hr = torch.rand(1, 3, 24, 20, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sr_restore(ConvUpscaler(2), hr), bicubic_roundtrip(hr, 2)[1], rtol=0, atol=0)


def test_sr_baseline_is_of_similar_size_and_trains_like_irn():
    from graftkit.experiments import irn as experiment

    for mode in ("quick", "full"):
        settings = experiment.SETTINGS[mode]
        model, config = experiment.build(settings, seed=3)
        upscaler, sr_config = experiment.build_sr_baseline(settings, seed=3)
        irn_size = sum(p.numel() for p in model.parameters())
        sr_size = sum(p.numel() for p in upscaler.parameters())
        assert 0.8 < sr_size / irn_size < 1.25, (sr_size, irn_size)
        # same steps, batch, patches, patch order (seed), optimiser and schedule; only the lr is the arm's own
        assert {**sr_config.to_dict(), "lr": config.lr} == config.to_dict()
        assert sr_config.lr == settings["sr_lr"]


def test_sr_baseline_training_lowers_its_loss_and_refuses_bad_input():
    from graftkit.errors import GraftkitError
    from vision_ext.irn.sr_baseline import ConvUpscaler, train_upscaler
    from vision_ext.irn.training import TrainConfig

    generator = torch.Generator().manual_seed(0)
    images = [F.interpolate(torch.rand(1, 3, 12, 12, generator=generator), size=48, mode="bilinear")[0]
              for _ in range(2)]
    torch.manual_seed(0)
    upscaler = ConvUpscaler(2, channels=8, blocks=1)
    losses = train_upscaler(upscaler, images, TrainConfig(steps=60, batch_size=4, patch_size=16, lr=2e-3))
    assert len(losses) == 60 and sum(losses[-10:]) < sum(losses[:10])
    with pytest.raises(GraftkitError, match="RGB batch"):
        upscaler(torch.rand(1, 1, 8, 8))
    with pytest.raises(GraftkitError, match="255"):
        upscaler(torch.full((1, 3, 8, 8), 200.0))


def test_curve_gate_is_undecided_only_below_bicubic_and_still_rising():
    from graftkit.experiments import irn as experiment

    def curve(at_three_quarters: float, last: float) -> list[dict[str, float]]:
        return [{"step": 0, "psnr_irn_sampled": 10.0}, {"step": 300, "psnr_irn_sampled": at_three_quarters},
                {"step": 400, "psnr_irn_sampled": last}]

    # mean of seeds: (26 + 27)/2 = 26.5 at 3/4, (26.5 + 27.5)/2 = 27 at the end: +0.5 dB, below bicubic 28
    rising_below = [curve(26.0, 26.5), curve(27.0, 27.5)]
    gate, last, rise = experiment._curve_gate(rising_below, bicubic=28.0, steps=400)
    assert not gate.passed and last == pytest.approx(27.0) and rise == pytest.approx(0.5)
    assert "still rising" in gate.detail
    assert experiment._curve_gate(rising_below, bicubic=26.9, steps=400)[0].passed  # above bicubic
    flat_below = [curve(26.0, 26.05), curve(27.0, 27.05)]  # +0.05 dB: within the tolerance
    assert experiment._curve_gate(flat_below, bicubic=28.0, steps=400)[0].passed


def test_verdict_needs_the_margin_over_bicubic_and_the_sr_baseline_behind_the_gate():
    from graftkit.experiments import protocol
    from graftkit.registry import load_all

    verdict = load_all()["irn-vs-bicubic"].verdict
    passed = protocol.gate_metrics([protocol.Gate("curve_above_bicubic_or_flat", True, "")])
    failed = protocol.gate_metrics([protocol.Gate("curve_above_bicubic_or_flat", False, "")])
    clear = {"irn_minus_bicubic_ci_low": 1.2, "irn_minus_sr_baseline_ci_low": 0.1}
    assert verdict({**clear, **passed}) is True
    assert verdict({**clear, **failed}) is None
    assert verdict({**clear, "irn_minus_bicubic_ci_low": 0.9, **passed}) is False  # under the 1 dB margin
    assert verdict({**clear, "irn_minus_sr_baseline_ci_low": -0.1, **passed}) is False  # the SR baseline wins


def test_camera_photo_is_grey_in_three_equal_channels():
    from graftkit.experiments import irn as experiment

    camera = experiment.test_photo("camera")
    assert camera.shape == (3, 512, 512) and 0.0 <= camera.min() and camera.max() <= 1.0
    assert torch.equal(camera[0], camera[1]) and torch.equal(camera[1], camera[2])
