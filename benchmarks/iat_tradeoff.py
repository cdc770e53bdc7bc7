"""IAT accuracy against mean timesteps on the full CIFAR-10 test set, swept over α_base and score.

Converts the zoo ResNet-20 (adafire+ssc by default) at each T, records every step's output once
on the 10 000 test images and on held-in training images (the IAT fit data), then replays exit
policies offline (identical to the runtime exit, see adacal.iat.offline) for each α_base and
score kind. The fixed-timestep baseline is the same SNN stopped at t for every input. Writes
``iat_tradeoff.json/.md`` and ``iat_tradeoff.png``.

    python benchmarks/iat_tradeoff.py [--timesteps 4 8] [--fit-images 2560] [--threads 1]
"""
from __future__ import annotations

import argparse
import logging

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from _common import RESULTS, cifar10_splits, command, machine, start, write_results, zoo_ann  # noqa: E402

from adacal.datasets import make_loader  # noqa: E402
from adacal.iat.offline import fixed_T_accuracy, sweep_alpha_base  # noqa: E402
from adacal.pipeline import PipelineConfig, convert  # noqa: E402
from adacal.report.plots import save_figure  # noqa: E402

ALPHAS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
SCORES = ("entropy", "confidence")


@torch.no_grad()
def per_step(snn, loader, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    outs, labels = [], []
    for x, y in loader:
        outs.append(snn.run(x, T))
        labels.append(y)
    return torch.cat(outs, 1), torch.cat(labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--method", default="adafire+ssc")
    ap.add_argument("--timesteps", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--fit-images", type=int, default=2560, help="training images the IAT statistics come from")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    start(args.threads)
    ann = zoo_ann(args.model)
    sp = cifar10_splits(args.fit_images)
    calib = make_loader(sp.calib, 128)
    test = make_loader(sp.test, 250)
    runs = []
    for T in args.timesteps:
        cfg = PipelineConfig(method=args.method, timesteps=T, phi_target=4, profile_batch=max(16, 512 // T))
        snn, _ = convert(ann, calib, config=cfg)
        fit_out, fit_y = per_step(snn, calib, T)
        test_out, test_y = per_step(snn, test, T)
        fixed = [100 * a for a in fixed_T_accuracy(test_out, test_y)]
        curves = {
            kind: [{"alpha_base": a, "mean_timesteps": m, "accuracy": 100 * acc}
                   for a, m, acc in sweep_alpha_base(test_out, test_y, fit_out, fit_y, ALPHAS, score=kind)]
            for kind in SCORES
        }
        runs.append({"T": T, "fixed_t_accuracy": fixed, "curves": curves})
        logging.info("T=%d fixed-t accuracy %s", T, [round(a, 2) for a in fixed])
    state = {"command": command(), "machine": machine(), "model": args.model, "method": args.method,
             "test_images": len(sp.test), "fit_images": len(sp.calib),
             "data": "CIFAR-10 from ../shared/data/cifar10 (JPEG-sourced copy, q≈75); IAT fitted on training images",
             "runs": runs}
    write_results("iat_tradeoff", state, markdown(state))
    plot(state)


def markdown(state: dict) -> str:
    lines = ["# IAT: accuracy against mean timesteps (CIFAR-10, full test set)", "",
             f"Command: `{state['command']}`", f"Machine: {state['machine']}",
             f"Model: zoo {state['model']}, {state['method']}; {state['test_images']} test images; "
             f"IAT statistics from {state['fit_images']} training images.", ""]
    for run in state["runs"]:
        T = run["T"]
        lines += [f"## T = {T}", "", "Same SNN stopped at t for every input: "
                  + ", ".join(f"t={t + 1}: {a:.2f}%" for t, a in enumerate(run["fixed_t_accuracy"])), "",
                  "| score | α_base | mean timesteps | accuracy % | Δ vs all T steps |", "|---|---|---|---|---|"]
        full = run["fixed_t_accuracy"][-1]
        for kind, curve in run["curves"].items():
            for p in curve:
                lines.append(f"| {kind} | {p['alpha_base']} | {p['mean_timesteps']:.2f} | {p['accuracy']:.2f} | "
                             f"{p['accuracy'] - full:+.2f} |")
        lines.append("")
    return "\n".join(lines)


def plot(state: dict) -> None:
    fig, axes = plt.subplots(1, len(state["runs"]), figsize=(5.5 * len(state["runs"]), 4), squeeze=False)
    for ax, run in zip(axes[0], state["runs"]):
        T = run["T"]
        ax.plot(range(1, T + 1), run["fixed_t_accuracy"], "k-o", label="every input stops at t")
        for kind, curve in run["curves"].items():
            ax.plot([p["mean_timesteps"] for p in curve], [p["accuracy"] for p in curve], "-s", ms=4,
                    label=f"IAT, {kind} score (α_base swept)")
        ax.axvline(0.6 * T, color="grey", ls=":", label="60% of T")
        ax.set(title=f"T = {T}", xlabel="mean timesteps", ylabel="test accuracy (%)")
        ax.set_ylim(bottom=max(0.0, min(run["fixed_t_accuracy"]) - 5))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"IAT trade-off, zoo {state['model']} {state['method']} on CIFAR-10")
    fig.tight_layout()
    save_figure(fig, RESULTS / "iat_tradeoff.png")
    plt.close(fig)


if __name__ == "__main__":
    main()
