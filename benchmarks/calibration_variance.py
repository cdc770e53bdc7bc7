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

from _common import cifar10_splits, command, machine, random_subset, start, write_results, zoo_ann

from adacal.config import CalibrationConfig
from adacal.datasets import make_loader
from adacal.evaluate import evaluate
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
    start(args.threads)
    ann = zoo_ann(args.model)
    subset = random_subset(cifar10_splits(128).test, args.test_size)
    test = make_loader(subset, 250)
    rows = []
    for nb in args.batches:
        accs = []
        for draw in range(args.draws):
            sp = cifar10_splits(128 * nb, seed=draw + 1)
            calib = CalibrationConfig(num_batches=nb, correction_batches=nb)
            cfg = PipelineConfig(method=args.method, timesteps=args.T, phi_target=4, calibration=calib)
            snn, _ = convert(ann, make_loader(sp.calib, 128), config=cfg)
            accs.append(evaluate(snn, test, timesteps=args.T)["accuracy"])
            logging.info("%d batch(es), draw %d: %.2f%%", nb, draw, accs[-1])
        rows.append({"batches": nb, "images": 128 * nb, "accuracies": accs, "mean": statistics.mean(accs),
                     "stdev": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                     "range": max(accs) - min(accs)})
    state = {"command": command(), "machine": machine(), "model": args.model, "method": args.method,
             "T": args.T, "test_images": len(subset), "rows": rows,
             "data": "CIFAR-10 from ../shared/data/cifar10 (JPEG-sourced copy, q≈75)"}
    md = ["# Calibration-data variance", "", f"Command: `{state['command']}`", "",
          f"{args.method} at T={args.T}, zoo {args.model}, {len(subset)} random test images; each draw is a "
          "different random set of training images.", "",
          "| calibration images | accuracy per draw % | mean | stdev | range |", "|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['images']} ({r['batches']}×128) | {', '.join(f'{a:.2f}' for a in r['accuracies'])} | "
                  f"{r['mean']:.2f} | {r['stdev']:.2f} | {r['range']:.2f} |")
    write_results("calibration_variance", state, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
