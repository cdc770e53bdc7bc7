"""CIFAR-10 accuracy and energy of every conversion method against the ANN, on the real test set.

A client of the library's sweep (:func:`adacal.jobs.sweep_to_folder`): the zoo ResNet-20 is
converted with every method at every T, with calibration images from the TRAINING split, and
evaluated on the test images; the method named by ``sweep.iat_method`` also runs with early exit.
The sweep resumes from its working folder (``runs/benchmarks/<out>/``, ignored by git) after an
interruption; at the end (or with ``--collect``, from the runs finished so far) its results file
(the library's schema, ``docs/results_schema.md``) is copied to ``benchmarks/results/<out>.json``
with a table in ``<out>.md`` and the two plots.

``--defaults`` picks a named set of settings (:data:`DEFAULTS`): ``previous`` is what the library
defaulted to before the held-out checks and the risk-controlled exit (issue 16), ``current`` the
library's own defaults, with 4096 held-out training images (the checks use ``8192 // T`` of them, the
exit rule all) besides the 256 calibration images, which stay the same images. Timesteps run in the
order given (the most informative first).

    python benchmarks/cifar10_methods.py --defaults previous --timesteps 4 8 2 1 16 32 --threads 1
    python benchmarks/cifar10_methods.py --defaults previous --collect        # results so far

A grid may be run in parts (one process per core, or more T later): ``--out`` names each part, and
``--collect --merge PART...`` joins the runs of parts with the same settings but other timesteps
into the result file, naming every part's command.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from _common import REPO, RESULTS, SHARED, command, start, write_results

from adacal import results as res
from adacal.config import DataSpec, JobConfig, ModelSpec, PipelineConfig, SweepConfig, load_config

METHODS = ("plain", "calibration", "burstfire", "adafire", "adafire+ssc")

#: Named settings: ``pipeline`` and ``sweep`` keys over the library's defaults. ``previous`` pins every
#: option whose default changed since the committed grid of 2025 (so it reproduces that grid).
DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "previous": {"pipeline": {"phi_profile_thresholds": "largest_phi", "sensitivity_budget": "excess",
                              "sensitivity_ratio": 1.0, "check": "none"},
                 "sweep": {"alpha_base": 0.6, "exit_rule": "eq15"}, "data": {}},
    "current": {"pipeline": {}, "sweep": {"check_rows": 8192}, "data": {"holdout_size": 4096}},
}


def job_for(args: argparse.Namespace) -> JobConfig:
    preset = DEFAULTS[args.defaults]
    pipeline = load_config(PipelineConfig, {"phi_target": 4, **preset["pipeline"]}, "pipeline")
    sweep = load_config(SweepConfig, {"methods": list(args.methods), "timesteps": list(args.timesteps),
                                      "profile_rows": args.profile_rows, **preset["sweep"]}, "sweep")
    extra = {**preset["data"], **({} if args.holdout_size is None else {"holdout_size": args.holdout_size})}
    data = DataSpec(dataset="cifar10", data_dir=args.data_dir, calib_size=args.calib_size, calib_batch_size=128,
                    batch_size=250, test_size=args.test_size, **extra)
    weights = args.weights or str(REPO / "zoo" / f"{args.model}_cifar10.pt")
    return JobConfig(model=ModelSpec(args.model, weights=weights), data=data, pipeline=pipeline, sweep=sweep,
                     threads=args.threads, report=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--defaults", choices=list(DEFAULTS), default="current")
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--weights", default=None, help="state_dict (default: zoo/<model>_cifar10.pt)")
    ap.add_argument("--data-dir", default=str(SHARED / "data" / "cifar10"))
    ap.add_argument("--timesteps", type=int, nargs="+", default=[4, 8, 2, 1, 16, 32])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--test-size", type=int, default=None, help="seeded stratified test subset (default: all)")
    ap.add_argument("--calib-size", type=int, default=256)
    ap.add_argument("--holdout-size", type=int, default=None,
                    help="held-out training images for the searches' checks and the exit rule (default: the "
                         "preset's)")
    ap.add_argument("--profile-rows", type=int, default=512,
                    help="sensitivity profiling uses max(16, rows // T) calibration images")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="result name (default: cifar10_methods_<defaults>)")
    ap.add_argument("--collect", action="store_true",
                    help="write the result files from the runs finished so far, run nothing")
    ap.add_argument("--merge", nargs="+", default=[], metavar="PART",
                    help="with --collect: also the runs of these sweeps (--out names of parts run with the same "
                         "settings and other timesteps)")
    args = ap.parse_args()
    name = args.out or f"cifar10_methods_{args.defaults}"
    folder = REPO / "runs" / "benchmarks" / name
    if args.merge and not args.collect:
        raise SystemExit("--merge joins finished parts: use it with --collect")
    if args.collect:
        summary = collect(folder)
        if args.merge:
            summary = merge(summary, args.merge, command())
        publish(name, summary)
        return
    start(args.threads)
    from adacal.jobs import sweep_to_folder

    summary = sweep_to_folder(job_for(args), folder, command=command())
    publish(name, summary)


def collect(folder: Path) -> dict[str, Any]:
    """The sweep's results file in ``folder``: the finished one, else the partial one."""
    for f in (res.SUMMARY_FILE, res.PARTIAL_FILE):
        if (folder / f).is_file():
            return res.check_results(json.loads((folder / f).read_text()), str(folder / f))
    raise SystemExit(f"no results in {folder}; run the benchmark first")


def _same_grid(summary: dict[str, Any]) -> dict[str, Any]:
    """What a part must share with the grid it joins: every setting but the timesteps, and the same
    weights (by hash: each part may have read them from another checkout)."""
    settings = {k: v for k, v in summary["settings"].items() if k not in ("sweep", "model")}
    settings["sweep"] = {k: v for k, v in summary["settings"]["sweep"].items() if k != "timesteps"}
    settings["model"] = {k: v for k, v in summary["settings"]["model"].items() if k != "weights"}
    settings["weights_sha256"] = summary["model"].get("weights_sha256")
    return settings


def merge(summary: dict[str, Any], parts: list[str], command_line: str) -> dict[str, Any]:
    """``summary`` with the runs of the sweeps ``parts`` (``runs/benchmarks/<part>``) added; each must have
    run with the same settings except the timesteps. The command names every part and this merge."""
    import copy

    out = copy.deepcopy(summary)
    have = {(r["method"], r["timesteps"], r["iat"]) for r in out["runs"]}
    commands = [str(summary.get("command"))]
    for part in parts:
        other = collect(REPO / "runs" / "benchmarks" / part)
        if _same_grid(other) != _same_grid(summary):
            raise SystemExit(f"sweep {part!r} ran with other settings than the grid it should join (only the "
                             "timesteps may differ); rerun it with the same options")
        out["runs"] += [r for r in other["runs"] if (r["method"], r["timesteps"], r["iat"]) not in have]
        have |= {(r["method"], r["timesteps"], r["iat"]) for r in other["runs"]}
        commands.append(str(other.get("command")))
    out["runs"].sort(key=lambda r: (r["timesteps"], r["method"], r["iat"]))
    out["settings"]["sweep"]["timesteps"] = sorted({r["timesteps"] for r in out["runs"]})
    out["command"] = " ; ".join([*commands, command_line])
    return out


def records(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows (method with ``+iat``, T, accuracy, energy, ...) from a results file of any version."""
    summary = res.check_results(summary)
    ann = res.run_value(summary["ann"], "accuracy")
    out = []
    for run in summary["runs"]:
        out.append({"method": run["method"] + ("+iat" if run["iat"] else ""), "T": run["timesteps"],
                    "iat": run["iat"], "accuracy": res.run_value(run, "accuracy"), "energy_mj": run["energy_mj"],
                    "ann_energy_mj": run["ann_energy_mj"], "mean_timesteps": run["mean_timesteps"],
                    "ann_accuracy": ann, "knobs": (run.get("conversion") or {}).get("knobs"),
                    "search": (run.get("conversion") or {}).get("search"), "exit_histogram": run.get("exit_histogram"),
                    "iat_policy": run.get("iat_policy"), "num_samples": run.get("num_samples")})
    return out


def publish(name: str, summary: dict[str, Any]) -> None:
    write_results(name, compact(summary), markdown(summary))
    plots(summary, name)


def compact(summary: dict[str, Any], points: int = 60) -> dict[str, Any]:
    """The results file for the repository: Pareto frontiers thinned to ``points`` (``exact: false``, as the
    schema allows) and floats to 5 significant digits; the full file stays in the working folder."""
    import copy

    out = copy.deepcopy(summary)
    for run in out["runs"]:
        for front in ((run.get("conversion") or {}).get("frontiers") or {}).values():
            n = len(front.get("cost", []))
            if n > points:
                keep = sorted({round(i * (n - 1) / (points - 1)) for i in range(points)})
                front["cost"] = [front["cost"][i] for i in keep]
                front["score"] = [front["score"][i] for i in keep]
                front["exact"] = False

    def rounded(v: Any) -> Any:
        if isinstance(v, float):
            return float(f"{v:.5g}")
        if isinstance(v, dict):
            return {k: rounded(x) for k, x in v.items()}
        if isinstance(v, list):
            return [rounded(x) for x in v]
        return v

    return rounded(out)


def plots(summary: dict[str, Any], name: str) -> None:
    """Accuracy vs T (IAT at its mean timesteps) and accuracy vs energy, with the ANN as a line."""
    import matplotlib.pyplot as plt

    from adacal.report.plots import plot_metric_vs_energy, plot_metric_vs_timesteps, save_figure

    rows = records(summary)
    runs = [{"method": r["method"].removesuffix("+iat"), "iat": r["iat"], "timesteps": r["T"],
             "mean_timesteps": r["mean_timesteps"], "value": r["accuracy"],
             "energy_ratio": r["energy_mj"] / r["ann_energy_mj"]}
            for r in rows if r["method"] != "plain"]  # plain is far below the rest
    if not runs:
        return
    ann = rows[0]["ann_accuracy"]
    ax = plot_metric_vs_timesteps(runs, ann_value=ann)
    for r in runs:  # IAT points sit at their mean timesteps: name the T each one ran under
        if r["iat"]:
            ax.annotate(f"T={r['timesteps']}", (r["mean_timesteps"], r["value"]), textcoords="offset points",
                        xytext=(5, -3), fontsize=7, color="tab:purple")
    ax.set_title(f"CIFAR-10, zoo ResNet-20 ({name}): accuracy vs T (plain omitted; IAT at its mean T)", fontsize=9)
    save_figure(ax.figure, RESULTS / f"{name}_accuracy.png")
    ax = plot_metric_vs_energy(runs, ann_value=ann)
    ax.set_title(f"CIFAR-10, zoo ResNet-20 ({name}): accuracy vs energy (plain omitted)", fontsize=9)
    save_figure(ax.figure, RESULTS / f"{name}_energy.png")
    plt.close("all")


def markdown(summary: dict[str, Any]) -> str:
    rows = records(summary)
    env = summary.get("environment", {})
    data = summary.get("settings", {}).get("data", {})
    n = rows[0]["num_samples"] if rows else "?"
    lines = [f"# CIFAR-10: conversion methods ({summary['model'].get('name')})", "",
             f"Command: `{summary.get('command')}`", f"Environment: {env}",
             f"Data: {data.get('dataset')} from {data.get('data_dir')} (JPEG-sourced copy, q≈75); {n} test images; "
             f"calibration: {data.get('calib_size')} training images"
             + (f"; held out: {data.get('holdout_size')} other training images" if data.get("holdout_size") else ""),
             f"ANN accuracy: {rows[0]['ann_accuracy']:.2f}%" if rows else "", "",
             "| method | T | accuracy % | Δ vs ANN | energy mJ/img | energy vs ANN | mean timesteps |",
             "|---|---|---|---|---|---|---|"]
    order = {m: i for i, m in enumerate((*METHODS, "adafire+iat", "adafire+ssc+iat"))}
    for r in sorted(rows, key=lambda r: (r["T"], order.get(r["method"], 99))):
        lines.append(f"| {r['method']} | {r['T']} | {r['accuracy']:.2f} | {r['accuracy'] - r['ann_accuracy']:+.2f} | "
                     f"{r['energy_mj']:.4f} | {r['energy_mj'] / r['ann_energy_mj']:.2f}× | "
                     f"{r['mean_timesteps']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
