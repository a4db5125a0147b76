"""graftkit macer train / certify: MACER or Gaussian-augmentation training, and randomized-smoothing
certification (Cohen et al.) of the trained classifier."""

from __future__ import annotations

import argparse
from pathlib import Path

from graftkit.errors import GraftkitError, check_input, check_int, seed_argument

DATA_HELP = ("'digits' (scikit-learn's 8x8 digits: train split for training, test split for certify) or an "
             ".npz file with 'images' (N,C,H,W) or (N,H,W), float in [0,1] or uint8, and 'labels' (N,)")


def _setup(args: argparse.Namespace):
    """Apply --threads and return the torch device of --device."""
    import torch

    if args.threads < 0:
        raise GraftkitError(f"--threads must be >= 0 (0: torch's default), got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.device
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise GraftkitError(f"unknown --device {name!r}: {err}") from err
    if device.type == "cpu":
        return device
    backend = getattr(torch, device.type, None)  # torch.cuda, torch.mps, torch.xpu, ...
    if backend is None or not backend.is_available():
        raise GraftkitError(f"--device {name}: this torch {torch.__version__} has no usable {device.type} device "
                            "(use --device cpu)")
    if device.index is not None and device.index >= backend.device_count():
        raise GraftkitError(f"--device {name}: there are only {backend.device_count()} {device.type} device(s)")
    return device


def _train(args: argparse.Namespace) -> int:
    import torch

    from graftkit.checkpoint import check_writable
    from vision_ext.macer import MacerConfig, TrainSettings, train_smoothed
    from vision_ext.macer.data import load_images
    from vision_ext.models import build_model

    config = MacerConfig(objective=args.objective, sigma=args.sigma, k=args.k, lbd=args.lbd, beta=args.beta,
                         gamma=args.gamma, warmup_epochs=args.warmup_epochs)
    for milestone in args.milestones:
        check_int("--milestones (epochs after which the learning rate drops)", milestone, minimum=1)
    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                             weight_decay=args.weight_decay, milestones=args.milestones, seed=args.seed)
    _check_data(args.data)
    images, labels = load_images(args.data, "train")
    if images.shape[2] != images.shape[3]:
        raise GraftkitError(f"images must be square, got {images.shape[2]}x{images.shape[3]}")
    num_classes = args.num_classes or int(labels.max()) + 1
    spec = {"arch": args.arch, "in_channels": int(images.shape[1]), "num_classes": num_classes,
            "input_size": int(images.shape[2])}
    if args.out.exists() and not args.resume:
        raise GraftkitError(f"{args.out} exists: pass --resume to continue it, or choose another --out")
    check_writable(args.out, what="--out")
    device = _setup(args)
    torch.manual_seed(args.seed)
    model = build_model(**spec).to(device)
    history = train_smoothed(model, images, labels, config, settings, checkpoint=args.out, resume=args.resume,
                             model_spec=spec, progress=not args.no_progress)
    if history:
        last = history[-1]
        print(f"epoch {last['epoch']}: l_C {last['classification_loss']:.4f}, l_R {last['robustness_loss']:.4f}, "
              f"{last['seconds']:.1f} s/epoch; checkpoint {args.out}")
    return 0


def _certify(args: argparse.Namespace) -> int:
    from graftkit.checkpoint import check_writable, load_checkpoint
    from vision_ext.macer import Smooth
    from vision_ext.macer.data import load_images
    from vision_ext.macer.reporting import plot_certified_accuracy, signed_radii, write_certify_tsv
    from vision_ext.macer.smoothing import certify_dataset, summarize_certification
    from vision_ext.models import build_model

    device = _setup(args)
    plot = args.plot or args.out.with_suffix(".png")
    check_writable(args.out, what="--out")
    check_writable(plot, what="--plot")
    check_input(args.model, "--model")
    _check_data(args.data)
    state = load_checkpoint(args.model, map_location=device)
    spec = state.get("model_spec") if isinstance(state, dict) else None
    if not spec or "model" not in state:
        raise GraftkitError(f"{args.model} is not a checkpoint of `graftkit macer train` (no model_spec)")
    model = build_model(**spec).to(device)
    model.load_state_dict(state["model"])
    images, labels = load_images(args.data, "test")
    expected = (spec["in_channels"], spec["input_size"], spec["input_size"])
    if tuple(images.shape[1:]) != expected:
        raise GraftkitError(f"the model expects images of shape {expected} (C, H, W), but {args.data} has "
                            f"{tuple(images.shape[1:])}")
    if labels.max() >= spec["num_classes"]:
        raise GraftkitError(f"labels go up to {int(labels.max())} but the model has {spec['num_classes']} classes")
    if args.skip < 1 or (args.max is not None and args.max < 1):
        raise GraftkitError("--skip and --max must be >= 1")
    images, labels = images[:: args.skip][: args.max], labels[:: args.skip][: args.max]
    sigma = args.sigma if args.sigma is not None else state["config"]["sigma"]
    smooth = Smooth(model, spec["num_classes"], sigma, seed=args.seed)
    rows = certify_dataset(smooth, images.to(device), labels, args.n0, args.n, args.alpha, args.batch_size,
                           progress=not args.no_progress)
    for row in rows:  # indices into the file, not into the strided subset
        row["idx"] *= args.skip
    write_certify_tsv(rows, args.out)
    summary = summarize_certification(rows)
    plot_certified_accuracy({f"σ={sigma}": signed_radii(rows)}, plot,
                            title=f"{args.model.name}: n={args.n}, α={args.alpha}, {len(rows)} images")
    print(f"certified {len(rows)} images, σ={sigma}, n0={args.n0}, n={args.n}, α={args.alpha}")
    print("radius  certified accuracy")
    for radius, acc in zip(summary["grid"], summary["certified_accuracy"]):
        print(f"{radius:6.2f}  {acc:.4f}")
    print(f"ACR {summary['acr']:.4f}")
    print(f"wrote {args.out} and {plot}")
    return 0


def _check_data(data: str) -> None:
    """--data names the bundled digits or an .npz file: the file must be a file."""
    if data != "digits":
        check_input(data, "--data")


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    """Where and how a command computes: the options ``train`` and ``certify`` share."""
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads; 1 suits small models on shared cores (default: 0, torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("macer", help="MACER robust training and randomized-smoothing certification",
                              description=__doc__.splitlines()[0] + " " + __doc__.splitlines()[1])
    sub = p.add_subparsers(dest="macer_command", metavar="COMMAND", required=True)

    t = sub.add_parser("train", help="train a base classifier with MACER or Gaussian augmentation",
                       description="Train LeNet / ResNet-20 / ResNet-110 on noisy copies of the images with "
                                   "MACER (Zhai et al. 2020) or Cohen et al.'s Gaussian augmentation. The "
                                   "checkpoint is written atomically after every epoch; --resume continues it.")
    t.add_argument("--data", default="digits", help=DATA_HELP + " (default: digits)")
    t.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    t.add_argument("--resume", action="store_true", help="continue from --out if it exists")
    t.add_argument("--arch", default="lenet", choices=("lenet", "resnet20", "resnet110"), help="(default: lenet)")
    t.add_argument("--num-classes", type=int, default=None, help="default: largest label + 1")
    t.add_argument("--objective", default="macer", choices=("macer", "gaussian"), help="(default: macer)")
    t.add_argument("--sigma", type=float, default=0.25, help="noise level σ (default: 0.25)")
    t.add_argument("--k", type=int, default=16, help="noise samples per input (default: 16)")
    t.add_argument("--lbd", type=float, default=12.0, help="λ, robustness-loss weight (default: 12)")
    t.add_argument("--beta", type=float, default=16.0, help="β, inverse softmax temperature (default: 16)")
    t.add_argument("--gamma", type=float, default=8.0, help="γ, hinge on the radius surrogate (default: 8)")
    t.add_argument("--warmup-epochs", type=int, default=0, help="epochs with λ = 0 first (default: 0)")
    t.add_argument("--epochs", type=int, default=440, help="(default: 440, the reference's)")
    t.add_argument("--batch-size", type=int, default=64, help="(default: 64)")
    t.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (default: 0.01)")
    t.add_argument("--momentum", type=float, default=0.9, help="(default: 0.9)")
    t.add_argument("--weight-decay", type=float, default=5e-4, help="(default: 5e-4)")
    t.add_argument("--milestones", type=int, nargs="*", default=[200, 400],
                   help="epochs after which the learning rate is multiplied by 0.1 (default: 200 400)")
    t.add_argument("--seed", type=seed_argument, default=0, help="(default: 0)")
    _add_run_args(t)
    t.set_defaults(func=_train)

    c = sub.add_parser("certify", help="certify a trained classifier (Cohen et al.'s CERTIFY)",
                       description="Certify every image of --data (test split of digits) with Cohen et al.'s "
                                   "Monte Carlo algorithm; write the per-example TSV and a plot of certified "
                                   "accuracy against radius; print certified accuracy at radii 0, 0.25, ... and "
                                   "the average certified radius (ACR).")
    c.add_argument("--model", type=Path, required=True, help="checkpoint of `graftkit macer train`")
    c.add_argument("--data", default="digits", help=DATA_HELP + " (default: digits)")
    c.add_argument("--out", type=Path, required=True, help="TSV to write (idx label predict radius correct time)")
    c.add_argument("--plot", type=Path, default=None, help="PNG of certified accuracy (default: OUT with .png)")
    c.add_argument("--sigma", type=float, default=None, help="noise level σ (default: the checkpoint's)")
    c.add_argument("--n0", type=int, default=100, help="selection samples (default: 100)")
    c.add_argument("--n", type=int, default=100_000, help="estimation samples (default: 100000)")
    c.add_argument("--alpha", type=float, default=0.001, help="failure probability (default: 0.001)")
    c.add_argument("--batch-size", type=int, default=1000, help="noisy images per forward pass (default: 1000)")
    c.add_argument("--skip", type=int, default=1, help="certify every SKIP-th image (default: 1)")
    c.add_argument("--max", type=int, default=None, help="certify at most MAX images")
    c.add_argument("--seed", type=seed_argument, default=0, help="noise seed; image i uses seed + i (default: 0)")
    _add_run_args(c)
    c.set_defaults(func=_certify)
