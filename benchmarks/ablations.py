"""Design choices of the searches, measured on CIFAR-10 with the zoo ResNet-20.

Each variant is one :class:`adacal.pipeline.PipelineConfig` (a method plus overrides) converted
with the same calibration data and evaluated on the same seeded random subset of the test set:

  * ``phi_profile_thresholds``: ``largest_phi`` (the paper, default: all candidates at the
    thresholds fitted for 2·φ_target) against ``per_candidate`` (every φ candidate profiled at its
    own refit threshold) — energy against BurstFire, and accuracy at that energy (BurstFire at
    φ = 5 and 6 shows what uniform φ gives for the paper variant's extra energy);
  * the SSC budget: ``excess`` (ours: only sensitivity increases count, r = 1 takes only free
    compression) against ``sum`` (the paper: Σ S_i(ρ_i) ≤ r·Σ S_i(1)), and larger r.

Records are appended as they finish, so an interrupted run resumes.

    python benchmarks/ablations.py [--timesteps 4 8] [--test-size 2000] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import logging
import time

from _common import RESULTS, cifar10_splits, command, machine, random_subset, start, write_results, zoo_ann

from adacal.datasets import make_loader
from adacal.errors import BudgetError
from adacal.evaluate import evaluate
from adacal.pipeline import PipelineConfig, convert

# the SSC variants share one AdaFire network: φ searched at BurstFire's energy
PER_CANDIDATE = {"phi_profile_thresholds": "per_candidate"}
VARIANTS: dict[str, dict] = {
    "burstfire": {"method": "burstfire"},
    "burstfire φ=5": {"method": "burstfire", "phi_target": 5},
    "burstfire φ=6": {"method": "burstfire", "phi_target": 6},
    "adafire (per-candidate θ)": {"method": "adafire", "phi_profile_thresholds": "per_candidate"},
    "adafire (largest-φ θ, paper)": {"method": "adafire", "phi_profile_thresholds": "largest_phi"},
    "adafire+ssc excess r=1": {"method": "adafire+ssc", "sensitivity_budget": "excess", "sensitivity_ratio": 1.0,
        **PER_CANDIDATE},
    "adafire+ssc excess r=1.1": {"method": "adafire+ssc", "sensitivity_budget": "excess", "sensitivity_ratio": 1.1,
        **PER_CANDIDATE},
    "adafire+ssc excess r=1.3": {"method": "adafire+ssc", "sensitivity_budget": "excess", "sensitivity_ratio": 1.3,
        **PER_CANDIDATE},
    "adafire+ssc sum r=1 (paper)": {"method": "adafire+ssc", "sensitivity_budget": "sum", "sensitivity_ratio": 1.0,
        **PER_CANDIDATE},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--timesteps", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--test-size", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="ablations")
    args = ap.parse_args()
    start(args.threads)
    ann = zoo_ann(args.model)
    sp = cifar10_splits(256)
    subset = random_subset(sp.test, args.test_size)
    test = make_loader(subset, 250)
    calib = make_loader(sp.calib, 128)
    path = RESULTS / f"{args.out}.json"
    state = json.loads(path.read_text()) if path.exists() else {}
    records = state.get("records", [])
    done = {(r["model"], r["variant"], r["T"]) for r in records}

    def save() -> None:
        state.update({"command": command(), "machine": machine(), "records": records,
                      "test_images": len(subset), "calibration": "256 training images",
                      "data": "CIFAR-10 from ../shared/data/cifar10 (JPEG-sourced copy, q≈75)"})
        write_results(args.out, state, markdown(state))

    for T in args.timesteps:
        for name in args.variants:
            if (args.model, name, T) in done:
                continue
            cfg = PipelineConfig(**{"timesteps": T, "phi_target": 4, "profile_batch": max(16, 512 // T),
                                    **VARIANTS[name]})
            t0 = time.perf_counter()
            try:
                snn, rec = convert(ann, calib, config=cfg)
            except BudgetError as e:  # a budget no assignment meets is a result too
                records.append({"model": args.model, "variant": name, "T": T, "config": VARIANTS[name],
                                "infeasible": str(e)})
                logging.info("%s T=%d: infeasible (%s)", name, T, e)
                save()
                continue
            conv_s = time.perf_counter() - t0
            res = evaluate(snn, test, timesteps=T)
            records.append({"model": args.model, "variant": name, "T": T, "config": VARIANTS[name],
                            "accuracy": res["accuracy"], "energy_mj": res["energy_mj"],
                            "ann_energy_mj": res["ann_energy_mj"], "phi": rec["phi"], "rho": rec["rho"],
                            "search": {k: {"budget": v["budget"], "chosen": v["chosen"]}
                                       for k, v in rec.get("frontiers", {}).items()},
                            "convert_s": round(conv_s, 1)})
            logging.info("%s T=%d: %.2f%%, %.4f mJ", name, T, res["accuracy"], res["energy_mj"])
            save()
    save()


def markdown(state: dict) -> str:
    lines = ["# Search design choices (CIFAR-10, zoo ResNet-20)", "", f"Command: `{state['command']}`",
             f"Machine: {state['machine']}",
             f"Data: {state['data']}; {state['test_images']} random test images (seed 0); "
             f"calibration: {state['calibration']}", "",
             "| T | variant | accuracy % | energy mJ/img | energy vs BurstFire | mean φ | mean ρ |",
             "|---|---|---|---|---|---|---|"]
    burst = {r["T"]: r["energy_mj"] for r in state["records"] if r["variant"] == "burstfire"}
    for r in sorted(state["records"], key=lambda r: r["T"]):
        if "infeasible" in r:
            lines.append(f"| {r['T']} | {r['variant']} | infeasible: {r['infeasible']} | | | | |")
            continue
        rel = f"{r['energy_mj'] / burst[r['T']]:.2f}×" if r["T"] in burst else "–"
        phi = sum(r["phi"].values()) / len(r["phi"])
        rho = sum(r["rho"].values()) / len(r["rho"])
        lines.append(f"| {r['T']} | {r['variant']} | {r['accuracy']:.2f} | {r['energy_mj']:.4f} | {rel} | "
                     f"{phi:.2f} | {rho:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
