"""CamVid semantic segmentation: the zoo FCN converted with every method at T = 4..64, on all 233 test images.

Runs exactly the job a user runs (``adacal sweep --config camvid_fcn --data-dir ../shared/data/camvid
--weights zoo/fcn_small_camvid.pt``): the ANN, plain, calibration, burstfire, adafire and adafire+ssc
at every T plus adafire+ssc with IAT, calibrated on 16 training images, evaluated on the 233 test
images (mIoU over 11 classes with void ignored, IoU per class, pixel accuracy, energy per image,
wall time). The sweep folder (default ``runs/segmentation_camvid``, resumable: rerun the command)
holds the full results, report and pictures; this script condenses them into
``benchmarks/results/segmentation_camvid.{json,md}`` and copies the pictures next to them.

    python benchmarks/segmentation_camvid.py --threads 1
    python benchmarks/segmentation_camvid.py --collect      # rewrite the result files from the sweep folder
    python benchmarks/segmentation_camvid.py --readme       # regenerate the README's segmentation section
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from _common import REPO, RESULTS, command, machine, write_results

NAME = "segmentation_camvid"
METHODS = ("plain", "calibration", "burstfire", "adafire", "adafire+ssc", "adafire+ssc+iat")
BEGIN, END = "<!-- segmentation:begin -->", "<!-- segmentation:end -->"
#: Pictures copied from the sweep folder into benchmarks/results (README and the .md show them).
PICTURES = ("segmentation_examples", "segmentation_class_iou", "metric_vs_timesteps", "metric_vs_energy")


def sweep_argv(args: argparse.Namespace) -> list[str]:
    """The ``adacal sweep`` command line this benchmark runs (recorded in the results)."""
    return ["sweep", "--config", "camvid_fcn", "--data-dir", str(args.data_dir), "--weights", str(args.weights),
            "--timesteps", ",".join(map(str, args.timesteps)), "--methods", ",".join(args.methods),
            "--threads", str(args.threads), "--out", str(args.run)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from adacal.cli import job_for
    from adacal.jobs import sweep_to_folder

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    job = job_for(sweep_argv(args))
    return sweep_to_folder(job, args.run, command="adacal " + " ".join(sweep_argv(args)))


def _short(run: dict[str, Any]) -> dict[str, Any]:
    m = run.get("metrics") or {}
    conv = run.get("conversion") or {}
    return {"name": run["name"], "method": run["method"] + ("+iat" if run.get("iat") else ""), "T": run["timesteps"],
            "iat": bool(run.get("iat")), "miou": m.get("miou"), "pixel_accuracy": m.get("pixel_accuracy"),
            "iou_per_class": m.get("iou_per_class"), "energy_mj": run.get("energy_mj"),
            "energy_ratio": run.get("energy_ratio"), "mean_timesteps": run.get("mean_timesteps"),
            "exit_histogram": run.get("exit_histogram"), "time_s": run.get("time_s"),
            "knobs": conv.get("knobs"), "stage_times": conv.get("stage_times"),
            "alpha_base": (run.get("iat_policy") or {}).get("alpha_base"),
            "delta": (run.get("iat_policy") or {}).get("delta")}


def collect(args: argparse.Namespace, started: float | None = None) -> dict[str, Any]:
    """Condense the sweep folder's (partial or final) results into the committed result files."""
    folder = Path(args.run)
    final = folder / "summary.json"
    src = final if final.is_file() else folder / "summary.partial.json"
    results = json.loads(src.read_text())
    ann = results["ann"]
    n_test = results["runs"][0]["num_samples"] if results["runs"] else None
    zoo = REPO / "zoo" / "fcn_small_camvid.json"
    state = {
        "command": command(),
        "sweep_command": results.get("command"),
        "complete": src == final,
        "machine": {**machine(), "torch_threads": (results.get("environment") or {}).get("threads")},
        "test_images": n_test,
        "data": "CamVid (SegNet version, 11 classes, void ignored) from ../shared/data/camvid at 180x240: "
                f"{n_test} test images; calibration: 16 training images (seeded); never the test images",
        "zoo": {k: v for k, v in json.loads(zoo.read_text()).items() if k != "history"} if zoo.is_file() else None,
        "model": results["model"],
        "classes": (results.get("task") or {}).get("info", {}).get("classes"),
        "settings": {k: results["settings"].get(k) for k in ("data", "pipeline", "sweep")},
        "ann": {"miou": ann["metrics"].get("miou"), "pixel_accuracy": ann["metrics"].get("pixel_accuracy"),
                "iou_per_class": ann["metrics"].get("iou_per_class"), "energy_mj": ann.get("energy_mj")},
        "runs": [_short(r) for r in results["runs"]],
        "timing": results.get("timing"),
        "benchmark_s": None if started is None else time.perf_counter() - started,
    }
    state["targets"] = targets(state)
    pictures = {}
    for name in PICTURES:
        p = folder / f"{name}.png"
        if p.is_file():
            dst = RESULTS / f"{NAME}_{name}.png"
            shutil.copyfile(p, dst)
            pictures[name] = dst.name
    state["pictures"] = pictures
    write_results(NAME, state, markdown(state))
    return state


def _run(state: dict[str, Any], method: str, T: int) -> dict[str, Any] | None:
    return next((r for r in state["runs"] if r["method"] == method and r["T"] == T), None)


def targets(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets against the measured numbers (computed, never typed)."""
    rows = []
    ann = state["ann"]["miou"]
    a16, c64 = _run(state, "adafire", 16), _run(state, "calibration", 64)
    if a16 and ann is not None:
        d = a16["miou"] - ann
        rows.append({"target": "AdaFire at T=16 within 1 mIoU point of the ANN", "measured": f"{d:+.2f} points",
                     "met": d >= -1.0})
    if a16 and c64:
        d = c64["miou"] - a16["miou"]
        e = c64["energy_mj"] / a16["energy_mj"]
        rows.append({"target": "Calibration at T=64 below AdaFire at T=16 at comparable energy (seed Table 4)",
                     "measured": f"{d:+.2f} mIoU points at {e:.2f}x AdaFire's energy", "met": d < 0})
    return rows


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "–" if v is None else format(v, spec)


def pivot(state: dict[str, Any]) -> list[str]:
    Ts = sorted({r["T"] for r in state["runs"]})
    lines = ["| method | " + " | ".join(f"T={T}" for T in Ts) + " |", "|---|" + "---|" * len(Ts)]
    for m in METHODS:
        cells = []
        for T in Ts:
            r = _run(state, m, T)
            if r is None:
                cells.append("–")
                continue
            mean = f" ({r['mean_timesteps']:.1f})" if r["iat"] else ""
            cells.append(f"{r['miou']:.2f} / {r['energy_mj']:.3f}{mean}")
        if any(c != "–" for c in cells):
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def class_table(state: dict[str, Any]) -> list[str]:
    classes = state.get("classes") or []
    cols = [("ANN", state["ann"])]
    for m, T in (("calibration", 64), ("adafire", 16), ("burstfire", 16), ("adafire+ssc", 16), ("adafire", 64)):
        r = _run(state, m, T)
        if r is not None:
            cols.append((f"{m} T={T}", r))
    lines = ["| class | " + " | ".join(c for c, _ in cols) + " |", "|---|" + "---:|" * len(cols)]
    for i, name in enumerate(classes):
        lines.append(f"| {name} | " + " | ".join(_fmt((r.get("iou_per_class") or [None] * 99)[i], ".1f")
                                                   for _, r in cols) + " |")
    lines.append("| **mIoU** | " + " | ".join(_fmt(r.get("miou"), ".2f") for _, r in cols) + " |")
    lines.append("| pixel accuracy | " + " | ".join(_fmt(r.get("pixel_accuracy"), ".2f") for _, r in cols) + " |")
    return lines


def time_table(state: dict[str, Any]) -> list[str]:
    Ts = sorted({r["T"] for r in state["runs"]})
    lines = ["| method | " + " | ".join(f"T={T}" for T in Ts) + " |", "|---|" + "---|" * len(Ts)]
    for m in METHODS:
        cells = []
        for T in Ts:
            r = _run(state, m, T)
            t = (r or {}).get("time_s") or {}
            cells.append("–" if r is None else f"{t.get('convert', 0):.0f} + {t.get('evaluate', 0):.0f}")
        if any(c != "–" for c in cells):
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def iat_table(state: dict[str, Any]) -> list[str]:
    rows = ["| T | adafire+ssc, all T steps | with IAT | mean timesteps | energy vs all T steps | exits per step |",
            "|---|---|---|---|---|---|"]
    for r in sorted((r for r in state["runs"] if r["iat"]), key=lambda r: r["T"]):
        base = _run(state, "adafire+ssc", r["T"])
        if base is None:
            continue
        rows.append(f"| {r['T']} | {base['miou']:.2f} | {r['miou']:.2f} | {r['mean_timesteps']:.2f} | "
                    f"{r['energy_mj'] / base['energy_mj']:.2f}x | {r['exit_histogram']} |")
    return rows


def _machine(m: dict[str, Any]) -> str:
    return (f"{m['cpu']}, {m['cores']} cores (shared with other jobs), {m['torch_threads']} torch thread, "
            f"torch {m['torch']}, Python {m['python']}")


def markdown(state: dict[str, Any]) -> str:
    ann = state["ann"]
    lines = [f"# CamVid semantic segmentation: conversion methods{'' if state['complete'] else ' (PARTIAL)'}", "",
             f"Command: `{state['command']}` (runs `{state['sweep_command']}`)",
             f"Machine: {_machine(state['machine'])}",
             f"Data: {state['data']}", *zoo_line(state),
             f"Model: {state['model'].get('name')} weights {state['model'].get('weights')} "
             f"(sha256 {state['model'].get('weights_sha256')}), {state['model'].get('parameters')} parameters",
             f"ANN: mIoU {_fmt(ann['miou'])}, pixel accuracy {_fmt(ann['pixel_accuracy'])}, "
             f"{_fmt(ann['energy_mj'], '.3f')} mJ per image", "",
             "## mIoU (%) / energy (mJ per image); IAT: mean timesteps in brackets", "", *pivot(state), "",
             "## Targets", "", "| target | measured | met |", "|---|---|---|",
             *(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'no'} |" for t in state["targets"]), "",
             "## IoU per class (%) on the whole test set", "", *class_table(state), "",
             "## Input-aware adaptive timesteps (IAT; α_base "
             f"{next((r['alpha_base'] for r in state['runs'] if r['iat']), '–')}, δ "
             f"{next((r['delta'] for r in state['runs'] if r['iat']), '–')}, fitted on the calibration images)", "",
             *iat_table(state), "",
             f"## Wall time per run: conversion + evaluation of the {state['test_images']} test images (s, "
             f"{state['machine']['torch_threads']} thread, 2 cores shared with other jobs)", "",
             *time_table(state), ""]
    for name, file in state.get("pictures", {}).items():
        lines += [f"![{name}]({file})", ""]
    return "\n".join(lines)


def zoo_line(state: dict[str, Any]) -> list[str]:
    z = state.get("zoo")
    if not z:
        return []
    return [f"Zoo network `zoo/{z['file']}` ({z['num_params']} parameters, sha256 {z['sha256'][:12]}…): "
            f"{z['epochs']} epochs in {z['wall_time_s'] / 60:.0f} min on 1 thread (`{z['command']}`), test mIoU "
            f"{z['test_miou']:.2f}, pixel accuracy {z['test_pixel_accuracy']:.2f}; log and hyper-parameters in "
            "`zoo/fcn_small_camvid.json`.", ""]


def readme(state: dict[str, Any]) -> None:
    """Regenerate the README's segmentation results between the markers, from the result file."""
    ann = state["ann"]
    body = [
        BEGIN,
        f"Generated by `python benchmarks/segmentation_camvid.py --readme` from "
        f"`benchmarks/results/{NAME}.json`{'' if state['complete'] else ' (**partial: the sweep has not finished**)'}"
        f"; produced by `{state['sweep_command']}` on {state['machine']['cpu']} "
        f"({state['machine']['torch_threads']} thread, 2 cores shared with other jobs).",
        "",
        *zoo_line(state),
        f"ANN: mIoU **{ann['miou']:.2f}**, pixel accuracy {ann['pixel_accuracy']:.2f}, {ann['energy_mj']:.3f} mJ per "
        f"image. Cells: mIoU % / energy mJ per image (IAT: mean timesteps in brackets), {state['test_images']} test "
        "images:",
        "",
        *pivot(state),
        "",
        "| target | measured | met |",
        "|---|---|---|",
        *(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'no'} |" for t in state["targets"]),
        "",
        "IoU per class (%):",
        "",
        *class_table(state),
        "",
    ]
    if "segmentation_examples" in state.get("pictures", {}):
        body += [f"![CamVid test images: input, ground truth, ANN, Calibration, AdaFire]"
                 f"(benchmarks/results/{state['pictures']['segmentation_examples']})", ""]
    body.append(END)
    path = REPO / "README.md"
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md lacks the {BEGIN} / {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(head + "\n".join(body) + tail)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=Path("zoo/fcn_small_camvid.pt"))
    ap.add_argument("--data-dir", type=Path, default=Path("..") / "shared" / "data" / "camvid")
    ap.add_argument("--timesteps", type=int, nargs="+", default=[16, 64, 4, 8, 32],
                    help="T values in the order they run (the README pair 16/64 first)")
    ap.add_argument("--methods", nargs="+", default=["calibration", "adafire", "burstfire", "adafire+ssc", "plain"],
                    help="methods in the order they run at each T (adafire+ssc also with IAT)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--run", type=Path, default=Path("runs") / NAME, help="the sweep folder (resumable)")
    ap.add_argument("--collect", action="store_true", help="only rewrite the result files from the sweep folder")
    ap.add_argument("--readme", action="store_true", help="only regenerate the README section from the result file")
    args = ap.parse_args()
    if args.readme:
        readme(json.loads((RESULTS / f"{NAME}.json").read_text()))
        return
    if not args.collect:
        started = time.perf_counter()
        run(args)
        collect(args, started)
        return
    collect(args)


if __name__ == "__main__":
    main()
