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


def test_validation_photo_is_held_out_from_training_and_test():
    from graftkit.experiments import irn as experiment

    assert experiment.VALIDATION_PHOTO not in experiment.TRAIN_PHOTOS
    assert experiment.VALIDATION_PHOTO != experiment.TEST_PHOTO and experiment.TEST_PHOTO not in experiment.TRAIN_PHOTOS
    image = experiment.validation_photo()
    assert image.shape[0] == 3 and min(image.shape[-2:]) >= experiment.CURVE_CROP
    assert 0.0 <= image.min() and image.max() <= 1.0
