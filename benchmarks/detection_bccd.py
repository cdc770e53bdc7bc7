"""BCCD detection: mAP and energy of every conversion method against the ANN, on the whole test set.

The zoo detector ``zoo/fcos_lite_bccd.pt`` (FCOS-lite, trained here) is converted with each method
(plain, calibration, burstfire, adafire, adafire+ssc) at every T, with calibration images from the
TRAINING split only (64 images; thresholds and bias correction on 32 of them, sensitivity profiling
on max(1, 64 // T)); adafire+ssc is also run with IAT (early exit, policy fitted on the
calibration images). Every run is scored on the 72 test images with torchmetrics'
MeanAveragePrecision (COCO protocol); energy per image includes the floating-point pre- and
post-processing (layers of kind ``outside.*``). Results go to ``benchmarks/results/detection_bccd.json``
after every run, so an interrupted run resumes; the Markdown table, the box pictures and the
README section are written from that file.

    python benchmarks/detection_bccd.py --threads 1
    python benchmarks/detection_bccd.py --readme        # only redraw pictures/tables and update the README
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import REPO, RESULTS, SHARED, command, machine, write_results

from adacal import results as res
from adacal.atomic import atomic_write_json
from adacal.config import CalibrationConfig, DataSpec, ModelSpec, PipelineConfig
from adacal.evaluate import evaluate_ann
from adacal.jobs import convert_ann, evaluate_snn, load_ann, load_data

log = logging.getLogger("benchmarks.detection_bccd")

NAME = "detection_bccd"
METHODS = ("plain", "calibration", "burstfire", "adafire", "adafire+ssc")
IAT_METHOD = "adafire+ssc"
RHO = (1.0, 1.5, 2.0, 3.0)
PICTURE_RUNS = ("calibration@T64", "adafire@T16")
EXAMPLES = 4  # fixed test images shown in the pictures (the first four of the test split)
BEGIN, END = "<!-- detection:begin -->", "<!-- detection:end -->"


def _job(args: argparse.Namespace) -> tuple[DataSpec, ModelSpec]:
    data = DataSpec("bccd", data_dir=str(args.data_dir), calib_size=64, calib_batch_size=32, batch_size=8)
    model = ModelSpec("fcos_lite", weights=str(args.weights))
    return data, model


def run(args: argparse.Namespace) -> dict[str, Any]:
    spec, mspec = _job(args)
    data = load_data(spec)
    ann = load_ann(mspec, data)
    path = RESULTS / f"{NAME}.json"
    results = json.loads(path.read_text()) if path.exists() else None
    settings = {"timesteps": list(args.timesteps), "methods": list(METHODS), "iat_method": IAT_METHOD,
                "rho_candidates": list(RHO), "phi_target": 4, "profile_rows": 64, "calib_size": 64,
                "calib_batch": 32, "alpha_base": args.alpha_base}
    if results is None or results.get("settings") != settings:
        results = res.new_results("sweep", task=data.task.describe(), settings=settings, command=command(),
                                  model={"name": "fcos_lite", "dataset": "bccd", "weights": "zoo/fcos_lite_bccd.pt",
                                         "parameters": sum(p.numel() for p in ann.parameters()),
                                         "test_images": len(data.test.dataset)},  # type: ignore[arg-type]
                                  environment=machine())
        results["complete"] = False
    if not results["ann"]["metrics"]:
        results["ann"]["metrics"] = evaluate_ann(ann, data.test, task=data.task)
    done = {r["name"] for r in results["runs"]}
    workdir = Path(args.workdir)
    t_all = time.perf_counter()
    # the runs behind the targets first (AdaFire T=16, Calibration T=64), then the rest of the grid
    plan = [(T, m) for T in args.timesteps for m in METHODS]
    first = [(16, "adafire"), (64, "calibration")] + [(T, m) for T in (16, 64, 4, 8, 32) for m in METHODS]
    plan = [p for p in dict.fromkeys(first) if p in plan] + [p for p in plan if p not in first]
    for T, method in plan:
        names = [res.run_name(method, T)] + ([res.run_name(method, T, True)] if method == IAT_METHOD else [])
        if all(n in done for n in names):
            continue
        cfg = PipelineConfig(method=method, timesteps=T, phi_target=4, rho_candidates=RHO,
                             profile_batch=max(1, 64 // T),
                             calibration=CalibrationConfig(num_batches=1, correction_batches=1))
        t0 = time.perf_counter()
        snn, record = convert_ann(ann, data, cfg, workdir=workdir / f"T{T}")
        t1 = time.perf_counter()
        for name in names:
            if name in done:
                continue
            iat = name != names[0]
            t2 = time.perf_counter()
            ev, policy, _ = evaluate_snn(snn, data, timesteps=T, iat=iat, alpha_base=args.alpha_base,
                                         examples=1 if name in PICTURE_RUNS else 0)
            entry = res.make_run(method, T, ev, iat=iat, record=record, policy=policy,
                                 times={"convert": t1 - t0, "evaluate": time.perf_counter() - t2})
            if ev.get("examples"):
                _save_examples(name, ev["examples"][0])
                entry["examples"] = f"{NAME}_examples/{name.replace('@', '_').replace('+', '-')}.npz"
            results["runs"].append(entry)
            results["ann"]["energy_mj"] = ev.get("ann_energy_mj")
            done.add(name)
            log.info("%s: mAP@.5 %.2f mAP %.2f energy %.4g mJ (%.2f mean T)", name, entry["metrics"]["map_50"],
                     entry["metrics"]["map"], entry["energy_mj"], entry["mean_timesteps"])
            results["timing"]["sweep_s"] = results["timing"].get("sweep_s", 0.0) + time.perf_counter() - t2
            atomic_write_json(path, results)
    results["complete"] = all(res.run_name(m, T) in done for T in args.timesteps for m in METHODS)
    results["timing"]["last_session_s"] = time.perf_counter() - t_all
    atomic_write_json(path, results)
    return results


def _save_examples(name: str, ex: dict[str, np.ndarray]) -> None:
    from adacal.atomic import atomic_write

    out = RESULTS / f"{NAME}_examples" / f"{name.replace('@', '_').replace('+', '-')}.npz"
    keep = {k: np.asarray(v)[:EXAMPLES] for k, v in ex.items()}
    atomic_write(out, lambda f: np.savez_compressed(f, **keep))


def _ann_examples(args: argparse.Namespace) -> dict[str, np.ndarray]:
    from adacal.detection.boxes import unpad_target
    from adacal.detection.pictures import pack_examples

    spec, mspec = _job(args)
    data = load_data(spec)
    ann = load_ann(mspec, data)
    x, y = next(iter(data.test))
    with torch.no_grad():
        dets = data.task.detections(ann(x[:EXAMPLES]))
    return pack_examples(x[:EXAMPLES], dets, unpad_target({k: v[:EXAMPLES] for k, v in y.items()}))


def pictures(args: argparse.Namespace, results: dict[str, Any]) -> Path | None:
    from adacal.detection.pictures import draw_panels

    cols: list[tuple[str, dict[str, np.ndarray]]] = []
    ann = _ann_examples(args)
    cols.append(("ground truth", {k: ann[k] for k in ("image", "gt_boxes", "gt_labels")}))
    cols.append(("ANN", ann))
    for name in PICTURE_RUNS:
        run = next((r for r in results["runs"] if r["name"] == name and r.get("examples")), None)
        if run is None:
            log.info("no examples of %s yet", name)
            continue
        with np.load(RESULTS / run["examples"]) as z:
            ex = {k: z[k] for k in z.files}
        label = f"{run['method']} T={run['timesteps']} ({1e3 * run['energy_mj']:.0f} µJ)"
        cols.append((label, ex))
    classes = list((results["task"].get("info") or {}).get("classes") or [])
    return draw_panels(cols, RESULTS / f"{NAME}_boxes.png", classes=classes)


# ---------------------------------------------------------------------------------------- tables
def _cell(run: dict[str, Any] | None) -> str:
    if run is None:
        return "–"
    m = run["metrics"]
    mean = f", {run['mean_timesteps']:.1f} T" if run.get("iat") else ""
    return f"{m['map_50']:.1f} / {m['map']:.1f} / {1e3 * run['energy_mj']:.0f}{mean}"


def table(results: dict[str, Any]) -> list[str]:
    Ts = sorted({r["timesteps"] for r in results["runs"]})
    ann = results["ann"]
    lines = ["| method | " + " | ".join(f"T={T}" for T in Ts) + " |", "|---|" + "---|" * len(Ts)]
    m = ann["metrics"]
    first = f"{m['map_50']:.1f} / {m['map']:.1f} / {1e3 * (ann['energy_mj'] or float('nan')):.0f}"
    lines.append("| ANN (any T) | " + " | ".join([first] + ["″"] * (len(Ts) - 1)) + " |")
    for m in METHODS:
        for iat in (False, True):
            runs = {r["timesteps"]: r for r in results["runs"] if r["method"] == m and bool(r.get("iat")) == iat}
            if runs:
                lines.append(f"| {m}{' + IAT' if iat else ''} | " + " | ".join(_cell(runs.get(T)) for T in Ts) + " |")
    return lines


def targets(results: dict[str, Any]) -> list[str]:
    ann = results["ann"]["metrics"]["map_50"]
    get = {r["name"]: r for r in results["runs"]}
    ada, cal = get.get("adafire@T16"), get.get("calibration@T64")
    lines = ["| target | measured | met |", "|---|---|---|"]
    if ada is not None:
        gap = ann - ada["metrics"]["map_50"]
        lines.append(f"| AdaFire at T=16 within 1.5 mAP@.5 points of the ANN ({ann:.1f}) | "
                     f"{ada['metrics']['map_50']:.1f} ({-gap:+.1f} vs the ANN), {1e3 * ada['energy_mj']:.0f} µJ | "
                     f"{'yes' if gap <= 1.5 else '**no**'} |")
    if cal is not None:
        lines.append(f"| Calibration at T=64, reported beside it | {cal['metrics']['map_50']:.1f} "
                     f"({cal['metrics']['map_50'] - ann:+.1f} vs the ANN), {1e3 * cal['energy_mj']:.0f} µJ | – |")
    return lines


def notes(results: dict[str, Any]) -> list[str]:
    """Facts the README's prose refers to, computed from the runs."""
    out = []
    runs = {r["name"]: r for r in results["runs"]}
    ref = runs.get("adafire@T16")
    if ref is not None:
        parts = {x["name"]: 1e3 * x["energy_mj"] for x in ref["layers"] if x["name"].startswith("outside.")}
        out.append(f"- Floating-point part per image (adafire@T16): {sum(parts.values()):.1f} µJ, of which NMS "
                   f"{parts.get('outside.nms', 0.0):.1f} µJ, of {1e3 * ref['energy_mj']:.0f} µJ in all.")
    for r in results["runs"]:
        if r.get("iat"):
            fixed = runs.get(res.run_name(r["method"], r["timesteps"]))
            if fixed is not None:
                out.append(f"- {r['name']}: {r['mean_timesteps']:.2f} mean timesteps, {1e3 * r['energy_mj']:.0f} µJ "
                           f"vs {1e3 * fixed['energy_mj']:.0f} µJ at fixed T.")
    return out


def markdown(results: dict[str, Any]) -> str:
    per_class = results["ann"]["metrics"].get("ap50_per_class") or []
    classes = (results["task"].get("info") or {}).get("classes") or []
    lines = [f"# {NAME}", "", f"Command: `{results.get('command')}`", "",
             "Cells: mAP@.5 / mAP@[.5:.95] (%, COCO protocol, torchmetrics, all 72 test images) / energy per "
             "image (µJ, SNN incl. floating-point pre/post-processing); IAT rows also give the mean timesteps.", "",
             *table(results), "", *targets(results), "", *notes(results), "",
             "ANN AP@.5 per class: " + ", ".join(f"{c} {v:.1f}" for c, v in zip(classes, per_class) if v is not None),
             "", f"Complete: {results.get('complete')}; machine: {results['environment'].get('cpu')}, "
             f"{results['environment'].get('torch_threads')} thread(s)."]
    return "\n".join(lines) + "\n"


def readme(results: dict[str, Any]) -> None:
    path = REPO / "README.md"
    text = path.read_text()
    if BEGIN not in text or END not in text:
        log.warning("README has no %s ... %s markers; not updated", BEGIN, END)
        return
    body = "\n".join([BEGIN, "", *table(results), "", *targets(results), "", *notes(results), "", END])
    path.write_text(re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: body, text, flags=re.S))


def main() -> None:
    global NAME, METHODS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=SHARED / "data" / "detection" / "bccd")
    ap.add_argument("--weights", type=Path, default=REPO / "zoo" / "fcos_lite_bccd.pt")
    ap.add_argument("--timesteps", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    ap.add_argument("--alpha-base", type=float, default=0.6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", default=str(REPO / "runs" / NAME), help="sensitivity-profile checkpoints")
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--name", default=NAME, help="result file name (another name for trial runs)")
    ap.add_argument("--readme", action="store_true", help="only write the table, pictures and README section")
    args = ap.parse_args()
    NAME, METHODS = args.name, tuple(args.methods)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = json.loads((RESULTS / f"{NAME}.json").read_text()) if args.readme else run(args)
    pictures(args, results)
    write_results(NAME, results, markdown(results))
    readme(results)


if __name__ == "__main__":
    main()
