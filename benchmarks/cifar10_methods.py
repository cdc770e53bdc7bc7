"""CIFAR-10 accuracy and energy of every conversion method against the ANN, on the real test set.

For each method (plain, calibration, burstfire φ=4, adafire φ_target=4, adafire+ssc) and each T,
the zoo ANN is converted with calibration data from the TRAINING split and evaluated on the
test images; adafire+ssc is also run with IAT (early exit, policy fitted on training batches) at
every T. Sensitivity profiling uses max(16, 512 // T) calibration images. Records are appended
to the result file as they finish, so an interrupted run resumes where it stopped.

    python benchmarks/cifar10_methods.py --model resnet20 [--timesteps 1 2 4 8 16 32] [--test-size 10000]
"""
from __future__ import annotations

import argparse
import json
import logging
import time

import torch
from _common import REPO, RESULTS, SHARED, command, machine, write_results

from adacal.datasets import get_splits, make_loader
from adacal.evaluate import evaluate, fit_exit_policy
from adacal.models import build_model, load_state_dict_file
from adacal.pipeline import PipelineConfig, convert
from adacal.training import evaluate_classifier

METHODS = ("plain", "calibration", "burstfire", "adafire", "adafire+ssc")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--weights", default=None, help="state_dict (default: zoo/<model>_cifar10.pt)")
    ap.add_argument("--data-dir", default=str(SHARED / "data" / "cifar10"))
    ap.add_argument("--timesteps", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--test-size", type=int, default=10000)
    ap.add_argument("--calib-size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--profile-rows", type=int, default=512,
                    help="sensitivity profiling uses max(16, rows // T) calibration images")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="cifar10_methods")
    ap.add_argument("--plots-only", action="store_true", help="redraw the plots from the result file and exit")
    args = ap.parse_args()
    if args.plots_only:
        plots(json.loads((RESULTS / f"{args.out}.json").read_text()), args.out)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ckpt = args.weights or REPO / "zoo" / f"{args.model}_cifar10.pt"
    ann = load_state_dict_file(build_model(args.model, 10), ckpt).eval()
    sp = get_splits("cifar10", args.data_dir, calib_size=args.calib_size, augment=False)
    test = torch.utils.data.Subset(sp.test, range(min(args.test_size, len(sp.test))))
    test_loader = make_loader(test, args.batch)
    calib_loader = make_loader(sp.calib, 128)
    path = RESULTS / f"{args.out}.json"
    state = json.loads(path.read_text()) if path.exists() else {}
    records = state.get("records", [])
    done = {(r["model"], r["method"], r["T"], r.get("iat", False)) for r in records}
    if "ann" not in state:
        t0 = time.perf_counter()
        state["ann"] = {"accuracy": evaluate_classifier(ann, test_loader), "seconds": time.perf_counter() - t0}
    ann_acc = state["ann"]["accuracy"]

    def save() -> None:
        state.update({"command": command(), "machine": machine(), "records": records,
                      "test_images": len(test), "calibration": f"{args.calib_size} training images",
                      "data": "CIFAR-10 from ../shared/data/cifar10 (JPEG-sourced copy, q≈75)"})
        write_results(args.out, state, markdown(state))
        plots(state, args.out)

    for T in args.timesteps:
        for method in args.methods:
            need_fixed = (args.model, method, T, False) not in done
            need_iat = method == "adafire+ssc" and (args.model, method + "+iat", T, True) not in done
            if not (need_fixed or need_iat):
                continue
            cfg = PipelineConfig(method=method, timesteps=T, phi_target=4,
                                 profile_batch=max(16, args.profile_rows // T))
            t0 = time.perf_counter()
            snn, rec = convert(ann, calib_loader, config=cfg)
            conv_s = time.perf_counter() - t0
            if need_fixed:
                res = evaluate(snn, test_loader, timesteps=T)
                records.append({"model": args.model, "method": method, "T": T, "accuracy": res["accuracy"],
                                "energy_mj": res["energy_mj"], "mean_timesteps": res["mean_timesteps"],
                                "ann_accuracy": ann_acc, "ann_energy_mj": res["ann_energy_mj"],
                                "phi": rec["phi"], "rho": rec["rho"], "stage_times": rec["stage_times"],
                                "phi_profile_thresholds": cfg.phi_profile_thresholds,
                                "convert_s": conv_s, "eval_s": res["seconds"]})
                logging.info("%s T=%d: %.2f%% (ANN %.2f%%), %.4f mJ", method, T, res["accuracy"], ann_acc,
                             res["energy_mj"])
                save()
            if need_iat:
                policy = fit_exit_policy(snn, calib_loader, timesteps=T, num_batches=100)
                res = evaluate(snn, test_loader, timesteps=T, exit_policy=policy)
                records.append({"model": args.model, "method": method + "+iat", "T": T, "iat": True,
                                "accuracy": res["accuracy"], "energy_mj": res["energy_mj"],
                                "mean_timesteps": res["mean_timesteps"], "ann_accuracy": ann_acc,
                                "ann_energy_mj": res["ann_energy_mj"], "exit_histogram": res["exit_histogram"],
                                "alpha_base": policy.alpha_base, "eval_s": res["seconds"]})
                save()
    save()


def plots(state: dict, name: str) -> None:
    """Accuracy vs T (IAT at its mean timesteps) and accuracy vs energy, with the ANN as a line."""
    from adacal.report.plots import plot_accuracy_vs_energy, plot_accuracy_vs_timesteps, save_figure

    runs = [{"method": r["method"].removesuffix("+iat"), "iat": r.get("iat", False), "timesteps": r["T"],
             "mean_timesteps": r["mean_timesteps"], "accuracy": r["accuracy"],
             "energy_ratio": r["energy_mj"] / r["ann_energy_mj"]}
            for r in state["records"] if r["method"] != "plain"]  # plain is far below the rest
    if not runs:
        return
    ann = state["ann"]["accuracy"]
    ax = plot_accuracy_vs_timesteps(runs, ann_accuracy=ann)
    for r in runs:  # IAT points sit at their mean timesteps: name the T each one ran under
        if r["iat"]:
            ax.annotate(f"T={r['timesteps']}", (r["mean_timesteps"], r["accuracy"]), textcoords="offset points",
                        xytext=(5, -3), fontsize=7, color="tab:purple")
    ax.set_title("CIFAR-10, zoo ResNet-20: accuracy vs T (plain omitted; IAT at its mean timesteps)")
    save_figure(ax.figure, RESULTS / f"{name}_accuracy.png")
    ax = plot_accuracy_vs_energy(runs, ann_accuracy=ann)
    ax.set_title("CIFAR-10, zoo ResNet-20: accuracy vs energy (plain omitted)")
    save_figure(ax.figure, RESULTS / f"{name}_energy.png")
    import matplotlib.pyplot as plt

    plt.close("all")


def markdown(state: dict) -> str:
    lines = ["# CIFAR-10: conversion methods", "", f"Command: `{state['command']}`", f"Machine: {state['machine']}",
             f"Data: {state['data']}; {state['test_images']} test images; calibration: {state['calibration']}",
             f"ANN accuracy: {state['ann']['accuracy']:.2f}%", "",
             "| model | method | T | accuracy % | Δ vs ANN | energy mJ/img | energy vs ANN | mean timesteps |",
             "|---|---|---|---|---|---|---|---|"]
    order = {m: i for i, m in enumerate((*METHODS, "adafire+ssc+iat"))}
    for r in sorted(state["records"], key=lambda r: (r["model"], r["T"], order.get(r["method"], 99))):
        lines.append(f"| {r['model']} | {r['method']} | {r['T']} | {r['accuracy']:.2f} | "
                     f"{r['accuracy'] - r['ann_accuracy']:+.2f} | {r['energy_mj']:.4f} | "
                     f"{r['energy_mj'] / r['ann_energy_mj']:.2f}× | {r['mean_timesteps']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
