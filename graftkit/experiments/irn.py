"""IRN experiment: a small IRN trained on real photos restores held-out photos better than bicubic down + up
by a clear margin, and better than bicubic down + a learned conv upscaler of similar size (issue 28)."""

from __future__ import annotations

import time
from typing import Any

import torch

from graftkit.experiments import protocol
from graftkit.registry import Outcome, RunContext, experiment

TRAIN_PHOTOS = ("chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "china", "flower")
#: held out from training and from every setting choice; scored once per seed, at the end (camera is grey,
#: given to both models as three equal channels)
TEST_PHOTOS = ("astronaut", "camera", "coffee")
#: held out from training and test: the learning curve (and the gate) is measured on it and the short-budget
#: settings below were chosen on it (scikit-image's stereo_motorcycle, left view)
VALIDATION_PHOTO = "motorcycle_left"

# Small-CPU settings (the paper: 8 blocks of gc-32 DenseBlocks, batch 16 of 144² patches, Adam 2e-4 halved at
# 20/40/60/80 % of 500k steps). That lr is tuned for 500k steps; a run of a few thousand steps uses the
# budget-appropriate schedule stated here instead: lr 2e-3 halved at 50 % and 75 % of the steps, 32² patches,
# and 4 coupling blocks of growth 8 (86k parameters, about half the CPU time per step of 8 blocks). Chosen on the
# validation photo, never on a test photo (docs/irn.md, Experiment): at equal CPU time 4 blocks at lr 2e-3
# ended 2.7 dB above 8 blocks at lr 1e-3. The SR baseline trains for the same steps on the same patches with
# the same optimiser; its lr (sr_lr) was chosen on the validation photo too (docs/irn.md). No wall-time guard:
# the steps are fixed, so the verdict never depends on how fast or how busy the machine is. Sized so that the
# quick run takes about 2 minutes and --full at most about 15 minutes of one core.
SETTINGS = {
    "quick": {"scale": 2, "blocks": 4, "growth_channels": 8, "steps": 400, "batch_size": 8, "patch_size": 32,
              "lr": 2e-3, "sr_lr": 1e-3, "test_crop": 256, "curve_every": 50},
    "full": {"scale": 2, "blocks": 4, "growth_channels": 8, "steps": 3000, "batch_size": 8, "patch_size": 32,
             "lr": 2e-3, "sr_lr": 2e-3, "test_crop": None, "curve_every": 375},
}
#: the issue's two paired seeds, at --full too: a third would add half again and could take --full past 15 minutes
SEEDS = 2
#: z draws averaged for the judged sampled-z restore (the reference's test samples z ~ N(0, 1))
DRAWS = 3
#: the learning curve is measured on this central crop of the validation photo (one z draw per point)
CURVE_CROP = 128
#: the clear margin over bicubic the rule asks for, stated before any run with the SR baseline
MARGIN_DB = 1.0
#: the validation curve counts as still rising when its last point (mean over seeds) is more than this above
#: its point at 3/4 of the steps (the last quarter runs at a quarter of the starting lr)
RISE_TOLERANCE_DB = 0.1


def _central_crop(image: torch.Tensor, size: int | None) -> torch.Tensor:
    if not size:
        return image
    top, left = (image.shape[-2] - size) // 2, (image.shape[-1] - size) // 2
    return image[:, top : top + size, left : left + size]


def _bicubic_psnr(image: torch.Tensor, scale: int) -> float:
    from vision_ext.irn.evaluation import bicubic_roundtrip, modcrop
    from vision_ext.irn.metrics import psnr

    hr = modcrop(image, scale)[None]
    return psnr(bicubic_roundtrip(hr, scale)[1], hr, scale)


@torch.inference_mode()
def _irn_restores(model: Any, hr: torch.Tensor, seed: int, draws: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """IRN's 8-bit restores of an HR batch from its own 8-bit LR: with z = 0, and with ``draws`` samples
    z ~ N(0, 1) (draw d seeded with ``seed + d``). The LR is computed once: downscaling is deterministic."""
    from vision_ext.irn.modeling_irn import quantize

    lr, _ = model.downscale(hr)
    zero = quantize(model.upscale(lr, gaussian_scale=0.0))
    sampled = [quantize(model.upscale(lr, generator=torch.Generator().manual_seed(seed + d))) for d in range(draws)]
    return zero, sampled


def _photo_scores(model: Any, upscaler: Any, image: torch.Tensor, seed: int, draws: int) -> dict[str, Any]:
    """PSNR/SSIM-Y (border = scale) of one (3, H, W) image restored four ways: IRN with z ~ N(0, 1) (mean over
    ``draws`` seeded draws), IRN with z = 0, the SR baseline, and bicubic down+up; and the restored images."""
    from vision_ext.irn.evaluation import bicubic_roundtrip, modcrop
    from vision_ext.irn.metrics import psnr, ssim
    from vision_ext.irn.sr_baseline import sr_restore

    scale = model.scale
    hr = modcrop(image, scale)[None]
    zero, sampled = _irn_restores(model, hr, seed, draws)
    restored = {"irn_z0": zero, "sr_baseline": sr_restore(upscaler, hr), "bicubic": bicubic_roundtrip(hr, scale)[1]}
    scores: dict[str, Any] = {f"{kind}_{arm}": metric(x, hr, scale) for arm, x in restored.items()
                              for kind, metric in (("psnr", psnr), ("ssim", ssim))}
    scores["psnr_irn_sampled_draws"] = [psnr(x, hr, scale) for x in sampled]
    scores["psnr_irn_sampled"] = sum(scores["psnr_irn_sampled_draws"]) / draws
    scores["ssim_irn_sampled"] = sum(ssim(x, hr, scale) for x in sampled) / draws
    scores["images"] = {"hr": hr[0], "irn_sampled": sampled[0][0], **{arm: x[0] for arm, x in restored.items()}}
    return scores


def _photo_tensor(name: str) -> torch.Tensor:
    from graftkit.data.images import photo

    return torch.from_numpy(photo(name).copy()).permute(2, 0, 1).float() / 255.0


def test_photo(name: str) -> torch.Tensor:
    """A held-out photo of :data:`TEST_PHOTOS`, (3, H, W) in [0, 1]; scikit-image's grey ``camera`` as three
    equal channels (its Y channel, the one scored, is then the grey image up to MATLAB's Y offset and scale)."""
    if name == "camera":
        import skimage.data

        grey = torch.from_numpy(skimage.data.camera().copy()).float() / 255.0
        return grey.expand(3, -1, -1).contiguous()
    return _photo_tensor(name)


def validation_photo() -> torch.Tensor:
    """The validation photo (3, 500, 741) in [0, 1]: the left view of scikit-image's bundled stereo pair."""
    import skimage.data

    left, _right, _disparity = skimage.data.stereo_motorcycle()
    return torch.from_numpy(left.copy()).permute(2, 0, 1).float() / 255.0


def _train_config(settings: dict[str, Any], seed: int, lr: float) -> Any:
    from vision_ext.irn.training import TrainConfig

    return TrainConfig(steps=settings["steps"], batch_size=settings["batch_size"],
                       patch_size=settings["patch_size"], lr=lr, seed=seed, milestones=(0.5, 0.75))


def build(settings: dict[str, Any], seed: int) -> tuple[Any, Any]:
    """The experiment's IRN and its training settings for one mode of :data:`SETTINGS` (losses, Adam betas,
    weight decay and gradient clipping stay the reference's; lr halved at 50 % and 75 % of the steps)."""
    from vision_ext.irn import IRN

    torch.manual_seed(seed)
    model = IRN(settings["scale"], blocks_per_step=settings["blocks"], growth_channels=settings["growth_channels"])
    return model, _train_config(settings, seed, settings["lr"])


def build_sr_baseline(settings: dict[str, Any], seed: int) -> tuple[Any, Any]:
    """The SR baseline (:class:`~vision_ext.irn.sr_baseline.ConvUpscaler`, 78k parameters) and its training
    settings: IRN's steps, batch, patches, patch order (same seed), optimiser and schedule, at its own lr."""
    from vision_ext.irn.sr_baseline import ConvUpscaler

    torch.manual_seed(seed)
    return ConvUpscaler(settings["scale"]), _train_config(settings, seed, settings["sr_lr"])


def _train_irn_with_curve(ctx: RunContext, settings: dict[str, Any], seed: int, images: list[torch.Tensor],
                          curve_hr: torch.Tensor) -> tuple[Any, list[dict[str, float]], float]:
    """Train one seed's IRN, measuring the validation curve every ``curve_every`` steps (one z draw and
    z = 0); the model, the curve and the training CPU seconds (the curve's evaluations excluded)."""
    from vision_ext.irn.metrics import psnr
    from vision_ext.irn.training import train

    model, config = build(settings, seed)
    scale, steps = settings["scale"], settings["steps"]
    curve: list[dict[str, float]] = []
    eval_cpu = 0.0

    def measure_curve(step: int, _losses: dict[str, float] | None = None) -> None:
        nonlocal eval_cpu
        ctx.progress(f"IRN, seed {seed}, step", step, steps)
        if step % settings["curve_every"] and step != steps:
            return
        started = time.process_time()
        model.eval()
        zero, sampled = _irn_restores(model, curve_hr, seed, draws=1)
        model.train()
        curve.append({"step": step, "psnr_irn_sampled": psnr(sampled[0], curve_hr, scale),
                      "psnr_irn_z0": psnr(zero, curve_hr, scale)})
        eval_cpu += time.process_time() - started

    started = time.process_time()
    measure_curve(0)
    train(model, images, config, progress=False, on_step=measure_curve)
    return model, curve, time.process_time() - started - eval_cpu


def _side_by_side(path: Any, panels: dict[str, torch.Tensor]) -> None:
    """The same central crop of each image (title → (3, H, W)), side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height, width = next(iter(panels.values())).shape[-2:]
    size = min(128, height, width)  # a central crop, enlarged so the pixels show
    top, left = (height - size) // 2, (width - size) // 2
    fig, axes = plt.subplots(1, len(panels), figsize=(3.5 * len(panels), 3.8))
    for ax, (title, image) in zip(axes, panels.items(), strict=True):
        crop = image[:, top : top + size, left : left + size].clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        ax.imshow(crop, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_curves(path: Any, seeds: list[int], curves: list[list[dict[str, float]]], bicubic: float,
                 sr_baseline: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for seed, curve in zip(seeds, curves, strict=True):
        steps = [point["step"] for point in curve]
        ax.plot(steps, [point["psnr_irn_sampled"] for point in curve], marker="o",
                label=f"IRN, z ~ N(0,1), seed {seed}")
        ax.plot(steps, [point["psnr_irn_z0"] for point in curve], marker=".", linestyle="--",
                label=f"IRN, z = 0, seed {seed}")
    ax.axhline(bicubic, color="gray", linewidth=1, label=f"bicubic down+up ({bicubic:.2f} dB)")
    ax.axhline(sr_baseline, color="black", linewidth=1, linestyle=":",
               label=f"SR baseline at the end, mean of seeds ({sr_baseline:.2f} dB)")
    ax.set(xlabel="training step", ylabel="PSNR-Y (dB)", title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values)


def _curve_gate(curves: list[list[dict[str, float]]], bicubic: float, steps: int) -> tuple[protocol.Gate, float, float]:
    """The gate: the validation curve (sampled z, mean over seeds) must not end below bicubic while still rising
    (last point more than :data:`RISE_TOLERANCE_DB` above the point at 3/4 of the steps); and its last point and
    that rise."""
    three_quarters = 3 * steps // 4
    last = _mean(curve[-1]["psnr_irn_sampled"] for curve in curves)
    earlier = _mean(next(p["psnr_irn_sampled"] for p in curve if p["step"] == three_quarters) for curve in curves)
    rise = last - earlier
    below, rising = last < bicubic, rise > RISE_TOLERANCE_DB
    verdict = ("still rising below bicubic: the run stopped before it could decide" if below and rising
               else "settled or at bicubic")
    detail = (f"the validation curve (sampled z, mean of {len(curves)} seeds) ends at {last:.2f} dB, "
              f"{'below' if below else 'at or above'} bicubic's {bicubic:.2f} dB, and rose {rise:+.2f} dB from "
              f"step {three_quarters} to step {steps} ({'more' if rising else 'not more'} than "
              f"{RISE_TOLERANCE_DB} dB): {verdict}")
    return protocol.Gate("curve_above_bicubic_or_flat", not (below and rising), detail), last, rise


def _supported(metrics: dict[str, Any]) -> bool:
    return (metrics["irn_minus_bicubic_ci_low"] >= MARGIN_DB and metrics["irn_minus_sr_baseline_ci_low"] > 0)


#: the arms scored on every held-out photo: metric-key fragment → table label
ARMS = {"irn_sampled": f"IRN ×2, z ~ N(0, 1), mean of {DRAWS} draws (judged)", "irn_z0": "IRN ×2, z = 0",
        "sr_baseline": "SR baseline: bicubic down + learned conv ×2 up", "bicubic": "bicubic ×2 down + up"}


@experiment(
    "irn-vs-bicubic",
    method="irn",
    claim="IRN's invertible downscale + upscale restores the HR image far better than bicubic down + bicubic "
          "up (x2 Set5 PSNR-Y 43.99 vs 33.66 dB; x4 DIV2K 35.07 vs 26.66 dB), and better than super-resolution "
          "from a bicubic LR.",
    rule=f"supported when IRN's restore with z sampled from N(0, 1) as the reference's test does (PSNR-Y, border "
         f"= scale, mean over {DRAWS} draws, mean over the held-out photos {', '.join(TEST_PHOTOS)}) is at least "
         f"{MARGIN_DB:.1f} dB above bicubic down+up and above the SR baseline (bicubic down + a learned conv "
         "upscaler of similar size trained for the same steps, psnr_sr_baseline), each as the lower end of the "
         f"95% bootstrap interval of the per-seed paired difference ({SEEDS} paired seeds); the z = 0 restore is "
         "reported, not judged. Gate: undecided while the validation curve (mean over seeds) ends below bicubic "
         f"and still rising (more than {RISE_TOLERANCE_DB} dB over the last quarter of the steps)",
    verdict=protocol.gated(_supported),
)
def run(ctx: RunContext) -> Outcome:
    from vision_ext.irn.evaluation import modcrop
    from vision_ext.irn.metrics import psnr
    from vision_ext.irn.sr_baseline import sr_restore, train_upscaler

    run_start_cpu = time.process_time()
    settings = SETTINGS["quick" if ctx.quick else "full"]
    scale, steps = settings["scale"], settings["steps"]
    seeds = [ctx.seed + i for i in range(SEEDS)]
    images = [_photo_tensor(name) for name in TRAIN_PHOTOS]
    tests = {name: _central_crop(test_photo(name), settings["test_crop"]) for name in TEST_PHOTOS}
    curve_image = _central_crop(validation_photo(), CURVE_CROP)
    curve_hr = modcrop(curve_image, scale)[None]
    curves: list[list[dict[str, float]]] = []
    scores: list[dict[str, dict[str, Any]]] = []  # per seed: photo → scores
    sr_validation: list[float] = []
    irn_cpu = sr_cpu = 0.0

    for seed in seeds:
        model, curve, cpu = _train_irn_with_curve(ctx, settings, seed, images, curve_hr)
        irn_cpu += cpu
        curves.append(curve)

        upscaler, sr_config = build_sr_baseline(settings, seed)
        started = time.process_time()
        train_upscaler(upscaler, images, sr_config,
                       on_step=lambda step, _loss, seed=seed: ctx.progress(f"SR baseline, seed {seed}, step",
                                                                            step, steps))
        sr_cpu += time.process_time() - started
        sr_validation.append(psnr(sr_restore(upscaler, curve_hr), curve_hr, scale))
        ctx.progress(f"seed {seed}: scoring {', '.join(TEST_PHOTOS)}")
        scores.append({name: _photo_scores(model, upscaler, image, seed, DRAWS) for name, image in tests.items()})

    def seed_means(key: str) -> list[float]:
        return [_mean(by_photo[name][key] for name in TEST_PHOTOS) for by_photo in scores]

    curve_bicubic = _bicubic_psnr(curve_image, scale)
    gate, curve_last, curve_rise = _curve_gate(curves, curve_bicubic, steps)
    metrics: dict[str, Any] = {}
    for arm in ARMS:
        for kind in ("psnr", "ssim"):
            metrics[f"{kind}_{arm}"] = _mean(seed_means(f"{kind}_{arm}"))
    irn, sr, bicubic = (seed_means(f"psnr_{arm}") for arm in ("irn_sampled", "sr_baseline", "bicubic"))
    metrics |= protocol.paired_difference("irn_minus_bicubic", irn, bicubic)
    metrics |= protocol.paired_difference("irn_minus_sr_baseline", irn, sr)
    metrics |= protocol.paired_difference("sr_baseline_minus_bicubic", sr, bicubic)
    metrics |= protocol.gate_metrics([gate])
    for arm in ARMS:
        metrics |= protocol.per_seed(f"psnr_{arm}", seeds, seed_means(f"psnr_{arm}"))
        for name in TEST_PHOTOS:
            metrics |= protocol.per_seed(f"psnr_{arm}_{name}", seeds, [by_photo[name][f"psnr_{arm}"]
                                                                       for by_photo in scores])
    metrics |= {
        "psnr_bicubic_validation": curve_bicubic, "psnr_irn_sampled_validation_last": curve_last,
        "validation_rise_last_quarter": curve_rise, "psnr_sr_baseline_validation": _mean(sr_validation),
        "train_steps": steps, "irn_train_cpu_seconds": round(irn_cpu, 1), "sr_train_cpu_seconds": round(sr_cpu, 1),
        "run_cpu_seconds": round(time.process_time() - run_start_cpu, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "sr_parameters": sum(p.numel() for p in upscaler.parameters()),
    }

    first = scores[0][TEST_PHOTOS[0]]
    figure = ctx.figure_path("irn_vs_bicubic.png")
    _side_by_side(figure, {
        f"HR ({TEST_PHOTOS[0]}, crop)": first["images"]["hr"],
        f"bicubic down+up  {first['psnr_bicubic']:.2f} dB": first["images"]["bicubic"],
        f"SR baseline  {first['psnr_sr_baseline']:.2f} dB": first["images"]["sr_baseline"],
        f"IRN, z=0  {first['psnr_irn_z0']:.2f} dB": first["images"]["irn_z0"],
        f"IRN, z~N(0,1) (1st draw)  {first['psnr_irn_sampled_draws'][0]:.2f} dB": first["images"]["irn_sampled"],
    })
    curve_figure = ctx.figure_path("irn_learning_curve.png")
    _plot_curves(curve_figure, seeds, curves, curve_bicubic, metrics["psnr_sr_baseline_validation"],
                 f"x{scale}, validation photo {VALIDATION_PHOTO}, central {CURVE_CROP}² crop")

    table: list[dict[str, Any]] = [
        {"method": label, **{f"{name} PSNR-Y": _mean(by_photo[name][f"psnr_{arm}"] for by_photo in scores)
                             for name in TEST_PHOTOS},
         "mean PSNR-Y": metrics[f"psnr_{arm}"], "mean SSIM-Y": metrics[f"ssim_{arm}"]}
        for arm, label in ARMS.items()]
    table += [{"method": f"{label}, paired over {SEEDS} seeds (95% interval)",
               "mean PSNR-Y": f"{metrics[f'{key}_mean']:+.2f} [{metrics[f'{key}_ci_low']:+.2f}, "
                              f"{metrics[f'{key}_ci_high']:+.2f}]"}
              for key, label in (("irn_minus_bicubic", "IRN − bicubic"), ("irn_minus_sr_baseline", "IRN − SR baseline"),
                                 ("sr_baseline_minus_bicubic", "SR baseline − bicubic"))]
    table.append({"method": "paper x2 Set5: IRN / bicubic", "mean PSNR-Y": "43.99 / 33.66"})
    table += [{"method": f"learning curve, step {point['step']} ({VALIDATION_PHOTO} {CURVE_CROP}² crop, 1 draw, "
                         "mean of seeds)",
               "mean PSNR-Y": _mean(curve[i]["psnr_irn_sampled"] for curve in curves),
               "mean PSNR-Y z = 0": _mean(curve[i]["psnr_irn_z0"] for curve in curves)}
              for i, point in enumerate(curves[0])]
    table += [{"method": f"bicubic x{scale} down + up ({VALIDATION_PHOTO} {CURVE_CROP}² crop)",
               "mean PSNR-Y": curve_bicubic},
              {"method": f"SR baseline at the end ({VALIDATION_PHOTO} {CURVE_CROP}² crop, mean of seeds)",
               "mean PSNR-Y": metrics["psnr_sr_baseline_validation"]}]
    notes = (
        f"x{scale}, {settings['blocks']} coupling blocks with DenseBlocks of {settings['growth_channels']} growth "
        f"channels ({metrics['parameters']:,} parameters; the paper's x2 model has 1.66M), {steps} Adam steps of "
        f"{settings['batch_size']} patches {settings['patch_size']}² per seed, budget-appropriate schedule: lr "
        f"{settings['lr']:g} halved at 50 % and 75 % of the steps (the reference: lr 2e-4 halved at 20/40/60/80 % "
        "of 500k steps, batch 16 of 144²; its lr is tuned for that length). SR baseline: the 8-bit MATLAB-bicubic "
        f"LR upscaled by bicubic + a residual conv stack (4 EDSR blocks of 32 channels, pixel shuffle; "
        f"{metrics['sr_parameters']:,} parameters), L1 loss, the same patches, steps, optimiser and schedule at lr "
        f"{settings['sr_lr']:g}. Training CPU time over {SEEDS} seeds: IRN {irn_cpu:.0f} s (learning-curve "
        f"evaluations excluded), SR baseline {sr_cpu:.0f} s; the whole run {metrics['run_cpu_seconds']:.0f} s. "
        "IRN's losses and weights as the reference (λ_fit = 4 at x2, λ_ce = 1, Charbonnier recon 1), quantized LR "
        "with a straight-through gradient. Evaluation as the literature: 8-bit outputs, Y channel, border = "
        f"scale, MATLAB-style antialiased bicubic (own implementation); the judged restore draws z ~ N(0, 1) as "
        f"the reference's test, {DRAWS} draws (seeds seed..seed+{DRAWS - 1}) averaged."
    )
    caveats = protocol.gate_caveats([gate])
    caveats += [
        f"{SEEDS} paired seeds: the 95% bootstrap interval of a mean over {SEEDS} values spans the two seeds' "
        "differences; it shows their spread, not a population interval.",
        f"The models are {metrics['parameters']:,} (IRN) and {metrics['sr_parameters']:,} (SR baseline) "
        f"parameters trained for {steps} steps; the paper's 10 dB gap over bicubic comes from 500k steps of a "
        "1.66M-parameter model. The learning curve shows where this run is heading, not where it ends."]
    if curve_rise > RISE_TOLERANCE_DB:
        caveats.append(f"The validation curve was still rising at the end (mean of seeds {curve_rise:+.2f} dB from "
                       f"step {3 * steps // 4} to {steps}): training stopped before it flattened.")
    crop = f"central {settings['test_crop']}² crops" if settings["test_crop"] else "whole photos"
    return Outcome(metrics=metrics, table=table, figures=[figure, curve_figure],
                   data=f"REAL photos: train on {', '.join(TRAIN_PHOTOS)} (scikit-image / scikit-learn bundled); "
                        f"test on the held-out {', '.join(TEST_PHOTOS)} ({crop}; camera is grey, given as three "
                        f"equal channels); learning curve on the held-out validation photo {VALIDATION_PHOTO} "
                        f"(scikit-image stereo_motorcycle, left view, central {CURVE_CROP}² crop)",
                   notes=notes, caveats=caveats)
