"""PointNet on ModelNet10 (seed Table 5) and the ShapeNetPart "Cap" part-segmentation check (Table 6).

Classification: the zoo PointNet (``zoo/pointnet_cls_modelnet10.pt``) is converted with every
method (plain, calibration, burstfire φ=4, adafire φ_target=4, adafire+ssc; adafire+ssc also with
IAT) at T ∈ {4, 8, 16, 32, 64}, calibrated on training shapes and scored on all 908 test shapes:
overall and class-mean accuracy, energy per shape. Part segmentation: the zoo PointNet
(``zoo/pointnet_seg_shapenetpart_cap.pt``, trained on the 5 "Cap" validation shapes here) on the 11
"Cap" test shapes, the same grid in instance mIoU — a small-sample check, not a benchmark.

Both parts run the library's sweep job (``adacal.jobs.sweep_to_folder``) into ``runs/bench_*`` and
resume there after an interruption; this script then writes ``benchmarks/results/pointnet_modelnet10
.{json,md}`` (atomically) and the plots. ``--readme`` only regenerates the README's point-cloud block
from the committed result file.

    python benchmarks/pointnet_modelnet10.py --threads 1 [--part cls|seg|all] [--timesteps 4 8 16 32 64]
    python benchmarks/pointnet_modelnet10.py --readme
"""
from __future__ import annotations

import argparse
import json
import logging
import re
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from _common import REPO, RESULTS, SHARED, command, machine, write_results

NAME = "pointnet_modelnet10"
METHODS = ("plain", "calibration", "burstfire", "adafire", "adafire+ssc")
PARTS = {
    "cls": {"config": "pointnet_modelnet10", "weights": "zoo/pointnet_cls_modelnet10.pt",
            "data": SHARED / "data" / "pointcloud" / "modelnet10", "out": "runs/bench_pointnet_modelnet10",
            "title": "ModelNet10 shape classification (908 test shapes)"},
    "seg": {"config": "pointnet_cap", "weights": "zoo/pointnet_seg_shapenetpart_cap.pt",
            "data": SHARED / "data" / "pointcloud" / "shapenetpart_cap", "out": "runs/bench_pointnet_cap",
            "title": "ShapeNetPart \"Cap\" part segmentation (11 test shapes; small-sample check)"},
}
BEGIN, END = "<!-- pointcloud:begin -->", "<!-- pointcloud:end -->"


def job_for(part: str, timesteps: list[int], threads: int) -> Any:
    """The packaged config of ``part`` with the benchmark's data, weights and T grid."""
    from adacal.config import JobConfig, load_config, read_yaml

    spec = PARTS[part]
    with resources.as_file(resources.files("adacal") / "configs" / f"{spec['config']}.yaml") as path:
        job = load_config(JobConfig, read_yaml(path))
    return replace(job, threads=threads, report=True,
                   model=replace(job.model, weights=str(REPO / spec["weights"])),
                   data=replace(job.data, data_dir=str(spec["data"])),
                   sweep=replace(job.sweep, timesteps=tuple(timesteps), methods=METHODS))


def compact(results: dict[str, Any]) -> dict[str, Any]:
    """What the result file keeps of a sweep's summary.json (the full file stays in runs/)."""
    runs = []
    for r in results["runs"]:
        conv = r.get("conversion") or {}
        runs.append({
            "name": r["name"], "method": r["method"], "T": r["timesteps"], "iat": r["iat"],
            "metrics": r["metrics"], "metrics_per_step": r.get("metrics_per_step"),
            "energy_mj": r["energy_mj"], "ann_energy_mj": r["ann_energy_mj"], "energy_ratio": r["energy_ratio"],
            "mean_timesteps": r["mean_timesteps"], "exit_histogram": r.get("exit_histogram"),
            "iat_curve": r.get("iat_curve"), "knobs": conv.get("knobs"),
            "analog_layers": [x["name"] for x in r.get("layers") or [] if x.get("kind") == "analog"],
            "time_s": r.get("time_s"),
        })
    return {"task": results["task"], "model": results["model"], "ann": results["ann"], "runs": runs,
            "settings": {k: results["settings"].get(k) for k in ("data", "pipeline", "sweep", "model")},
            "timing": results.get("timing")}


def _run(part: dict[str, Any], method: str, T: int, iat: bool = False) -> dict[str, Any] | None:
    return next((r for r in part["runs"] if r["method"] == method and r["T"] == T and r["iat"] == iat), None)


def targets(state: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """The issue's targets against the measured numbers."""
    cls = state.get("cls")
    if not cls:
        return []
    ann = cls["ann"]["metrics"]["accuracy"]
    rows: list[tuple[str, str, bool | None]] = []
    a16, c64 = _run(cls, "adafire", 16), _run(cls, "calibration", 64)
    if a16:
        d = a16["metrics"]["accuracy"] - ann
        rows.append(("adafire at T=16 within 0.3 points of the ANN (seed: −0.21)", f"{d:+.2f} points", d >= -0.3))
    if c64:
        d = c64["metrics"]["accuracy"] - ann
        rows.append(("calibration at T=64, reported beside it (seed: −1.84)", f"{d:+.2f} points", None))
    return rows


def pivot(part: dict[str, Any], key: str, *, energy: bool = True) -> list[str]:
    """Methods × T: metric (and energy per shape in µJ; IAT: mean timesteps)."""
    Ts = sorted({r["T"] for r in part["runs"]})
    lines = ["| method | " + " | ".join(f"T={T}" for T in Ts) + " |", "|---|" + "---|" * len(Ts)]
    for method in (*METHODS, "adafire+ssc+iat"):
        cells = []
        for T in Ts:
            r = _run(part, method.removesuffix("+iat"), T, method.endswith("+iat"))
            if r is None:
                cells.append("–")
                continue
            cell = f"{r['metrics'][key]:.2f}"
            if energy:
                cell += f" / {1e3 * r['energy_mj']:.1f}"
            if r["iat"]:
                cell += f" ({r['mean_timesteps']:.1f})"
            cells.append(cell)
        if any(c != "–" for c in cells):
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def ann_line(part: dict[str, Any], keys: tuple[str, ...]) -> str:
    m = part["ann"]["metrics"]
    e = part["ann"].get("energy_mj")
    return ("ANN: " + ", ".join(f"{part['task']['metrics'][k]['label'].removesuffix(' (%)')} {m[k]:.2f} %"
                                for k in keys)
            + (f"; {1e3 * e:.1f} µJ per shape (all MACs at 4.6 pJ)" if e else ""))


def markdown(state: dict[str, Any]) -> str:
    lines = ["# PointNet: conversion methods on ModelNet10 and the ShapeNetPart Cap check", "",
             f"Machine: {state['machine']}", ""]
    cls, seg = state.get("cls"), state.get("seg")
    if cls:
        lines += [f"## {PARTS['cls']['title']}", "", f"Command: `{cls['command']}`", "",
                  ann_line(cls, ("accuracy", "class_accuracy")), "",
                  "Overall accuracy % / energy µJ per shape (IAT: mean timesteps in brackets):", "",
                  *pivot(cls, "accuracy"), "", "Class-mean accuracy %:", "",
                  *pivot(cls, "class_accuracy", energy=False), ""]
        rows = targets(state)
        if rows:
            lines += ["| target | measured | met |", "|---|---|---|",
                      *(f"| {t} | {m} | {'-' if ok is None else 'yes' if ok else 'no'} |" for t, m, ok in rows), ""]
    if seg:
        lines += [f"## {PARTS['seg']['title']}", "", f"Command: `{seg['command']}`", "",
                  ann_line(seg, ("instance_miou", "class_miou")), "",
                  "Instance mIoU % / energy µJ per shape (IAT: mean timesteps in brackets):", "",
                  *pivot(seg, "instance_miou"), ""]
    return "\n".join(lines) + "\n"


def plots(state: dict[str, Any]) -> None:
    from adacal.report.plots import plot_metric_vs_energy, plot_metric_vs_timesteps

    for part, key in (("cls", "accuracy"), ("seg", "instance_miou")):
        data = state.get(part)
        if not data:
            continue
        label = data["task"]["metrics"][key]["label"]
        rows = [{"method": r["method"], "iat": r["iat"], "timesteps": r["T"], "mean_timesteps": r["mean_timesteps"],
                 "value": r["metrics"][key], "energy_ratio": r["energy_ratio"]}
                for r in data["runs"] if r["method"] != "plain"]  # plain is far below the rest
        if not rows:
            continue
        ann = data["ann"]["metrics"][key]
        ax = plot_metric_vs_timesteps(rows, ann_value=ann, label=label)
        ax.set_title(f"PointNet, {PARTS[part]['title']}: {label} vs T (plain omitted)", fontsize=9)
        from adacal.report.plots import save_figure

        save_figure(ax.figure, RESULTS / f"{NAME}_{part}_timesteps.png")
        ax = plot_metric_vs_energy([r for r in rows if not r["iat"]], ann_value=ann, label=label)
        ax.set_title(f"PointNet, {PARTS[part]['title']}: {label} vs energy (plain omitted)", fontsize=9)
        save_figure(ax.figure, RESULTS / f"{NAME}_{part}_energy.png")


def readme_block(state: dict[str, Any]) -> str:
    """The README's point-cloud results, generated from the result file."""
    out = [BEGIN, f"Generated by `python benchmarks/pointnet_modelnet10.py --readme` from "
                  f"`benchmarks/results/{NAME}.json` ({state['machine']['cpu']}, "
                  f"{state['machine']['torch_threads']} thread; each part names its command)."]
    cls, seg = state.get("cls"), state.get("seg")
    if cls:
        w = cls["settings"]["model"]["options"].get("width", 1.0)
        out += ["", f"**{PARTS['cls']['title']}**, `{cls['command']}`, PointNet at width {w} (no T-Nets), "
                    f"{ann_line(cls, ('accuracy', 'class_accuracy'))}. Overall accuracy % / energy µJ per shape "
                    "(IAT: mean timesteps in brackets); plots `benchmarks/results/pointnet_modelnet10_cls_*.png`:", "",
                *pivot(cls, "accuracy")]
        rows = targets(state)
        if rows:
            out += ["", "| target | measured | met |", "|---|---|---|",
                    *(f"| {t} | {m} | {'-' if ok is None else 'yes' if ok else 'no'} |" for t, m, ok in rows)]
    if seg:
        w = seg["settings"]["model"]["options"].get("width", 1.0)
        out += ["", f"**{PARTS['seg']['title']}**, `{seg['command']}`, PointNet part segmentation at width {w}, "
                    f"{ann_line(seg, ('instance_miou',))}. Instance mIoU % / energy µJ per shape — "
                    "**11 shapes of one category: a check that the pipeline works end to end, not a measurement "
                    "of part-segmentation accuracy at scale**:", "", *pivot(seg, "instance_miou")]
    return "\n".join([*out, END])


def update_readme(state: dict[str, Any]) -> None:
    from adacal.atomic import atomic_write_text

    path = REPO / "README.md"
    text = path.read_text()
    block = readme_block(state)
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        raise SystemExit(f"README.md has no {BEGIN} marker; add the Tasks section first")
    atomic_write_text(path, text)


def merge_sweeps(state: dict[str, Any], folders: list[Path]) -> None:
    """The classification part from several sweep folders (runs split over T to fit the time at hand);
    each folder's command is listed, runs of the same method, T and IAT flag: the later folder's."""
    from adacal.results import load_results

    merged: dict[tuple[str, int, bool], dict[str, Any]] = {}
    commands, first = [], None
    for folder in folders:
        final = folder / "summary.json"
        results = load_results(final if final.exists() else folder / "summary.partial.json")
        first = first or results
        commands.append(str(results.get("command") or folder))
        for r in compact(results)["runs"]:
            merged[(r["method"], r["T"], r["iat"])] = r
    assert first is not None
    part = compact(first)
    part["runs"] = sorted(merged.values(), key=lambda r: (r["T"], r["method"], r["iat"]))
    state["cls"] = {**part, "command": " ; ".join(commands)}
    state.setdefault("machine", machine())
    write_results(NAME, state, markdown(state))
    plots(state)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("cls", "seg", "all"), default="all")
    ap.add_argument("--timesteps", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--readme", action="store_true", help="only regenerate the README block from the result file")
    ap.add_argument("--merge", nargs="+", type=Path, metavar="SWEEP",
                    help="write the classification part from these sweep folders (each an `adacal sweep --config "
                         "pointnet_modelnet10 ...` run at other T; a later folder's run replaces an earlier one's)")
    args = ap.parse_args()
    path = RESULTS / f"{NAME}.json"
    state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if args.readme:
        update_readme(state)
        return
    if args.merge:
        merge_sweeps(state, args.merge)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    from adacal.jobs import sweep_to_folder

    for part in ("cls", "seg") if args.part == "all" else (args.part,):
        job = job_for(part, args.timesteps, args.threads)
        results = sweep_to_folder(job, REPO / PARTS[part]["out"], command=command())
        state[part] = {**compact(results), "command": command()}
        state.update({"command": command(), "machine": machine()})
        write_results(NAME, state, markdown(state))
        plots(state)


if __name__ == "__main__":
    main()
