"""Early exit on the full CIFAR-10 test set: every exit rule beside the oracle, accuracy against mean timesteps.

For each T the zoo ResNet-20 is converted (``--method``, BurstFire φ=4 by default: no search, so the
exit rules alone differ), and every step's output is recorded once on the 10 000 test images, on
the calibration images (what the paper's eq. 15 statistics are fitted on) and on ``--holdout``
other training images (what the risk-controlled rule is certified on). Rules are then replayed
offline (identical to the runtime exit, see ``adacal.iat.offline``):

* **oracle**: each input stops at the first step after which its running prediction never changes
  (no loss; the limit of early exit);
* **risk**: the rule certified to lose at most ε accuracy points against full T with confidence
  1 − δ (``adacal.iat.calibrate_exit``: lead of the running sum over λ per remaining step,
  Learn-then-Test on the held-out images), for several ε; the realised drop on the test set is
  checked against ε;
* **eq. 15**: the paper's α schedule (entropy statistics of the calibration images), α_base swept;
* **every input stops at t**: the fixed-timestep baseline of the same network.

Per-step outputs are cached in ``runs/benchmarks/iat/`` (ignored by git), so an interrupted run resumes.

    python benchmarks/iat_tradeoff.py [--timesteps 8 16 32 4] [--holdout 4096] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import logging
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from _common import REPO, RESULTS, SHARED, command, machine, start, write_results, zoo_ann  # noqa: E402

from adacal.config import DataSpec  # noqa: E402
from adacal.iat import ExitPolicy, evaluate_exits, fixed_T_accuracy  # noqa: E402
from adacal.iat.policy import ExitStatistics  # noqa: E402
from adacal.iat.risk import calibrate_exit, default_grid, oracle_exit_steps, schedule_thresholds  # noqa: E402
from adacal.jobs import load_data  # noqa: E402
from adacal.pipeline import PipelineConfig, convert  # noqa: E402
from adacal.report.plots import save_figure  # noqa: E402

ALPHAS = (0.0, 0.3, 0.6, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
EPSILONS = (0.1, 0.2, 0.3, 0.5, 1.0)  # accuracy points
CACHE = REPO / "runs" / "benchmarks" / "iat"


@torch.no_grad()
def per_step(snn: Any, loader: Any, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    outs, labels = [], []
    for x, y in loader:
        outs.append(snn.run(x, T))
        labels.append(y)
    return torch.cat(outs, 1), torch.cat(labels)


def record_outputs(args: argparse.Namespace, T: int, data: Any, ann: Any) -> dict[str, torch.Tensor]:
    path = CACHE / f"{args.method}_T{T}_holdout{args.holdout}.pt"
    if path.exists():
        return torch.load(path)
    cfg = PipelineConfig(method=args.method, timesteps=T, phi_target=4, profile_batch=max(16, 512 // T))
    snn, _ = convert(ann, data.calib, config=cfg, holdout_data=data.holdout)
    out: dict[str, torch.Tensor] = {}
    for split, loader in (("calib", data.calib), ("holdout", data.holdout), ("test", data.test)):
        out[f"{split}_out"], out[f"{split}_y"] = per_step(snn, loader, T)
        logging.info("T=%d: recorded %s outputs %s", T, split, tuple(out[f"{split}_out"].shape))
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(out, tmp)
    tmp.replace(path)
    return out


def analyse(T: int, rec: dict[str, torch.Tensor], delta: float) -> dict[str, Any]:
    test, y = rec["test_out"], rec["test_y"]
    fixed = [100 * a for a in fixed_T_accuracy(test, y)]
    full = fixed[-1]
    steps = oracle_exit_steps(test)
    oracle = steps.double()
    run: dict[str, Any] = {"T": T, "test_images": int(y.numel()), "holdout_images": int(rec["holdout_y"].numel()),
                           "fixed_t_accuracy": fixed, "full_accuracy": full,
                           "oracle": {"mean_timesteps": float(oracle.mean()), "accuracy": full,
                                      "histogram": torch.bincount(steps - 1, minlength=T).tolist()}}
    risk = []
    for eps in EPSILONS:
        for loss in ("error", "flip"):
            if loss == "flip" and eps != 0.3:
                continue
            policy, cert = calibrate_exit(rec["holdout_out"], rec["holdout_y"], epsilon=eps / 100, delta=delta,
                                          loss=loss)
            res = evaluate_exits(test, policy, y)
            acc = 100 * float(res.accuracy)
            risk.append({"epsilon": eps, "delta": delta, "loss": loss, "lambda": cert.to_dict()["chosen"],
                         "certified": cert.certified, "mean_timesteps": res.mean_exit_step, "accuracy": acc,
                         "drop": full - acc, "within_epsilon": full - acc <= eps + 1e-9,
                         "vs_oracle": res.mean_exit_step / float(oracle.mean()),
                         "holdout_mean_timesteps": cert.mean_steps[cert.grid.index(cert.chosen)]
                         if cert.certified else float(T),
                         "histogram": list(res.histogram)})
    run["risk"] = risk
    run["family_limit"] = family_limit(test, y, full)
    stats = ExitStatistics.from_outputs(rec["calib_out"], rec["calib_y"])
    base = ExitPolicy.from_statistics(stats, alpha_base=0.6)
    eq15 = []
    for a in ALPHAS:
        res = evaluate_exits(test, base.with_alpha_base(a), y)
        eq15.append({"alpha_base": a, "mean_timesteps": res.mean_exit_step, "accuracy": 100 * float(res.accuracy),
                     "drop": full - 100 * float(res.accuracy)})
    run["eq15"] = eq15
    logging.info("T=%d: full %.2f%%, oracle %.2f steps, risk ε=0.3: %s", T, full, float(oracle.mean()),
                 next((r for r in risk if r["epsilon"] == 0.3 and r["loss"] == "error"), None))
    return run


def family_limit(test: torch.Tensor, y: torch.Tensor, full: float, tolerated: float = 0.3) -> dict[str, Any]:
    """The certified family's best member picked in hindsight WITH THE TEST LABELS: the most eager λ of
    the default grid whose realised drop on the test set is ≤ ``tolerated`` points. Not a rule (it looks
    at the answers); the limit of the family, so that what the guarantee costs and what the family
    cannot reach are told apart."""
    best = {"lambda": "inf", "mean_timesteps": float(test.shape[0]), "drop": 0.0}
    for lam in default_grid("margin"):
        if not math.isfinite(lam):
            continue
        res = evaluate_exits(test, ExitPolicy(thresholds=schedule_thresholds(lam, test.shape[0]), score="margin"), y)
        drop = full - 100 * float(res.accuracy)
        if drop <= tolerated + 1e-9 and res.mean_exit_step < best["mean_timesteps"]:
            best = {"lambda": lam, "mean_timesteps": res.mean_exit_step, "drop": drop}
    return {"tolerated_drop": tolerated, **best}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="burstfire")
    ap.add_argument("--timesteps", type=int, nargs="+", default=[8, 16, 32, 4])
    ap.add_argument("--holdout", type=int, default=4096, help="held-out training images the risk rule is certified on")
    ap.add_argument("--delta", type=float, default=0.1, help="1 − confidence of the risk rule's guarantee")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    start(args.threads)
    ann = zoo_ann("resnet20")
    data = load_data(DataSpec("cifar10", data_dir=str(SHARED / "data" / "cifar10"), calib_size=256,
                              calib_batch_size=128, batch_size=250, holdout_size=args.holdout))
    path = RESULTS / "iat_tradeoff.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    runs = {r["T"]: r for r in old.get("runs", []) if "oracle" in r and old.get("method") == args.method}
    for T in args.timesteps:
        runs[T] = analyse(T, record_outputs(args, T, data, ann), args.delta)
        state = {"command": command(), "machine": machine(), "model": "resnet20", "method": args.method,
                 "data": "CIFAR-10 from ../shared/data/cifar10 (JPEG-sourced copy, q≈75); full test set; eq. 15 "
                         "statistics from the 256 calibration images; the risk rule certified on "
                         f"{args.holdout} other training images",
                 "runs": [runs[t] for t in sorted(runs)]}
        write_results("iat_tradeoff", state, markdown(state))
        plot(state)


def markdown(state: dict[str, Any]) -> str:
    lines = ["# Early exit: every rule beside the oracle (CIFAR-10, full test set)", "",
             f"Command: `{state['command']}`", f"Machine: {state['machine']}",
             f"Model: zoo {state['model']}, {state['method']}; {state['data']}.", ""]
    for run in state["runs"]:
        T, full, orc = run["T"], run["full_accuracy"], run["oracle"]["mean_timesteps"]
        lines += [f"## T = {T}", "", f"All T steps: {full:.2f}%. Every input stopped at t: "
                  + ", ".join(f"t={t + 1}: {a:.2f}%" for t, a in enumerate(run["fixed_t_accuracy"])), "",
                  f"**Oracle**: {orc:.2f} mean timesteps ({100 * orc / T:.0f}% of T), {full:.2f}% (no loss).", "",
                  *family_line(run, T),
                  "| rule | mean timesteps | % of T | × oracle | accuracy % | drop vs all T (points) | "
                  "guarantee held |", "|---|---|---|---|---|---|---|"]
        for r in run["risk"]:
            name = f"risk ε={r['epsilon']} pt, δ={r['delta']}, {r['loss']} loss"
            held = "yes" if r["within_epsilon"] else "**no**"
            lines.append(f"| {name} | {r['mean_timesteps']:.2f} | {100 * r['mean_timesteps'] / T:.0f}% | "
                         f"{r['vs_oracle']:.2f} | {r['accuracy']:.2f} | {r['drop']:+.2f} | {held} |")
        for r in run["eq15"]:
            steps = r["mean_timesteps"]
            lines.append(f"| eq. 15, α_base={r['alpha_base']} | {steps:.2f} | {100 * steps / T:.0f}% | "
                         f"{steps / orc:.2f} | {r['accuracy']:.2f} | {r['drop']:+.2f} | (none promised) |")
        lines.append("")
    return "\n".join(lines)


def family_line(run: dict[str, Any], T: int) -> list[str]:
    f = run.get("family_limit")
    if not f:
        return []
    return [f"**The certified family's limit** (its best λ picked in hindsight with the test labels — not a rule): "
            f"{f['mean_timesteps']:.2f} mean timesteps ({100 * f['mean_timesteps'] / T:.0f}% of T) for a drop of "
            f"{f['drop']:+.2f} ≤ {f['tolerated_drop']} points.", ""]


def plot(state: dict[str, Any]) -> None:
    runs = state["runs"]
    fig, axes = plt.subplots(1, len(runs), figsize=(4.6 * len(runs), 4), squeeze=False)
    for ax, run in zip(axes[0], runs):
        T, full = run["T"], run["full_accuracy"]
        ax.plot(range(1, T + 1), run["fixed_t_accuracy"], "k-o", ms=3, label="every input stops at t")
        ax.plot([r["mean_timesteps"] for r in run["eq15"]], [r["accuracy"] for r in run["eq15"]], "-s", ms=3,
                color="tab:orange", label="eq. 15, α_base swept")
        risk = [r for r in run["risk"] if r["loss"] == "error"]
        ax.plot([r["mean_timesteps"] for r in risk], [r["accuracy"] for r in risk], "-D", ms=4, color="tab:blue",
                label="risk rule, ε = " + "/".join(f"{r['epsilon']:g}" for r in risk) + " pt")
        ax.scatter([run["oracle"]["mean_timesteps"]], [full], marker="*", s=160, color="tab:green", zorder=3,
                   label="oracle (no loss)")
        ax.axhline(full - 0.3, color="grey", ls=":", lw=0.8, label="all T steps − 0.3 pt")
        ax.set(title=f"T = {T}", xlabel="mean timesteps", ylabel="test accuracy (%)")
        ax.set_xscale("log", base=2)
        ax.set_ylim(bottom=max(min(run["fixed_t_accuracy"][-1] - 6, full - 6), 0), top=full + 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Early exit on CIFAR-10, zoo {state['model']} ({state['method']}): accuracy vs mean timesteps")
    fig.tight_layout()
    save_figure(fig, RESULTS / "iat_tradeoff.png")
    plt.close(fig)


if __name__ == "__main__":
    main()
