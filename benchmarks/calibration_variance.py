"""How much a conversion depends on which training images calibrate it, and on how many.

BurstFire (φ=4: thresholds + bias correction, no search) is converted from several random draws
of calibration images (``get_splits(seed=...)``) using 1 batch and 8 batches of 128 images for
both the threshold fit and the bias correction, and evaluated on the same seeded random subset of
the CIFAR-10 test set. The spread across draws is the noise floor under every comparison of
methods that calibrate from one batch.

    python benchmarks/calibration_variance.py [--T 4] [--draws 5] [--batches 1 8] [--test-size 2000]
"""
from __future__ import annotations

import argparse
import logging
import statistics

import torch
from _common import REPO, SHARED, command, machine, write_results

from adacal.config import CalibrationConfig
from adacal.datasets import get_splits, make_loader
from adacal.evaluate import evaluate
from adacal.models import build_model, load_state_dict_file
from adacal.pipeline import PipelineConfig, convert


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--method", default="burstfire")
    ap.add_argument("--T", type=int, default=4)
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--test-size", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    ann = load_state_dict_file(build_model(args.model, 10), REPO / "zoo" / f"{args.model}_cifar10.pt").eval()
    data = SHARED / "data" / "cifar10"
    test_split = get_splits("cifar10", data, calib_size=128, augment=False).test
    pick = torch.randperm(len(test_split), generator=torch.Generator().manual_seed(0))[: args.test_size]
    test = make_loader(torch.utils.data.Subset(test_split, pick.tolist()), 250)
    rows = []
    for nb in args.batches:
        accs = []
        for draw in range(args.draws):
            sp = get_splits("cifar10", data, calib_size=128 * nb, seed=draw + 1, augment=False)
            calib = CalibrationConfig(num_batches=nb, correction_batches=nb)
            cfg = PipelineConfig(method=args.method, timesteps=args.T, phi_target=4, calibration=calib)
            snn, _ = convert(ann, make_loader(sp.calib, 128), config=cfg)
            accs.append(evaluate(snn, test, timesteps=args.T)["accuracy"])
            logging.info("%d batch(es), draw %d: %.2f%%", nb, draw, accs[-1])
        rows.append({"batches": nb, "images": 128 * nb, "accuracies": accs, "mean": statistics.mean(accs),
                     "stdev": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                     "range": max(accs) - min(accs)})
    state = {"command": command(), "machine": machine(), "model": args.model, "method": args.method,
             "T": args.T, "test_images": len(pick), "rows": rows,
             "data": "CIFAR-10 from ../shared/data/cifar10 (JPEG-sourced copy, q≈75)"}
    md = ["# Calibration-data variance", "", f"Command: `{state['command']}`", "",
          f"{args.method} at T={args.T}, zoo {args.model}, {len(pick)} random test images; each draw is a "
          "different random set of training images.", "",
          "| calibration images | accuracy per draw % | mean | stdev | range |", "|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['images']} ({r['batches']}×128) | {', '.join(f'{a:.2f}' for a in r['accuracies'])} | "
                  f"{r['mean']:.2f} | {r['stdev']:.2f} | {r['range']:.2f} |")
    write_results("calibration_variance", state, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
