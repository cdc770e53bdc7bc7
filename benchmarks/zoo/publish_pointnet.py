"""Copy a PointNet trained with ``adacal train`` into the zoo, with its own manifest.

Reads ``RUN/model.pt`` and ``RUN/train.json`` (written by ``adacal train --out RUN``) and writes
``zoo/<name>.pt`` (the state_dict, unchanged) and ``zoo/<name>.json``: the training command, data,
model options, hyper-parameters, final test metrics, sha256 and the per-epoch log.

    python benchmarks/zoo/publish_pointnet.py runs/pointnet_modelnet10 pointnet_cls_modelnet10 \\
        --data "ModelNet10 from ../shared/data/pointcloud/modelnet10 (...)"
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="folder written by adacal train --out")
    ap.add_argument("name", help="zoo name: <model>_<dataset>")
    ap.add_argument("--data", required=True, help="what the data was (source, splits, sizes)")
    args = ap.parse_args()
    import torch

    from adacal.atomic import atomic_write_json

    train = json.loads((args.run / "train.json").read_text())
    weights = args.run / "model.pt"
    state = torch.load(weights, map_location="cpu", weights_only=True)
    dest = REPO / "zoo" / f"{args.name}.pt"
    shutil.copyfile(weights, dest)
    digest = hashlib.sha256(dest.read_bytes()).hexdigest()
    history = train.get("history") or []
    manifest = {
        "file": dest.name,
        "bytes": dest.stat().st_size,
        "sha256": digest,
        "model": train["model"]["name"],
        "model_options": train["model"].get("options") or {},
        "num_params": int(sum(v.numel() for k, v in state.items() if not k.endswith(("running_mean", "running_var",
                                                                                       "num_batches_tracked")))),
        "dataset": train["data"]["dataset"],
        "data": args.data,
        "data_options": train["data"].get("options") or {},
        "task": train.get("task"),
        "command": train.get("command"),
        "hyperparameters": {**train.get("config", {}), "optimizer": "SGD, momentum 0.9, Nesterov",
                            "augmentation": "random point subset, per-axis scale U(2/3, 3/2), shift U(-0.2, 0.2)"},
        "test_metrics": train.get("final_eval"),
        "note": "test metrics are logged after every epoch for information only; the last epoch is kept "
                "(no selection on test data)",
        "epochs": train.get("epochs"),
        "wall_time_s": train.get("train_time_s"),
        "torch_version": torch.__version__,
        "platform": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "training_log": [{"epoch": int(h["epoch"]), "train_loss": round(h["train_loss"], 5), "lr": h["lr"],
                          "eval": h.get("eval"), "seconds": round(h.get("epoch_time_s", 0.0), 1)} for h in history],
    }
    atomic_write_json(REPO / "zoo" / f"{args.name}.json", manifest)
    print(f"wrote {dest} ({manifest['bytes']} bytes, sha256 {digest[:16]}…) and {args.name}.json")


if __name__ == "__main__":
    main()
