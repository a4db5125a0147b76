"""IRN training loop, checkpoints and resume, image files, CLI, bad input and 2-process DDP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from loopback import free_port, gloo_group
from PIL import Image

from graftkit.cli import main
from graftkit.errors import GraftkitError
from vision_ext.irn import IRN
from vision_ext.irn.images import load_image, read_size_tag, save_image
from vision_ext.irn.training import (
    IRNObjective,
    PatchSampler,
    TrainConfig,
    load_irn,
    save_training_state,
    train,
)

TINY = {"blocks_per_step": 1, "growth_channels": 4}


def _images(n: int = 2, size: int = 24, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(3, size, size + 4, generator=gen) for _ in range(n)]


def _config(steps: int, **kw) -> TrainConfig:
    return TrainConfig(**{"steps": steps, "batch_size": 2, "patch_size": 8, "lr": 1e-3, **kw})


def test_training_lowers_the_loss_and_follows_the_step_schedule():
    torch.manual_seed(0)
    model = IRN(2, **TINY)
    # a fixed batch and latent noise, scored before and after: single training batches are too noisy to compare
    hr, lr_ref = PatchSampler(_images(), patch_size=8, scale=2, seed=1).sample(4)
    noise = torch.randn(4, 9, 4, 4)

    def fixed_batch_loss() -> float:
        with torch.no_grad():
            return IRNObjective(model)(hr, lr_ref, noise)["total"].item()

    before = fixed_batch_loss()
    lrs = []
    config = _config(8, milestones=(0.5,))
    history = train(model, _images(), config, progress=False,
                    on_step=lambda step, rec: lrs.append(rec))
    assert len(history) == 8 == len(lrs)
    assert fixed_batch_loss() < before
    assert config.milestone_steps() == [4]
    assert not model.training


def test_max_seconds_stops_early_with_a_checkpoint(tmp_path):
    history = train(IRN(2, **TINY), _images(), _config(50, max_seconds=1e-6), checkpoint=tmp_path / "c.pt",
                    progress=False)
    assert len(history) == 1
    assert torch.load(tmp_path / "c.pt", weights_only=True)["step"] == 1


@pytest.mark.parametrize(("field", "value", "message"), [
    ("lr", 0.0, "lr must be a finite number > 0"), ("grad_clip", float("inf"), "grad_clip must be a finite"),
    ("gamma", 1.5, r"gamma must be in \(0, 1\]"), ("max_seconds", 0, "max_seconds must be a finite number > 0"),
    ("batch_size", 0, "batch_size must be an integer >= 1"),
])
def test_bad_training_settings_are_named(field, value, message):
    with pytest.raises(GraftkitError, match=message):
        _config(10, **{field: value})


def test_patch_sampler_gives_bicubic_reference_and_rejects_small_images():
    sampler = PatchSampler(_images(), patch_size=8, scale=2, seed=0)
    hr, lr = sampler.sample(3)
    assert hr.shape == (3, 3, 8, 8) and lr.shape == (3, 3, 4, 4)
    with pytest.raises(GraftkitError, match="patch"):
        PatchSampler(_images(size=6), patch_size=8, scale=2)
    with pytest.raises(GraftkitError, match="divisible"):
        PatchSampler(_images(), patch_size=9, scale=2)


def test_patch_lr_is_the_whole_image_bicubic_cropped_as_the_reference():
    # The reference (LQGT_dataset) downscales the whole image, then crops LR and HR patches together; a bicubic
    # of the patch alone mirror-pads at the patch edges and differs on the border LR pixels.
    from vision_ext.irn.resize import imresize

    image = _images(1, size=24)[0]
    full_lr = imresize(image, 0.5)
    dihedral = [lambda x: x, lambda x: x.flip(-1), lambda x: x.flip(-2), lambda x: x.flip(-1).flip(-2)]
    dihedral += [lambda x, t=t: t(x).transpose(-1, -2) for t in dihedral]
    sampler = PatchSampler([image], patch_size=8, scale=2, seed=3)
    hr, lr = sampler.sample(6)
    for hr_patch, lr_patch in zip(hr, lr, strict=True):
        matches = [(t, top, left) for top in range(0, 17, 2) for left in range(0, 21, 2) for t in dihedral
                   if torch.equal(t(image[:, top : top + 8, left : left + 8]), hr_patch)]
        assert len(matches) == 1  # patch corners on multiples of the scale
        t, top, left = matches[0]
        torch.testing.assert_close(lr_patch, t(full_lr[:, top // 2 : top // 2 + 4, left // 2 : left // 2 + 4]))
    assert not torch.allclose(lr, imresize(hr, 0.5), atol=1e-3)  # the patch-only bicubic differs at the edges


def test_resume_continues_exactly(tmp_path):
    torch.manual_seed(0)
    straight = IRN(2, **TINY)
    train(straight, _images(), _config(4), progress=False)

    def crash(step: int, record: dict) -> None:
        if step == 2:
            raise KeyboardInterrupt

    torch.manual_seed(0)
    path = tmp_path / "irn.pt"
    with pytest.raises(KeyboardInterrupt):
        train(IRN(2, **TINY), _images(), _config(4, checkpoint_every=2), checkpoint=path, progress=False,
              on_step=crash)
    resumed = IRN(2, **TINY)
    history = train(resumed, _images(), _config(4, checkpoint_every=2), checkpoint=path, resume=True,
                    progress=False)
    assert len(history) == 2
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    loaded = load_irn(path)
    for a, b in zip(loaded.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temporary file


def test_checkpoint_errors(tmp_path):
    with pytest.raises(GraftkitError, match="not found"):
        load_irn(tmp_path / "missing.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(GraftkitError, match="not an IRN checkpoint"):
        load_irn(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(GraftkitError, match="cannot read"):
        load_irn(tmp_path / "junk.pt")
    save_training_state(tmp_path / "weights.pt", IRN(2, **TINY))
    with pytest.raises(GraftkitError, match="weights only"):
        train(IRN(2, **TINY), _images(), _config(2), checkpoint=tmp_path / "weights.pt", resume=True,
              progress=False)
    with pytest.raises(GraftkitError, match="another IRN config"):
        train(IRN(4, **TINY), _images(), _config(2), checkpoint=tmp_path / "weights.pt", resume=True,
              progress=False)


def test_image_files_convert_or_fail_clearly(tmp_path):
    rgb = (np.arange(5 * 7 * 3) % 256).astype(np.uint8).reshape(5, 7, 3)
    Image.fromarray(rgb).convert("L").save(tmp_path / "gray.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.gif")
    gray = load_image(tmp_path / "gray.png")
    assert gray.shape == (3, 5, 7) and torch.equal(gray[0], gray[1])
    torch.testing.assert_close(load_image(tmp_path / "rgba.png"), torch.from_numpy(rgb).permute(2, 0, 1) / 255.0)
    assert load_image(tmp_path / "palette.gif").shape == (3, 5, 7)
    Image.fromarray(np.zeros((4, 4), dtype=np.uint16) + 1000).save(tmp_path / "deep.png")
    with pytest.raises(GraftkitError, match="16-bit"):
        load_image(tmp_path / "deep.png")
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(GraftkitError, match="not a readable image"):
        load_image(tmp_path / "notes.png")
    with pytest.raises(GraftkitError, match="not found"):
        load_image(tmp_path / "nope.png")
    save_image(gray, tmp_path / "tagged.png", hr_size=(10, 14))
    assert read_size_tag(tmp_path / "tagged.png") == (10, 14)
    assert read_size_tag(tmp_path / "gray.png") is None
    with pytest.raises(GraftkitError, match="png"):
        save_image(gray, tmp_path / "tagged.jpg", hr_size=(10, 14))


def test_cli_train_downscale_upscale_eval(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    gen = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(gen.integers(0, 256, (30, 26, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    (folder / "readme.txt").write_text("ignored: not an image suffix")
    ckpt = tmp_path / "m.pt"
    args = ["irn", "train", "--images", str(folder), "--scale", "2", "--steps", "2", "--batch-size", "2",
            "--patch-size", "8", "--blocks", "1", "--growth-channels", "4", "--out", str(ckpt), "--no-progress"]
    assert main(args) == 0 and ckpt.is_file()
    assert main(args[:-1] + ["--steps", "3", "--resume", "--no-progress"]) == 0
    assert load_irn(ckpt).scale == 2

    lr_path, hr_path = tmp_path / "lr.png", tmp_path / "hr.png"
    assert main(["irn", "downscale", str(folder / "p0.png"), str(lr_path), "--model", str(ckpt)]) == 0
    assert Image.open(lr_path).size == (13, 15)  # 26×30 → 13×15
    assert main(["irn", "upscale", str(lr_path), str(hr_path), "--model", str(ckpt)]) == 0
    assert Image.open(hr_path).size == (26, 30)
    odd = tmp_path / "odd.png"
    Image.fromarray(gen.integers(0, 256, (15, 11, 3), dtype=np.uint8)).save(odd)
    assert main(["irn", "downscale", str(odd), str(lr_path), "--model", str(ckpt)]) == 0
    assert main(["irn", "upscale", str(lr_path), str(hr_path), "--model", str(ckpt), "--gaussian-scale", "0"]) == 0
    assert Image.open(lr_path).size == (6, 8) and Image.open(hr_path).size == (11, 15)  # padded, cropped back
    capsys.readouterr()
    assert main(["irn", "eval", "--images", str(folder), "--model", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "p0.png" in out and "bicubic" in out and "Set5 43.99 vs 33.66" in out


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((1, 3, 3), dtype=np.uint8)).save(tiny)
    ckpt = tmp_path / "m.pt"
    save_training_state(ckpt, IRN(4, **TINY))
    cases = [
        (["irn", "downscale", str(tiny), str(tmp_path / "o.png"), "--model", str(ckpt)], "smaller than the scale"),
        (["irn", "upscale", str(tiny), str(tmp_path / "o.png"), "--model", str(tmp_path / "no.pt")], "not found"),
        (["irn", "eval", "--images", str(tmp_path / "none"), "--model", str(ckpt)], "image folder not found"),
        (["irn", "upscale", str(tiny), str(tmp_path / "o.png"), "--model", str(ckpt), "--gaussian-scale", "-1"],
         "gaussian-scale"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        main(["irn", "train", "--help"])
    assert exc.value.code == 0


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    with gloo_group(rank, world, port):
        torch.manual_seed(0)  # same initial weights on every rank, as DDP requires
        model = IRN(2, **TINY)
        with torch.no_grad():  # a non-trivial start so every subnet receives gradient
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        before = [p.detach().clone() for p in model.parameters()]
        torch.manual_seed(100 + rank)  # different latent noise per rank
        train(model, _images(seed=0), _config(3, checkpoint_every=100), checkpoint=Path(out) / "ddp.pt",
              progress=False)
        changed = any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
        torch.save({"state": model.state_dict(), "changed": changed}, Path(out) / f"rank{rank}.pt")


@pytest.mark.distributed
@pytest.mark.slow
def test_ddp_two_cpu_processes_end_identical(tmp_path):
    mp.spawn(_ddp_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["changed"] and rank1["changed"]
    for (name, a), b in zip(rank0["state"].items(), rank1["state"].values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert load_irn(tmp_path / "ddp.pt").scale == 2  # rank 0 wrote the checkpoint


def test_experiment_is_registered_with_its_rule():
    from graftkit.experiments import protocol
    from graftkit.registry import load_all

    exp = load_all()["irn-vs-bicubic"]
    assert exp.method == "irn" and "psnr_sr_baseline" in exp.rule and "1.0 dB" in exp.rule
    gate = protocol.gate_metrics([protocol.Gate("curve_above_bicubic_or_flat", True, "")])
    # judged on the paired interval's lower ends of the sampled-z restore (the reference's test) minus bicubic
    # and minus the SR baseline; z = 0 is reported, not judged
    assert exp.verdict({"irn_minus_bicubic_ci_low": 1.0, "irn_minus_sr_baseline_ci_low": 0.01, **gate}) is True
    assert exp.verdict({"irn_minus_bicubic_ci_low": 0.99, "irn_minus_sr_baseline_ci_low": 0.5, **gate}) is False


def test_experiment_runs_end_to_end_at_a_tiny_size(tmp_path, monkeypatch):
    from graftkit.experiments import irn as experiment
    from graftkit.registry import RunContext, load_all

    tiny = {"scale": 2, "blocks": 1, "growth_channels": 4, "steps": 4, "batch_size": 2,
            "patch_size": 16, "lr": 2e-4, "sr_lr": 2e-4, "test_crop": 32, "curve_every": 1}
    monkeypatch.setitem(experiment.SETTINGS, "quick", tiny)
    monkeypatch.setattr(experiment, "CURVE_CROP", 32)  # the learning curve's validation crop
    outcome = load_all()["irn-vs-bicubic"].run(RunContext(mode="quick", seed=5, out_dir=tmp_path))
    metrics = outcome.metrics
    assert metrics["train_steps"] == 4
    for arm in ("irn_sampled", "irn_z0", "sr_baseline", "bicubic"):
        assert {f"psnr_{arm}", f"ssim_{arm}", f"psnr_{arm}_seed5", f"psnr_{arm}_seed6"} <= set(metrics)
        assert {f"psnr_{arm}_{name}_seed{s}" for name in experiment.TEST_PHOTOS for s in (5, 6)} <= set(metrics)
    # the summary is the mean over photos and seeds; the paired difference is per seed
    assert metrics["psnr_sr_baseline"] == pytest.approx((metrics["psnr_sr_baseline_seed5"]
                                                         + metrics["psnr_sr_baseline_seed6"]) / 2)
    differences = [metrics[f"psnr_irn_sampled_seed{s}"] - metrics[f"psnr_bicubic_seed{s}"] for s in (5, 6)]
    assert metrics["irn_minus_bicubic_mean"] == pytest.approx(sum(differences) / 2)
    assert min(differences) == pytest.approx(metrics["irn_minus_bicubic_ci_low"])
    assert "gate_curve_above_bicubic_or_flat" in metrics and "failed_gate" in metrics
    methods = [row["method"] for row in outcome.table]
    assert methods[0].startswith("IRN ×2, z ~ N(0, 1), mean of") and methods[1] == "IRN ×2, z = 0"
    assert methods[2].startswith("SR baseline")
    curve_rows = [m for m in methods if m.startswith("learning curve")]
    assert len(curve_rows) == 5  # steps 0..4 at curve_every=1
    assert all(experiment.VALIDATION_PHOTO in m for m in curve_rows)  # the curve never looks at a test photo
    assert metrics["irn_train_cpu_seconds"] > 0 and metrics["sr_train_cpu_seconds"] > 0
    assert outcome.figures and all(f.stat().st_size > 1000 for f in outcome.figures)
