"""IRN experiment: a small IRN trained on real photos restores a held-out photo better than bicubic."""

from __future__ import annotations

import time
from typing import Any

import torch

from graftkit.registry import Outcome, RunContext, experiment

TRAIN_PHOTOS = ("coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "china", "flower")
TEST_PHOTO = "astronaut"
#: held out from training and test: the learning curve is measured on it and the short-budget settings below
#: were chosen on it, so the test photo is scored once, at the end (scikit-image's stereo_motorcycle, left view)
VALIDATION_PHOTO = "motorcycle_left"

# Small-CPU settings (the paper: 8 blocks of gc-32 DenseBlocks, batch 16 of 144² patches, Adam 2e-4 halved at
# 20/40/60/80 % of 500k steps). That lr is tuned for 500k steps; a run of a few hundred steps uses the
# budget-appropriate schedule stated here instead: lr 2e-3 halved at 50 % and 75 % of the steps, 32² patches,
# and 4 coupling blocks of growth 8 (86k parameters, about half the CPU time per step of 8 blocks). Chosen on the
# validation photo, never on the test photo (docs/irn.md, Experiment): at equal CPU time 4 blocks at lr 2e-3
# ended 2.7 dB above 8 blocks at lr 1e-3. No wall-time guard: the steps are fixed, so the verdict never depends
# on how fast or how busy the machine is.
SETTINGS = {
    "quick": {"scale": 2, "blocks": 4, "growth_channels": 8, "steps": 800, "batch_size": 8, "patch_size": 32,
              "lr": 2e-3, "test_crop": 256, "curve_every": 100},
    "full": {"scale": 2, "blocks": 4, "growth_channels": 8, "steps": 6000, "batch_size": 8, "patch_size": 32,
             "lr": 2e-3, "test_crop": None, "curve_every": 500},
}
#: z draws averaged for the judged sampled-z restore (the reference's test samples z ~ N(0, 1))
DRAWS = 3
#: the learning curve is measured on this central crop of the validation photo (one z draw per point)
CURVE_CROP = 128


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


def _restore_scores(model, hr: torch.Tensor, seed: int, draws: int) -> dict[str, Any]:
    """PSNR/SSIM-Y of IRN's restore with z = 0 and with z ~ N(0, 1) (mean over ``draws`` seeded draws), and of
    bicubic down+up, for one (3, H, W) image; the restored images of z = 0, the first draw and bicubic."""
    from vision_ext.irn.evaluation import bicubic_roundtrip, modcrop, restore
    from vision_ext.irn.metrics import psnr, ssim

    scale = model.scale
    hr = modcrop(hr, scale)[None]
    _, zero = restore(model, hr, 0.0)
    sampled = [restore(model, hr, 1.0, torch.Generator().manual_seed(seed + d))[1] for d in range(draws)]
    _, bicubic = bicubic_roundtrip(hr, scale)
    return {
        "psnr_irn_z0": psnr(zero, hr, scale), "ssim_irn_z0": ssim(zero, hr, scale),
        "psnr_irn_sampled_draws": [psnr(x, hr, scale) for x in sampled],
        "ssim_irn_sampled_draws": [ssim(x, hr, scale) for x in sampled],
        "psnr_bicubic": psnr(bicubic, hr, scale), "ssim_bicubic": ssim(bicubic, hr, scale),
        "images": {"hr": hr[0], "bicubic": bicubic[0], "irn_z0": zero[0], "irn_sampled": sampled[0][0]},
    }


def _photo_tensor(name: str) -> torch.Tensor:
    from graftkit.data.images import photo

    return torch.from_numpy(photo(name).copy()).permute(2, 0, 1).float() / 255.0


def validation_photo() -> torch.Tensor:
    """The validation photo (3, 500, 741) in [0, 1]: the left view of scikit-image's bundled stereo pair."""
    import skimage.data

    left, _right, _disparity = skimage.data.stereo_motorcycle()
    return torch.from_numpy(left.copy()).permute(2, 0, 1).float() / 255.0


def build(settings: dict[str, Any], seed: int) -> tuple[Any, Any]:
    """The experiment's model and training settings for one mode of :data:`SETTINGS` (losses, Adam betas,
    weight decay and gradient clipping stay the reference's; lr halved at 50 % and 75 % of the steps)."""
    from vision_ext.irn import IRN
    from vision_ext.irn.training import TrainConfig

    torch.manual_seed(seed)
    model = IRN(settings["scale"], blocks_per_step=settings["blocks"], growth_channels=settings["growth_channels"])
    config = TrainConfig(steps=settings["steps"], batch_size=settings["batch_size"],
                         patch_size=settings["patch_size"], lr=settings["lr"], seed=seed, milestones=(0.5, 0.75))
    return model, config


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


def _plot_curve(path: Any, curve: list[dict[str, float]], bicubic: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    steps = [point["step"] for point in curve]
    ax.plot(steps, [point["psnr_irn_sampled"] for point in curve], marker="o", label="IRN, z ~ N(0,1)")
    ax.plot(steps, [point["psnr_irn_z0"] for point in curve], marker=".", linestyle="--", label="IRN, z = 0")
    ax.axhline(bicubic, color="gray", linewidth=1, label=f"bicubic down+up ({bicubic:.2f} dB)")
    ax.set(xlabel="training step", ylabel="PSNR-Y (dB)", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@experiment(
    "irn-vs-bicubic",
    method="irn",
    claim="IRN's invertible downscale + upscale restores the HR image far better than bicubic down + bicubic "
          "up (x2 Set5 PSNR-Y 43.99 vs 33.66 dB; x4 DIV2K 35.07 vs 26.66 dB).",
    rule=f"supported when IRN's restore with z sampled from N(0, 1) as the reference's test does (PSNR mean "
         f"over {DRAWS} draws) has a higher PSNR (Y channel, border = scale) than bicubic down+up on the "
         "held-out photo; the z = 0 restore is reported beside it, not judged",
    verdict=lambda m: m["psnr_irn_sampled"] > m["psnr_bicubic"],
)
def run(ctx: RunContext) -> Outcome:
    from vision_ext.irn.training import train

    settings = SETTINGS["quick" if ctx.quick else "full"]
    images = [_photo_tensor(name) for name in TRAIN_PHOTOS]
    test = _central_crop(_photo_tensor(TEST_PHOTO), settings["test_crop"])
    curve_image = _central_crop(validation_photo(), CURVE_CROP)
    model, config = build(settings, ctx.seed)
    curve: list[dict[str, float]] = []
    eval_seconds = eval_cpu_seconds = 0.0

    def measure_curve(step: int, _losses: dict[str, float] | None = None) -> None:
        nonlocal eval_seconds, eval_cpu_seconds
        ctx.progress("IRN training, step", step, config.steps)
        if step % settings["curve_every"] and step != config.steps:
            return
        started, started_cpu = time.perf_counter(), time.process_time()
        model.eval()
        scores = _restore_scores(model, curve_image, ctx.seed, draws=1)
        model.train()
        curve.append({"step": step, "psnr_irn_z0": scores["psnr_irn_z0"],
                      "psnr_irn_sampled": scores["psnr_irn_sampled_draws"][0]})
        eval_seconds += time.perf_counter() - started
        eval_cpu_seconds += time.process_time() - started_cpu

    start, start_cpu = time.perf_counter(), time.process_time()
    measure_curve(0)
    history = train(model, images, config, progress=False, on_step=measure_curve)
    train_seconds = time.perf_counter() - start - eval_seconds
    train_cpu_seconds = time.process_time() - start_cpu - eval_cpu_seconds

    ctx.progress(f"evaluating on {TEST_PHOTO}")
    model.eval()
    scores = _restore_scores(model, test, ctx.seed, DRAWS)
    psnr_sampled = sum(scores["psnr_irn_sampled_draws"]) / DRAWS
    ssim_sampled = sum(scores["ssim_irn_sampled_draws"]) / DRAWS
    scale = model.scale
    figure = ctx.figure_path("irn_vs_bicubic.png")
    _side_by_side(figure, {
        f"HR ({TEST_PHOTO}, crop)": scores["images"]["hr"],
        f"bicubic down+up  {scores['psnr_bicubic']:.2f} dB": scores["images"]["bicubic"],
        f"IRN down+up, z=0  {scores['psnr_irn_z0']:.2f} dB": scores["images"]["irn_z0"],
        f"IRN down+up, z~N(0,1) (1st draw)  {scores['psnr_irn_sampled_draws'][0]:.2f} dB":
            scores["images"]["irn_sampled"],
    })
    curve_bicubic = _bicubic_psnr(curve_image, scale)
    curve_figure = ctx.figure_path("irn_learning_curve.png")
    _plot_curve(curve_figure, curve, curve_bicubic,
                f"x{scale}, {CURVE_CROP}² central crop of the validation photo {VALIDATION_PHOTO}: "
                "PSNR vs steps (1 z draw)")

    metrics = {
        "psnr_irn_sampled": psnr_sampled, "ssim_irn_sampled": ssim_sampled,
        "psnr_irn_sampled_min": min(scores["psnr_irn_sampled_draws"]),
        "psnr_irn_sampled_max": max(scores["psnr_irn_sampled_draws"]),
        "psnr_irn_z0": scores["psnr_irn_z0"], "ssim_irn_z0": scores["ssim_irn_z0"],
        "psnr_bicubic": scores["psnr_bicubic"], "ssim_bicubic": scores["ssim_bicubic"],
        "train_steps": len(history), "train_seconds": round(train_seconds, 1),
        "train_cpu_seconds": round(train_cpu_seconds, 1),
        "psnr_bicubic_validation": curve_bicubic,
        "psnr_irn_sampled_validation_last": curve[-1]["psnr_irn_sampled"],
        "final_loss": history[-1]["total"],
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    table = [
        {"method": f"IRN x{scale}, z ~ N(0,1), mean of {DRAWS} draws (judged)", "PSNR-Y": psnr_sampled,
         "SSIM-Y": ssim_sampled,
         "range over draws": f"{metrics['psnr_irn_sampled_min']:.2f}–{metrics['psnr_irn_sampled_max']:.2f} dB"},
        {"method": f"IRN x{scale}, z = 0", "PSNR-Y": scores["psnr_irn_z0"], "SSIM-Y": scores["ssim_irn_z0"]},
        {"method": f"bicubic x{scale} down + up", "PSNR-Y": scores["psnr_bicubic"], "SSIM-Y": scores["ssim_bicubic"]},
        {"method": "paper x2 Set5: IRN / bicubic", "PSNR-Y": "43.99 / 33.66", "SSIM-Y": "-"},
    ] + [{"method": f"learning curve, step {point['step']} ({VALIDATION_PHOTO} {CURVE_CROP}² crop, 1 draw)",
          "PSNR-Y": point["psnr_irn_sampled"], "PSNR-Y z = 0": point["psnr_irn_z0"]} for point in curve] + [
        {"method": f"bicubic x{scale} down + up ({VALIDATION_PHOTO} {CURVE_CROP}² crop)", "PSNR-Y": curve_bicubic}]
    notes = (
        f"x{scale}, {settings['blocks']} coupling blocks with DenseBlocks of {settings['growth_channels']} growth "
        f"channels ({metrics['parameters']:,} parameters; the paper's x2 model has 1.66M), "
        f"{len(history)} Adam steps of {config.batch_size} patches "
        f"{config.patch_size}², budget-appropriate schedule: lr {config.lr:g} halved at 50 % and 75 % of the "
        f"steps (the reference: lr 2e-4 halved at 20/40/60/80 % of 500k steps, batch 16 of 144²; its lr is "
        f"tuned for that length), trained {train_seconds:.0f} s wall / {train_cpu_seconds:.0f} s CPU "
        "(learning-curve evaluations excluded). "
        "Losses and weights as the reference (λ_fit = 4 at x2, λ_ce = 1, Charbonnier recon 1), quantized LR "
        "with a straight-through gradient. Evaluation as the literature: 8-bit outputs, Y channel, border = "
        f"scale, MATLAB-style antialiased bicubic (own implementation); the judged restore draws z ~ N(0, 1) "
        f"as the reference's test, {DRAWS} draws (seeds {ctx.seed}..{ctx.seed + DRAWS - 1}) averaged."
    )
    caveats = [f"The model is {metrics['parameters']:,} parameters trained for {len(history)} steps; the paper's "
               "10 dB gap comes from 500k steps of a 1.66M-parameter model. The learning curve shows where "
               "this run is heading, not where it ends."]
    if len(curve) >= 2 and curve[-1]["psnr_irn_sampled"] > curve[-2]["psnr_irn_sampled"]:
        rise = curve[-1]["psnr_irn_sampled"] - curve[-2]["psnr_irn_sampled"]
        caveats.append(f"The validation curve was still rising at the end (+{rise:.2f} dB over the last "
                       f"{curve[-1]['step'] - curve[-2]['step']} steps): training stopped before it flattened.")
    return Outcome(metrics=metrics, table=table, figures=[figure, curve_figure],
                   data=f"REAL photos: train on {', '.join(TRAIN_PHOTOS)} (scikit-image / scikit-learn bundled); "
                        f"test on the held-out {TEST_PHOTO} ({test.shape[-1]}×{test.shape[-2]}"
                        f"{', central crop' if settings['test_crop'] else ''}); learning curve on the held-out "
                        f"validation photo {VALIDATION_PHOTO} (scikit-image stereo_motorcycle, left view, central "
                        f"{CURVE_CROP}² crop)",
                   notes=notes, caveats=caveats)
