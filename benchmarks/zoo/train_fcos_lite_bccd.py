"""Train the zoo detector ``zoo/fcos_lite_bccd.pt`` from scratch on BCCD (CPU) and write its manifest.

FCOS-lite (:mod:`adacal.models.detection`) on the 292 BCCD trainval images resized to 256x192,
random horizontal/vertical flips, SGD + Nesterov with a one-cycle schedule (``adacal.training``),
evaluated (COCO mAP, torchmetrics) on the 72 test images after every epoch for the log only (no
selection: the last epoch's weights are kept). A checkpoint is written atomically every epoch;
rerunning the same command resumes from it.

    python benchmarks/zoo/train_fcos_lite_bccd.py --epochs 60 --threads 1
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import REPO, SHARED, command  # noqa: E402

from adacal.atomic import atomic_write_text  # noqa: E402
from adacal.config import DataSpec  # noqa: E402
from adacal.jobs import load_data  # noqa: E402
from adacal.models import build_model  # noqa: E402
from adacal.training import save_atomic, train_model  # noqa: E402

log = logging.getLogger("adacal.zoo")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=SHARED / "data" / "detection" / "bccd")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "zoo")
    args = p.parse_args(argv)
    name = "fcos_lite_bccd"
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(args.out / f"train_{name}.log")])
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load_data(DataSpec("bccd", data_dir=str(args.data_dir), calib_size=32, batch_size=8))
    model = build_model("fcos_lite", data.num_classes)
    data.task.bind_model(model)
    t0 = time.perf_counter()
    ckpt = args.out / "checkpoints" / f"{name}.ckpt"
    ckpt.parent.mkdir(exist_ok=True)
    out = train_model(model, data.train_loader(args.batch_size, args.seed), task=data.task, epochs=args.epochs,
                      lr=args.lr, weight_decay=args.weight_decay, checkpoint_path=ckpt, eval_loader=data.test,
                      log_every=0, seed=args.seed)
    model.eval()
    weights = args.out / f"{name}.pt"
    save_atomic(model.state_dict(), weights)
    final = out["final_eval"] or {}
    manifest = {
        "model": "fcos_lite", "dataset": "bccd", "num_classes": data.num_classes, "file": weights.name,
        "bytes": weights.stat().st_size, "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "command": command(), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "data": "BCCD (GitHub Shenggan/BCCD_Dataset, ../shared/data/detection/bccd): trained on the 292 trainval "
                "images of train.npz, evaluated on the 72 test images of test.npz; VOC 1-based boxes converted to "
                "0-based continuous, images resized 640x480 -> 256x192",
        "hyperparameters": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                            "weight_decay": args.weight_decay, "optimizer": "SGD, momentum 0.9, Nesterov",
                            "schedule": "onecycle", "augmentation": "random horizontal and vertical flips",
                            "input": "256x192, ImageNet mean/std", "seed": args.seed, "threads": args.threads},
        "num_params": sum(p.numel() for p in model.parameters()),
        "test_map_50": final.get("map_50"), "test_map": final.get("map"), "test_ap50_per_class": final.get(
            "ap50_per_class"),
        "train_time_s": round(out["train_time_s"], 1), "wall_time_s": round(time.perf_counter() - t0, 1),
        "resumed_from_epoch": out["resumed_from_epoch"], "torch_version": torch.__version__,
        "training_log": f"train_{name}.log",
        "history": [{"epoch": int(h["epoch"]), "train_loss": round(h["train_loss"], 4),
                     "test_map_50": round((h.get("eval") or {}).get("map_50", float("nan")), 2),
                     "test_map": round((h.get("eval") or {}).get("map", float("nan")), 2)} for h in out["history"]],
    }
    atomic_write_text(args.out / f"{name}.json", json.dumps(manifest, indent=2))
    log.info("wrote %s (mAP@.5 %.2f, mAP %.2f)", weights, final.get("map_50", float("nan")),
             final.get("map", float("nan")))


if __name__ == "__main__":
    main()
