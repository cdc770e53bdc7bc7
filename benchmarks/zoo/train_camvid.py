"""Train the CamVid zoo network (``fcn_small``) and write ``zoo/fcn_small_camvid.{pt,json,log}``.

Trains on the 367 training images of ``../shared/data/camvid`` at their stored 180x240 (random
rescale 0.5-2x, 180x240 crop padded with void, horizontal flip), monitors mIoU on the 101
validation images every epoch, and reports the final network on the 233 test images. The loss
is cross-entropy with void ignored and ENet class weights ``1 / ln(1.02 + p_c)`` (p_c: the class's
share of the labelled training pixels), so that poles, signs and pedestrians are not ignored.
A checkpoint is written atomically every epoch; rerunning the same command resumes from it.

    python benchmarks/zoo/train_camvid.py --epochs 80 --threads 1
    python benchmarks/zoo/train_camvid.py --time-batches 10        # speed probe only
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

import numpy as np
import torch

from adacal.atomic import atomic_write_text
from adacal.datasets import get_splits, make_loader
from adacal.datasets.segmentation import (
    CAMVID_CLASSES,
    CAMVID_IGNORE,
    IMAGENET_NORM,
    SegmentationArrays,
    SegmentationTransform,
    class_frequencies,
    load_camvid_npz,
)
from adacal.evaluate import evaluate_ann
from adacal.models import build_model
from adacal.tasks import get_task
from adacal.training import save_atomic, train_model

REPO = Path(__file__).resolve().parents[2]
MODEL = "fcn_small"
log = logging.getLogger("adacal.zoo")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "camvid")
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--out", type=Path, default=REPO / "zoo")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--enet-c", type=float, default=1.02, help="class weights 1/ln(c + p); 0 = unweighted")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--time-batches", type=int, default=0, help="only time this many training batches, then exit")
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


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    name = f"{MODEL}_camvid"
    _setup_logging(None if args.time_batches else args.out / f"{name}.log")
    torch.set_num_threads(args.threads)
    command = " ".join(shlex.quote(a) for a in ["python", os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])
    log.info("command: %s", command)
    splits = get_splits("camvid", args.data_dir, calib_size=1, seed=args.seed)
    val_images, val_masks = load_camvid_npz(args.data_dir / "val.npz")
    val = SegmentationArrays(val_images, val_masks, SegmentationTransform(IMAGENET_NORM, ignore_index=CAMVID_IGNORE))
    train_masks = load_camvid_npz(args.data_dir / "train.npz")[1]
    freq = class_frequencies(train_masks, 11, CAMVID_IGNORE)
    weights = (1.0 / np.log(args.enet_c + freq)).round(4).tolist() if args.enet_c > 0 else None
    log.info("class frequencies %s -> loss weights %s", freq.round(4).tolist(), weights)
    info = {"num_classes": 11, "ignore_index": CAMVID_IGNORE, "class_weights": weights}
    task = get_task("segmentation", **info)
    torch.manual_seed(args.seed)
    model = build_model(MODEL, num_classes=11)
    train_loader = make_loader(splits.train, args.batch_size, shuffle=True, seed=args.seed, drop_last=True)
    if args.time_batches:
        t0 = time.perf_counter()
        train_model(model, [b for _, b in zip(range(args.time_batches), train_loader)], task=task, epochs=1,
                    lr=args.lr, channels_last=True, log_every=0)
        per = (time.perf_counter() - t0) / args.time_batches
        log.info("%.2f s per batch -> %.0f s per epoch (%d batches)", per, per * len(train_loader), len(train_loader))
        return 0
    ckpt = args.out / "checkpoints" / f"{name}.ckpt"
    res = train_model(model, train_loader, task=task, epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                      checkpoint_path=ckpt, resume=args.resume, eval_loader=make_loader(val, 16), log_every=0,
                      schedule="onecycle", seed=args.seed, channels_last=True)
    model = model.float().to(memory_format=torch.contiguous_format).eval()
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    weights_path = args.out / f"{name}.pt"
    save_atomic(state, weights_path)
    t_eval = time.perf_counter()
    test = evaluate_ann(model, make_loader(splits.test, 16), task=get_task("segmentation", **info))
    wall = sum(h.get("epoch_time_s", 0.0) for h in res["history"]) + time.perf_counter() - t_eval
    manifest = {
        "model": MODEL,
        "file": weights_path.name,
        "sha256": _sha256(weights_path),
        "bytes": weights_path.stat().st_size,
        "num_classes": 11,
        "num_params": sum(p.numel() for p in model.parameters()),
        "dataset": "camvid",
        "test_miou": round(test["miou"], 2),
        "test_pixel_accuracy": round(test["pixel_accuracy"], 2),
        "test_iou_per_class": dict(zip(CAMVID_CLASSES, [round(v, 2) for v in test["iou_per_class"]])),
        "val_miou_final": round(res["history"][-1]["eval"]["miou"], 2),
        "epochs": args.epochs,
        "hyperparameters": {
            "batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay, "momentum": 0.9,
            "nesterov": True, "schedule": "onecycle (15% warm-up from lr/25, cosine to 0)", "seed": args.seed,
            "loss": "cross-entropy, void (11) ignored, ENet class weights 1/ln(c + p)", "enet_c": args.enet_c,
            "class_weights": weights,
            "augmentation": "random rescale 0.5-2.0 (torchvision ScaleJitter), 180x240 crop padded with void, "
                            "horizontal flip", "normalization": "ImageNet mean/std", "channels_last": True,
            "resolution": "180x240 (the shared copy's stored size)",
        },
        "command": command,
        "data": "CamVid (SegNet version, 11 classes, void ignored) from ../shared/data/camvid, downsampled 2x to "
                "180x240: trained on the 367 train images, validation mIoU on the 101 val images after every epoch "
                "(monitoring only, the last epoch is kept), test metrics on the 233 test images.",
        "torch_version": torch.__version__,
        "platform": f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}, {args.threads} thread(s), "
                    "2 CPU cores shared with other jobs",
        "wall_time_s": round(wall, 1),
        "resumed_from_epoch": res["resumed_from_epoch"],
        "log": f"zoo/{name}.log",
        "history": [{"epoch": int(h["epoch"]), "train_loss": round(h["train_loss"], 4),
                     "val_miou": round(h["eval"]["miou"], 2),
                     "val_pixel_accuracy": round(h["eval"]["pixel_accuracy"], 2),
                     "epoch_time_s": round(h["epoch_time_s"], 1)} for h in res["history"]],
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(args.out / f"{name}.json", json.dumps(manifest, indent=2) + "\n")
    log.info("done: test mIoU %.2f, pixel accuracy %.2f, weights %s (sha256 %s), wall %.0f s", test["miou"],
             test["pixel_accuracy"], weights_path, manifest["sha256"], wall)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
