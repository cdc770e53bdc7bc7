"""Diagnostics on a real trained network: error decomposition per layer and the seed's Figure 1.

Digits (default): trains the demo CNN on scikit-learn digits (offline, seconds), converts it with
``calibration`` (φ=1), decomposes the conversion error per layer, and correlates total φ-sensitivity
with held-out accuracy over random settings (thresholds not refit: the first diagnostic of the repo).

``--cifar``: the zoo ResNet-20 on the real CIFAR-10. Does the search's score predict accuracy? For
``--settings`` random φ configurations (each layer uniform in 1..2·φ_target), each built as the
search builds what it returns (thresholds refit for its φ, bias corrected), it measures the test
accuracy on a seeded stratified subset of the TEST split and correlates it with every score:

* ``paper``: Σ_i S_i(φ_i), the seed's per-layer symmetric KL, profiled as the paper's AdaFire does
  (every other layer at 2·φ_target, every candidate at the thresholds fitted for 2·φ_target, on
  ``max(16, 512 // T)`` calibration images);
* ``per_candidate``: the same sum, each candidate profiled at its own refit threshold, on all
  ``--profile-images`` calibration images;
* ``holdout_kl`` / ``holdout_disagreement``: the whole network's symmetric KL to the ANN / top-1
  disagreement with it, measured on ``--holdout`` other training images — what the held-out check
  of the searches (``PipelineConfig.check``) scores a configuration by.

Every configuration's numbers are appended to the result file as they finish (resumable).

    python benchmarks/diagnostics.py [--cifar] [--T 4] [--settings 30] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import logging
import random
from typing import Any

import torch
from _common import RESULTS, SHARED, command, machine, write_results

from adacal.calibrate import calibrate_thresholds, correct_bias, thresholds_per_phi
from adacal.config import CalibrationConfig, DataSpec
from adacal.convert import prepare
from adacal.datasets import get_splits, make_loader
from adacal.diagnostics import correlations, error_decomposition, sensitivity_correlation
from adacal.energy import EnergyModel
from adacal.evaluate import evaluate
from adacal.holdout import HoldoutCheck
from adacal.jobs import load_data
from adacal.models import build_model
from adacal.pipeline import PipelineConfig, convert
from adacal.report.diagnostics_plots import plot_error_decomposition, plot_sensitivity_correlation
from adacal.sensitivity import profile
from adacal.training import train_model

SCORES = ("paper", "per_candidate", "holdout_kl", "holdout_disagreement")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cifar", action="store_true")
    ap.add_argument("--T", type=int, default=4)
    ap.add_argument("--settings", type=int, default=20)
    ap.add_argument("--phi-target", type=int, default=4)
    ap.add_argument("--profile-images", type=int, default=512)
    ap.add_argument("--holdout", type=int, default=1024)
    ap.add_argument("--test-size", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.cifar:
        cifar(args)
    else:
        digits(args)


# ------------------------------------------------------------------------------------------- digits
def digits(args: argparse.Namespace) -> None:
    name = "digits_cnn"
    sp = get_splits("digits")
    ann = build_model("digits_cnn", 10)
    train_model(ann, make_loader(sp.train, 64, shuffle=True, seed=0), epochs=8, lr=0.05, log_every=0)
    ann.eval()
    calib = make_loader(sp.calib, 128)
    snn, _ = convert(ann, calib, config=PipelineConfig(method="calibration", timesteps=args.T))
    x = next(iter(calib))[0]
    rows = error_decomposition(snn, x, timesteps=args.T)
    for n in snn.neurons().values():
        n.set_phi(4)
    table = profile(snn, x, knob="phi", candidates=[1, 2, 3, 4], timesteps=args.T)
    corr = sensitivity_correlation(snn, table, list(make_loader(sp.test, 250)), timesteps=args.T,
                                   num_settings=args.settings)
    plot_error_decomposition(rows, path=RESULTS / f"diagnostics_{name}_errors.png",
                             title=f"Conversion error per layer ({name}, calibration, T={args.T})")
    plot_sensitivity_correlation(corr, path=RESULTS / f"diagnostics_{name}_sensitivity.png")
    payload = {"command": command(), "machine": machine(), "model": name, "T": args.T,
               "error_decomposition": rows, "sensitivity_correlation": corr,
               "reference": "seed Fig. 1: Pearson -0.966, Spearman -0.984, Kendall -0.903"}
    md = [f"# Diagnostics: {name}", "", f"Command: `{command()}`", "",
          f"Sensitivity vs accuracy over {args.settings} random φ settings (held-out data): Pearson "
          f"{corr['pearson']:.3f}, Spearman {corr['spearman']:.3f}, Kendall {corr['kendall']:.3f} "
          "(seed Fig. 1: −0.966 / −0.984 / −0.903).", "", *error_table(rows),
          "", f"![errors](diagnostics_{name}_errors.png) ![sensitivity](diagnostics_{name}_sensitivity.png)"]
    write_results(f"diagnostics_{name}", payload, "\n".join(md) + "\n")


def error_table(rows: list[dict[str, Any]]) -> list[str]:
    out = ["| layer | clipping | quantisation | propagated | unevenness | total |", "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['layer']} | {r['clipping']:.2e} | {r['quantisation']:.2e} | {r['propagated']:.2e} | "
                   f"{r['unevenness']:.2e} | {r['total']:.2e} |")
    return out


# ------------------------------------------------------------------------------------------- CIFAR-10
def cifar(args: argparse.Namespace) -> None:
    from _common import zoo_ann

    name, T, target = "cifar10_resnet20", args.T, args.phi_target
    cands = list(range(1, 2 * target + 1))
    data = load_data(DataSpec("cifar10", data_dir=str(SHARED / "data" / "cifar10"), calib_size=args.profile_images,
                              calib_batch_size=128, batch_size=250, test_size=args.test_size,
                              holdout_size=args.holdout))
    ann = zoo_ann("resnet20")
    calib = [x for x, _ in data.calib]
    first = calib[:1]  # thresholds and corrections, as the pipeline (calibration.num_batches = 1)
    profile_x = torch.cat(calib)
    path = RESULTS / f"diagnostics_{name}.json"
    state = json.loads(path.read_text()) if path.exists() else {}
    if state.get("T") != T or state.get("kind") != "search-scores":
        state = {"kind": "search-scores", "T": T}

    def save() -> None:
        state.update({"command": command(), "machine": machine(), "model": name,
                      "data": {"calibration_images": len(profile_x), "holdout_images": args.holdout,
                               "test_images": args.test_size, "source": "CIFAR-10 JPEG-sourced copy"},
                      "reference": "seed Fig. 1: Pearson -0.966, Spearman -0.984, Kendall -0.903"})
        if len(state.get("points", [])) >= 3:
            state["correlations"] = {s: correlations([p[s] for p in state["points"]],
                                                     [p["accuracy"] for p in state["points"]])
                                     for s in SCORES if all(s in p for p in state["points"])}
        write_results(f"diagnostics_{name}", state, markdown(state))

    snn = prepare(ann, calib[0])
    energy = EnergyModel.build(snn, calib[0][:1])

    def sops(spikes_name: str, spikes: torch.Tensor, batch: int) -> float:
        return energy.neuron_costs({spikes_name: spikes}, batch, metric="sops")[spikes_name]

    def uniform(phi: int, correct: bool) -> None:
        for n in snn.neurons().values():
            n.set_phi(phi)
        calibrate_thresholds(snn, None, timesteps=T, config=CalibrationConfig(), batches=first)
        if correct:
            correct_bias(snn, None, timesteps=T, batches=first)

    if "error_decomposition" not in state:
        uniform(1, True)  # the `calibration` method
        state["error_decomposition"] = error_decomposition(snn, first[0], timesteps=T)
        save()

    def table(score: str, context: int, per_cand: bool, images: int) -> None:
        if score in tables:
            return
        uniform(context, correct=False)
        x = profile_x[:images]
        th = thresholds_per_phi(snn, tuple(cands), timesteps=T, batches=first) if per_cand else None
        batch = len(x)
        prof = profile(snn, x, knob="phi", candidates=cands, timesteps=T, thresholds=th,
                       cost_fn=lambda k, s, b=batch: sops(k, s, b))
        tables[score] = {"images": len(x), "context_phi": context, "per_candidate_thresholds": per_cand,
                         "scores": {k: {str(v): s for v, s in row.items()} for k, row in prof.scores.items()},
                         "seconds": prof.seconds}
        for p in state.get("points", []):  # a table profiled after the points: their sums filled in
            p[score] = sum(tables[score]["scores"][k][str(v)] for k, v in p["setting"].items())
        save()

    tables = state.setdefault("tables", {})
    table("paper", 2 * target, False, max(16, 512 // T))
    check = HoldoutCheck(snn, [x for x, _ in data.holdout], timesteps=T)
    rng = random.Random(0)
    settings = [{k: rng.choice(cands) for k in snn.neurons()} for _ in range(args.settings)]
    points = state.setdefault("points", [])
    for i, setting in enumerate(settings):
        if i < len(points):
            continue
        for k, n in snn.neurons().items():
            n.set_phi(setting[k])
        calibrate_thresholds(snn, None, timesteps=T, config=CalibrationConfig(), batches=first)
        correct_bias(snn, None, timesteps=T, batches=first)
        m = check.measure(snn)
        res = evaluate(snn, data.test, timesteps=T, task=data.task)
        point = {"setting": setting, "accuracy": res["accuracy"], "energy_mj": res["energy_mj"],
                 "holdout_kl": m.divergence, "holdout_disagreement": 1.0 - m.agreement,
                 "holdout_energy_pj": m.energy_pj}
        for score in tables:
            point[score] = sum(tables[score]["scores"][k][str(v)] for k, v in setting.items())
        points.append(point)
        logging.info("setting %d/%d: accuracy %.2f%%, holdout KL %.4f, paper Σ %.3f", i + 1, len(settings),
                     point["accuracy"], point["holdout_kl"], point["paper"])
        save()
    # profiled last (the costliest part: every candidate at its own threshold on all profiling images)
    table("per_candidate", 2 * target, True, len(profile_x))
    plot(state, name)
    save()


LABELS = {"paper": "Σ per-layer KL, paper profile", "per_candidate": "Σ per-layer KL, per-candidate θ, more images",
          "holdout_kl": "whole-network KL, held out",
          "holdout_disagreement": "top-1 disagreement with the ANN, held out"}


def plot(state: dict[str, Any], name: str) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from adacal.report.plots import save_figure

    pts = state["points"]
    shown = [s for s in SCORES if s in state["correlations"]]  # a table not profiled yet is left out
    fig, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown), 3.4), sharey=True)
    for ax, score in zip(axes, shown):
        xs = [p[score] for p in pts]
        ax.scatter(xs, [p["accuracy"] for p in pts], s=16)
        c = state["correlations"][score]
        ax.set_title(f"{LABELS[score]}\nPearson {c['pearson']:.2f}, Spearman {c['spearman']:.2f}", fontsize=8)
        ax.set_xscale("log")
        # ticks at 1, 2, 5 × 10^k, plainly written; unlabelled minor ticks (labels would overlap)
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    fig.suptitle(f"CIFAR-10 ResNet-20, T={state['T']}: score of a random φ configuration vs its test accuracy",
                 fontsize=9)
    fig.tight_layout()
    save_figure(fig, RESULTS / f"diagnostics_{name}_sensitivity.png")
    plt.close(fig)
    plot_error_decomposition(state["error_decomposition"], path=RESULTS / f"diagnostics_{name}_errors.png",
                             title=f"Conversion error per layer ({name}, calibration, T={state['T']})")


def markdown(state: dict[str, Any]) -> str:
    n = len(state.get("points", []))
    lines = [f"# Diagnostics: {state.get('model')}", "", f"Command: `{state.get('command')}`",
             f"Machine: {state.get('machine')}", f"Data: {state.get('data')}", "",
             f"## Does the search's score predict accuracy? (T={state['T']}, {n} random φ configurations, "
             "each refit and bias-corrected; accuracy on a stratified random test subset)", "",
             "| score | Pearson | Spearman | Kendall |", "|---|---|---|---|"]
    for s, c in (state.get("correlations") or {}).items():
        lines.append(f"| {LABELS[s]} (`{s}`) | {c['pearson']:.3f} | {c['spearman']:.3f} | {c['kendall']:.3f} |")
    lines += ["", "Seed Fig. 1: Pearson −0.966, Spearman −0.984, Kendall −0.903.", ""]
    if state.get("error_decomposition"):
        lines += ["## Conversion error per layer (`calibration`, φ=1)", "", *error_table(state["error_decomposition"])]
    lines += ["", f"![errors](diagnostics_{state.get('model')}_errors.png) "
              f"![sensitivity](diagnostics_{state.get('model')}_sensitivity.png)"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
