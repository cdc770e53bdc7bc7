"""N-MNIST: every conversion method in both feeding modes, T = 4..64, accuracy and energy per sample.

The zoo network (zoo/nmnist_cnn_nmnist.pt, trained with ``adacal train --config nmnist``) is converted
with calibration data from the training recordings it was trained on and evaluated on the 100 test
recordings plus 200 training recordings that were held out of training and calibration
(``data.options.holdout: 200``, fixed, stratified). Variants:

* ``accumulated``: the SNN sees the accumulated frame at every step (the paper's pipeline);
* ``streamed``: step t sees time bin t of the recording (64 bins regrouped into T, scaled by T);
  thresholds (MSE) and bias correction are measured on those per-step inputs;
* ``streamed, frame-calibrated``: the same streamed evaluation, but calibrated as if the frame
  were shown (what a user gets by calibrating on frames; a few runs, for comparison);
* ``streamed, signed neurons``: streamed, with neurons that may take back spikes
  (``pipeline.conversion.neuron.kind: signed``, beyond the paper).

Every record is written as it finishes (atomically); a rerun resumes. Also a loader check of the
10 DVS Gesture recordings in ../shared/data/events/dvsgesture_slayer10 (not a benchmark).

    python benchmarks/events_nmnist.py [--variants accumulated streamed ...] [--timesteps 4 8 16 32 64]
    python benchmarks/events_nmnist.py --readme     # regenerate the README section from the result file
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import time
from dataclasses import replace
from typing import Any

import torch
from _common import REPO, RESULTS, SHARED, command, machine, write_results
from torch.utils.data import Subset

from adacal.config import CalibrationConfig, ConversionConfig, DataSpec, ModelSpec, NeuronConfig, PipelineConfig
from adacal.datasets import make_loader
from adacal.evaluate import evaluate, evaluate_ann, fit_exit_policy
from adacal.jobs import Data, load_ann, load_data
from adacal.pipeline import convert

METHODS = ("plain", "calibration", "burstfire", "adafire", "adafire+ssc")
IAT_METHOD = "adafire+ssc"
VARIANTS = {  # name: (feed, neuron kind, calibrate on the frame although the SNN is streamed)
    "accumulated": ("accumulated", "if", False),
    "streamed": ("streamed", "if", False),
    "streamed-frame-calibrated": ("streamed", "if", True),
    "streamed-signed": ("streamed", "signed", False),
}
LABELS = {"accumulated": "accumulated", "streamed": "streamed", "streamed-frame-calibrated":
          "streamed, calibrated on frames", "streamed-signed": "streamed, signed neurons"}
#: The frame-calibrated comparison is run for these methods and T only (it is the naive baseline).
FRAME_CALIBRATED = (("calibration", "adafire"), (8, 16, 32))
OPTIONS = {"bins": 64, "slicing": "time", "holdout": 200}
TEST_RECORDINGS = 100
NAME = "events_nmnist"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(SHARED / "data" / "events" / "nmnist"))
    ap.add_argument("--gesture-dir", default=str(SHARED / "data" / "events" / "dvsgesture_slayer10"))
    ap.add_argument("--weights", default=str(REPO / "zoo" / "nmnist_cnn_nmnist.pt"))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--timesteps", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--profile-rows", type=int, default=512, help="profiling uses max(16, rows // T) recordings")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=NAME)
    ap.add_argument("--readme", action="store_true", help="write the README section from the result file and exit")
    ap.add_argument("--plots-only", action="store_true", help="redraw the plots from the result file and exit")
    ap.add_argument("--iat-curve", type=float, nargs="*", default=[],
                    help="also evaluate each IAT run at these alpha_base (its policy re-derived, no refit); with "
                         "--curve-only: add the curve to finished IAT runs of --timesteps")
    ap.add_argument("--curve-only", action="store_true")
    args = ap.parse_args()
    path = RESULTS / f"{args.out}.json"
    if args.readme:
        readme(json.loads(path.read_text()))
        return
    if args.plots_only:
        plots(json.loads(path.read_text()), args.out)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    records: list[dict[str, Any]] = state.get("records", [])
    done = {(r["variant"], r["method"], r["T"], r["iat"]) for r in records}

    state.setdefault("commands", [state["command"]] if "command" in state else [])
    if command() not in state["commands"]:
        state["commands"].append(command())  # every invocation that added records or curves

    def save() -> None:
        state.update({"command": state["commands"][0], "machine": machine(), "records": records})
        write_results(args.out, state, markdown(state))
        plots(state, args.out)

    if "gesture_check" not in state:
        state["gesture_check"] = gesture_check(args.gesture_dir)
    base = load_data(DataSpec("nmnist", args.data_dir, calib_size=256, calib_batch_size=64, batch_size=50,
                              options={**OPTIONS, "feed": "accumulated"}))
    ann = load_ann(ModelSpec("nmnist_cnn", weights=args.weights), base)
    parts = split_eval(base)
    if "ann" not in state:
        state["ann"] = {k: evaluate_ann(ann, v.test, task=base.task)["accuracy"] for k, v in parts.items()}
        state["ann"]["n"] = {k: len(v.test.dataset) for k, v in parts.items()}  # type: ignore[arg-type]
        state["data"] = {"dataset": "N-MNIST subset, ../shared/data/events/nmnist (.npz layout)", **OPTIONS,
                         "evaluation": f"{TEST_RECORDINGS} test recordings + {OPTIONS['holdout']} training recordings "
                                       "held out of training and calibration (fixed, stratified, seed 0)",
                         "calibration": "256 training recordings (seed 0), batches of 64: thresholds on 4 batches, "
                                        "bias correction on 1",
                         "weights": str(args.weights).replace(str(REPO) + "/", "")}
        save()
    for T in args.timesteps:
        for variant in args.variants:
            feed, kind, frame_cal = VARIANTS[variant]
            for method in args.methods:
                if frame_cal and (method not in FRAME_CALIBRATED[0] or T not in FRAME_CALIBRATED[1]):
                    continue
                iat = method == IAT_METHOD and not frame_cal
                todo = [i for i in ([False, True] if iat else [False]) if (variant, method, T, i) not in done]
                curve_for = _rec(records, variant, method + "+iat", T) if args.curve_only and iat else None
                if args.curve_only:
                    if curve_for is None or curve_for.get("iat_curve"):
                        continue
                    todo = []
                elif not todo:
                    continue
                data = {k: with_feed(v, feed) for k, v in parts.items()}
                calib_task = with_feed(base, "accumulated" if frame_cal else feed).task
                cfg = PipelineConfig(method=method, timesteps=T, phi_target=4,
                                     profile_batch=max(16, args.profile_rows // T),
                                     calibration=CalibrationConfig(num_batches=4, correction_batches=1),
                                     conversion=ConversionConfig(neuron=NeuronConfig(kind=kind)))
                t0 = time.perf_counter()
                snn, rec = convert(ann, base.calib, config=cfg, input_fn=inputs_of(calib_task),
                                   divergence=calib_task.divergence, present=calib_task.present)
                convert_s = time.perf_counter() - t0
                for with_iat in todo:
                    records.append(run(snn, rec, data, base, variant, method, T, with_iat, convert_s,
                                       args.iat_curve))
                    done.add((variant, method, T, with_iat))
                    save()
                if curve_for is not None:
                    curve_for["iat_curve"] = iat_curve(snn, data, base, T, args.iat_curve)
                    save()
    save()


def inputs_of(task: Any) -> Any:
    return lambda batch: task.split_batch(batch)[0]


def split_eval(data: Data) -> dict[str, Data]:
    """The evaluation set as its two parts: the test recordings and the held-out training recordings."""
    test = data.test.dataset
    n = len(test)  # type: ignore[arg-type]
    out = {}
    for key, idx in (("test", range(TEST_RECORDINGS)), ("holdout", range(TEST_RECORDINGS, n))):
        out[key] = replace(data, test=make_loader(Subset(test, list(idx)), data.spec.batch_size))
    return out


def with_feed(data: Data, feed: str) -> Data:
    from adacal.tasks import get_task

    task = get_task("event_classification", num_classes=data.num_classes, feed=feed)
    return replace(data, task=task)


def iat_curve(snn: Any, data: dict[str, Data], base: Data, T: int, alphas: list[float]) -> list[dict[str, Any]]:
    """Accuracy, mean timesteps and energy of the IAT policy (fitted on calibration data) at each α_base."""
    task = next(iter(data.values())).task
    policy = fit_exit_policy(snn, base.calib, timesteps=T, task=task, alpha_base=0.6)
    out = []
    for a in alphas:
        res = {k: evaluate(snn, d.test, timesteps=T, task=task, exit_policy=policy.with_alpha_base(a))
               for k, d in data.items()}
        n = {k: r["num_samples"] for k, r in res.items()}
        total = sum(n.values())
        out.append({"alpha_base": a, "n": total, **{key: sum(res[k][key] * n[k] for k in res) / total
                                                    for key in ("accuracy", "mean_timesteps", "energy_mj")}})
    return out


def run(snn: Any, rec: dict[str, Any], data: dict[str, Data], base: Data, variant: str, method: str, T: int,
        iat: bool, convert_s: float, curve: list[float] | None = None) -> dict[str, Any]:
    task = next(iter(data.values())).task
    policy = fit_exit_policy(snn, base.calib, timesteps=T, task=task, alpha_base=0.6) if iat else None
    t0 = time.perf_counter()
    res = {k: evaluate(snn, d.test, timesteps=T, task=task, exit_policy=policy) for k, d in data.items()}
    n = {k: r["num_samples"] for k, r in res.items()}
    total = sum(n.values())

    def mean(key: str) -> float:
        return sum(res[k][key] * n[k] for k in res) / total

    layers = [{k: v for k, v in row.items() if k in ("name", "kind", "sops_per_image", "macs_per_image", "energy_pj")}
              for row in res["test"]["energy"]["layers"]]
    out = {"variant": variant, "feed": task.feed, "neuron": rec["config"]["conversion"]["neuron"]["kind"],
           "method": method + ("+iat" if iat else ""), "T": T, "iat": iat, "n": total,
           "accuracy": mean("accuracy"), "accuracy_test": res["test"]["accuracy"],
           "accuracy_holdout": res["holdout"]["accuracy"], "n_test": n["test"], "n_holdout": n["holdout"],
           "energy_mj": mean("energy_mj"), "ann_energy_mj": res["test"]["ann_energy_mj"],
           "mean_timesteps": mean("mean_timesteps"), "layers_test": layers,
           "phi": rec["knobs"].get("phi"), "rho": rec["knobs"].get("rho"), "stage_times": rec["stage_times"],
           "convert_s": round(convert_s, 1), "eval_s": round(time.perf_counter() - t0, 1)}
    if iat:
        out["exit_histogram"] = [a + b for a, b in zip(res["test"]["exit_histogram"], res["holdout"]["exit_histogram"])]
        out["alpha_base"] = 0.6
        if curve:
            out["iat_curve"] = iat_curve(snn, data, base, T, curve)
    logging.info("%s %s T=%d: %.2f%% (n=%d), %.4g µJ/sample, %.2f mean steps", variant, out["method"], T,
                 out["accuracy"], total, 1e3 * out["energy_mj"], out["mean_timesteps"])
    return out


def gesture_check(folder: str) -> dict[str, Any]:
    """Load the 10 DVS Gesture recordings through the dataset registry (a loader check, not a benchmark)."""
    from pathlib import Path

    import numpy as np

    from adacal.datasets import get_splits

    if not Path(folder).is_dir():
        return {"skipped": f"{folder} not found"}
    sp = get_splits("dvsgesture", folder, calib_size=1, options={"bins": 16, "downsample": 0.25, "test_fraction": 0.2})
    items = list(sp.test.items) + list(sp.train.items)
    with np.load(Path(folder) / "samples.npz") as z:
        offsets = z["offsets"]
    rows = []
    for src, k in sorted(items, key=lambda it: it[1]):
        x, y = src.events(k), int(src.labels[k])
        bins = sp.test.transform(x, src.names[k])
        rows.append({"sample": k, "label": y, "events": int(len(x)), "binned_events": int(bins.sum()),
                     "shape": list(bins.shape), "duration_ms": round(float(x["t"][-1] - x["t"][0]) / 1e3, 1)})
    return {"folder": folder, "recordings": len(rows), "file_events": int(offsets[-1]), "rows": rows,
            "train_test": [len(sp.train), len(sp.test)],
            "options": {"bins": 16, "downsample": 0.25}}


# ------------------------------------------------------------------------------------------- output
def _rec(records: list[dict[str, Any]], variant: str, method: str, T: int) -> dict[str, Any] | None:
    return next((r for r in records if r["variant"] == variant and r["method"] == method and r["T"] == T), None)


def targets(state: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """The issue's targets against the measured numbers."""
    recs, ann = state["records"], state["ann"]
    ann_all = (ann["test"] * ann["n"]["test"] + ann["holdout"] * ann["n"]["holdout"]) / sum(ann["n"].values())
    rows: list[tuple[str, str, bool | None]] = []
    a16 = _rec(recs, "accumulated", "adafire", 16)
    if a16:
        d = a16["accuracy"] - ann_all
        rows.append(("AdaFire at T=16 within 1 point of the ANN (accumulated)", f"{d:+.2f} points", d >= -1.0))
    for variant in ("streamed", "streamed-signed"):
        for T in (16, 32):
            a, s = _rec(recs, "accumulated", "adafire", T), _rec(recs, variant, "adafire", T)
            if a and s:
                d = s["accuracy"] - a["accuracy"]
                rows.append((f"AdaFire {LABELS[variant]} within 2 points of accumulated at T={T}", f"{d:+.2f} points",
                             d >= -2.0))
    for variant in ("accumulated", "streamed", "streamed-signed"):
        c64, a16 = _rec(recs, variant, "calibration", 64), _rec(recs, variant, "adafire", 16)
        if c64 and a16:
            rows.append((f"{LABELS[variant]}: Calibration T=64 beside AdaFire T=16 (equal-energy comparison)",
                         f"{c64['accuracy']:.2f}% at {1e3 * c64['energy_mj']:.2f} µJ vs {a16['accuracy']:.2f}% at "
                         f"{1e3 * a16['energy_mj']:.2f} µJ", None))
    return rows


def energy_notes(recs: list[dict[str, Any]]) -> list[str]:
    """One line on energy against the ANN, from the records."""
    parts = []
    for variant, method, T in (("accumulated", "adafire", 16), ("accumulated", "adafire+ssc", 16),
                               ("accumulated", "adafire+ssc+iat", 16), ("streamed-signed", "adafire+ssc", 16),
                               ("accumulated", "calibration", 64)):
        r = _rec(recs, variant, method, T)
        if r:
            parts.append(f"{method} T={T} ({LABELS[variant]}) {r['energy_mj'] / r['ann_energy_mj']:.2f}×")
    if not parts:
        return []
    above = sorted(r["T"] for r in recs if r["variant"] == "accumulated" and r["method"] == "adafire"
                   and r["energy_mj"] > r["ann_energy_mj"])
    note = (f" AdaFire (accumulated) costs more than the ANN at T = {', '.join(map(str, above))}: the frames are "
            "dense (thousands of events per recording), so the spiking layers fire often, in bursts."
            if above else "")
    return ["Energy per sample against the ANN's (its MACs at 4.6 pJ): " + "; ".join(parts) + "." + note, ""]


def pivot(records: list[dict[str, Any]], variant: str) -> list[str]:
    rs = [r for r in records if r["variant"] == variant]
    Ts = sorted({r["T"] for r in rs})
    lines = ["| method | " + " | ".join(f"T={T}" for T in Ts) + " |", "|---|" + "---|" * len(Ts)]
    for m in (*METHODS, IAT_METHOD + "+iat"):
        cells = []
        for T in Ts:
            r = _rec(rs, variant, m, T)
            if r is None:
                cells.append("–")
                continue
            steps = f", {r['mean_timesteps']:.1f} steps" if r["iat"] else ""
            cells.append(f"{r['accuracy']:.1f} / {1e3 * r['energy_mj']:.1f}{steps}")
        if any(c != "–" for c in cells):
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def ann_line(state: dict[str, Any]) -> str:
    ann = state["ann"]
    n_t, n_h = ann["n"]["test"], ann["n"]["holdout"]
    both = (ann["test"] * n_t + ann["holdout"] * n_h) / (n_t + n_h)
    energy = next((r["ann_energy_mj"] for r in state["records"]), None)
    e = f", {1e3 * energy:.2f} µJ per sample (MACs × 4.6 pJ)" if energy else ""
    return (f"ANN (zoo `nmnist_cnn`): {both:.2f}% on {n_t + n_h} recordings ({ann['test']:.2f}% on the {n_t} test "
            f"recordings, {ann['holdout']:.2f}% on the {n_h} held-out training recordings){e}.")


def markdown(state: dict[str, Any]) -> str:
    recs = state.get("records", [])
    lines = ["# N-MNIST: conversion methods, accumulated and streamed feeding", "",
             *[f"Command: `{c}`" for c in state.get("commands") or [state.get("command")]],
             f"Machine: {state.get('machine')}",
             f"Data: {state.get('data')}", "", ann_line(state) if "ann" in state else "", "",
             "Cells: accuracy % on all evaluated recordings / energy per sample in µJ (IAT: and mean timesteps). "
             "Every accuracy below is on n = 300 recordings (100 test + 200 held out); one recording is 0.33 "
             "points.", ""]
    for variant in VARIANTS:
        if any(r["variant"] == variant for r in recs):
            lines += [f"## {LABELS[variant]}", "", *pivot(recs, variant), ""]
    if recs and "ann" in state:
        lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
        for what, val, ok in targets(state):
            lines.append(f"| {what} | {val} | {'–' if ok is None else 'yes' if ok else 'no'} |")
        lines.append("")
    lines += ["## All records", "", "| variant | method | T | n | accuracy % (test / held out) | energy µJ | "
              "energy vs ANN | mean T | φ per layer | ρ per layer |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(recs, key=lambda r: (list(VARIANTS).index(r["variant"]), r["T"], r["method"])):
        phi = "" if not r.get("phi") else "/".join(str(v) for v in r["phi"].values())
        rho = "" if not r.get("rho") else "/".join(f"{v:g}" for v in r["rho"].values())
        lines.append(f"| {r['variant']} | {r['method']} | {r['T']} | {r['n']} | {r['accuracy']:.2f} "
                     f"({r['accuracy_test']:.0f} / {r['accuracy_holdout']:.1f}) | {1e3 * r['energy_mj']:.2f} | "
                     f"{r['energy_mj'] / r['ann_energy_mj']:.2f}× | {r['mean_timesteps']:.2f} | {phi} | {rho} |")
    curves = [r for r in recs if r.get("iat_curve")]
    if curves:
        lines += ["", "## IAT: accuracy / mean timesteps at other α_base (policy fitted once, thresholds re-derived)",
                  "", "| variant | T | " + " | ".join(f"α={c['alpha_base']:g}" for c in curves[0]["iat_curve"]) + " |",
                  "|---|---|" + "---|" * len(curves[0]["iat_curve"])]
        for r in curves:
            lines.append(f"| {r['variant']} | {r['T']} | " + " | ".join(
                f"{c['accuracy']:.1f}% / {c['mean_timesteps']:.1f}" for c in r["iat_curve"]) + " |")
    g = state.get("gesture_check")
    if g and "rows" in g:
        lines += ["", "## DVS Gesture loader check (10 recordings, not a benchmark)", "",
                  f"{g['folder']}: {g['recordings']} recordings, {g['file_events']} events; options {g['options']}; "
                  f"split {g['train_test']} (train/test, fixed).", "",
                  "| sample | label | events | events in bins | tensor | duration ms |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['sample']} | {r['label']} | {r['events']} | {r['binned_events']} | {r['shape']} | "
                  f"{r['duration_ms']} |" for r in g["rows"]]
    return "\n".join(lines) + "\n"


def plots(state: dict[str, Any], name: str) -> None:
    """``<name>_accuracy.png``: accuracy vs T, one panel per feeding variant; ``<name>_energy.png``:
    accuracy vs energy per sample for Calibration and AdaFire in every variant."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullLocator

    from adacal.report.plots import save_figure

    recs = state.get("records", [])
    if not recs or "ann" not in state:
        return
    ann = state["ann"]
    ann_all = (ann["test"] * ann["n"]["test"] + ann["holdout"] * ann["n"]["holdout"]) / sum(ann["n"].values())
    colors = {"plain": "0.6", "calibration": "tab:blue", "burstfire": "tab:orange", "adafire": "tab:red",
              "adafire+ssc": "tab:green", "adafire+ssc+iat": "tab:purple"}
    panels = [v for v in ("accumulated", "streamed", "streamed-signed") if any(r["variant"] == v for r in recs)]
    fig = Figure(figsize=(4.2 * len(panels), 4.0), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    Ts = sorted({r["T"] for r in recs})
    for ax, variant in zip(axes, panels):
        for m, c in colors.items():
            rs = sorted((r for r in recs if r["variant"] == variant and r["method"] == m), key=lambda r: r["T"])
            if rs:
                ax.plot([r["T"] for r in rs], [r["accuracy"] for r in rs], color=c, marker="o", ms=3, label=m,
                        ls=":" if m.endswith("+iat") else "-")
        if variant == "streamed":  # the naive baseline: calibrated on frames, run on the stream
            for m, c in (("calibration", "tab:blue"), ("adafire", "tab:red")):
                rs = sorted((r for r in recs if r["variant"] == "streamed-frame-calibrated" and r["method"] == m),
                            key=lambda r: r["T"])
                if rs:
                    ax.plot([r["T"] for r in rs], [r["accuracy"] for r in rs], color=c, ls="--", marker="x", ms=4,
                            label=f"{m}, calibrated on frames")
        ax.axhline(ann_all, color="0.3", ls="--", lw=1, label="ANN")
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(Ts))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(t) for t in Ts])
        ax.set_xlabel("timesteps T (IAT: the maximum)")
        ax.set_title(LABELS[variant])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%), n = 300 recordings")
    axes[0].legend(fontsize=7, loc="lower left")
    if len(axes) > 1:
        axes[1].legend(fontsize=7, loc="lower left")
    fig.suptitle("N-MNIST, zoo nmnist_cnn: accuracy vs T by feeding mode", fontsize=10)
    save_figure(fig, RESULTS / f"{name}_accuracy.png")

    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    styles = {"accumulated": "-", "streamed": "--", "streamed-signed": ":"}
    for variant in panels:
        for m in ("calibration", "adafire"):
            rs = sorted((r for r in recs if r["variant"] == variant and r["method"] == m), key=lambda r: r["T"])
            if rs:
                ax.plot([1e3 * r["energy_mj"] for r in rs], [r["accuracy"] for r in rs], styles[variant],
                        color=colors[m], marker="o", ms=3, label=f"{m}, {LABELS[variant]}")
                for r in rs:
                    ax.annotate(str(r["T"]), (1e3 * r["energy_mj"], r["accuracy"]), fontsize=6,
                                textcoords="offset points", xytext=(3, 2))
    ax.axhline(ann_all, color="0.3", ls="--", lw=1)
    ax.axvline(1e3 * recs[0]["ann_energy_mj"], color="0.3", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("energy per sample (µJ); ANN: dashed vertical line")
    ax.set_ylabel("accuracy (%), n = 300 recordings")
    ax.set_title("N-MNIST: accuracy vs energy (labels: T)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, RESULTS / f"{name}_energy.png")


def readme(state: dict[str, Any]) -> None:
    """Replace the README's events section (between its markers) with tables from the result file."""
    begin, end = "<!-- events:begin -->", "<!-- events:end -->"
    recs = state["records"]
    lines = [begin, "", ann_line(state), "",
             "Accuracy % on n = 300 recordings (100 test + 200 held-out training recordings; one recording = 0.33 "
             "points) / energy per sample in µJ; IAT runs also give their mean timesteps. From "
             "`benchmarks/results/events_nmnist.json` (`python benchmarks/events_nmnist.py`).", ""]
    for variant in VARIANTS:
        if any(r["variant"] == variant for r in recs):
            lines += [f"**{LABELS[variant]}**", "", *pivot(recs, variant), ""]
    lines += ["| target | measured | met |", "|---|---|---|"]
    for what, val, ok in targets(state):
        lines.append(f"| {what} | {val} | {'–' if ok is None else 'yes' if ok else 'no'} |")
    lines += ["", *energy_notes(recs), end]
    path = REPO / "README.md"
    text = path.read_text()
    block = "\n".join(lines)
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _m: block, text, flags=re.S)
    else:
        raise SystemExit(f"README.md has no {begin} marker; add the events section first")
    path.write_text(text)


if __name__ == "__main__":
    main()
