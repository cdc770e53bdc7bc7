"""Issue 19 (hardening), measured: subsets that do not mislead, the cost of progress reporting, and
what resuming an interrupted sweep saves.

1. **Subsets.** The shared CIFAR-10 test set is sorted by class, so "the first 2000 images" hold only
   classes 0 and 1. The zoo ResNet-20 and its BurstFire (φ=4) SNN at T=4 are evaluated on those
   2000, on the 2000 that ``adacal evaluate --test-size 2000`` now takes (seeded, stratified by
   class) and on all 10 000, with the class counts of each subset.
2. **Progress.** The same SNN evaluated on 500 test images with no reporter, with the log-line
   reporter the CLI uses off a terminal and with the tqdm bar (written to /dev/null), timed in
   alternation (median of ``--repeats``).
3. **Resume.** ``adacal sweep`` on the bundled digits (9 runs) uninterrupted, then again killed with
   SIGKILL once 5 runs are finished and rerun with the same command: runs taken over, runs
   recomputed and the wall time of the rerun.
   The two calibration orders are also compared prediction by prediction (``calibration_agreement``).
4. **Catalogue.** The bad inputs of ``tests/test_bad_inputs.py``, counted by error class.

    python benchmarks/hardening.py --threads 1   # ≈ 40 min on one shared CPU core; a rerun resumes after the last part
    python benchmarks/hardening.py --readme             # rewrite the README section from the result file
"""
from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import REPO, RESULTS, SHARED, command, interleaved, machine, start, write_results, zoo_ann

NAME = "hardening"
BEGIN, END = "<!-- hardening:begin -->", "<!-- hardening:end -->"
KILL_AFTER_RUNS = 5  # of the resume sweep's 9


def _class_counts(dataset: Any) -> list[int]:
    from adacal.datasets import labels_of

    return np.bincount(labels_of(dataset), minlength=10).tolist()


def subsets(args: argparse.Namespace) -> dict[str, Any]:
    import dataclasses

    from torch.utils.data import Subset

    from adacal.config import DataSpec, PipelineConfig
    from adacal.datasets import ArrayDataset, make_loader
    from adacal.evaluate import evaluate, evaluate_ann
    from adacal.jobs import convert_ann, load_data, subset_facts

    # the packaged resnet20_cifar10 config: 1024 calibration images in batches of 256
    spec = DataSpec("cifar10", data_dir=str(args.data_dir), calib_size=1024, batch_size=256)
    full = load_data(spec)
    sampled = load_data(dataclasses.replace(spec, test_size=2000))  # what `--test-size 2000` evaluates on
    ann = zoo_ann("resnet20")
    cfg = PipelineConfig(method="burstfire", timesteps=4)
    t0 = time.perf_counter()
    snn, record = convert_ann(ann, full, cfg)
    convert_s = time.perf_counter() - t0
    # the calibration set as drawn before issue 19: a random draw read in index (= class) order
    new = full.calib.dataset
    old_idx = np.sort(np.random.default_rng(spec.seed).permutation(50000)[: spec.calib_size])
    old = ArrayDataset(new.images, new.labels, new.transform, old_idx)
    old_snn, _ = convert_ann(ann, dataclasses.replace(full, calib=make_loader(old, spec.batch_size)), cfg)
    calibration = {}
    for name, ds in (("index order (before)", old), ("stratified order (now)", new)):
        first = Subset(ds, range(spec.batch_size))  # the batch thresholds and correction are fitted on
        calibration[name] = {"first_batch_class_counts": _class_counts(first)}
    sets = {"first 2000 (old --test-size)": Subset(full.test.dataset, range(2000)),
            "seeded stratified 2000 (--test-size 2000)": sampled.test.dataset,
            "all 10000": full.test.dataset}
    rows = []
    for name, ds in sets.items():
        loader = make_loader(ds, 250)
        t1 = time.perf_counter()
        ann_acc = evaluate_ann(ann, loader)["accuracy"]
        snn_acc = evaluate(snn, loader, timesteps=4)["accuracy"]
        rows.append({"subset": name, "images": len(ds), "class_counts": _class_counts(ds),
                     "ann_accuracy": ann_acc, "burstfire_T4_accuracy": snn_acc,
                     "seconds": time.perf_counter() - t1})
        print(rows[-1], flush=True)
    full_loader = make_loader(full.test.dataset, 250)
    calibration["index order (before)"]["burstfire_T4_accuracy"] = evaluate(old_snn, full_loader,
                                                                            timesteps=4)["accuracy"]
    calibration["stratified order (now)"]["burstfire_T4_accuracy"] = rows[-1]["burstfire_T4_accuracy"]
    print(calibration, flush=True)
    out = {"rows": rows, "convert_seconds": convert_s, "calibration_set": subset_facts(full)["calib_subset"],
           "calibration_order": calibration, "samples": record["samples"]}
    return out


def calibration_agreement(args: argparse.Namespace) -> dict[str, Any]:
    """The two calibration orders of ``subsets``, compared prediction by prediction on 2000 stratified test
    images: how far apart the two SNNs are, beyond their accuracy."""
    import dataclasses

    from adacal.config import DataSpec, PipelineConfig
    from adacal.datasets import ArrayDataset, make_loader
    from adacal.jobs import convert_ann, load_data

    spec = DataSpec("cifar10", data_dir=str(args.data_dir), calib_size=1024, batch_size=256, test_size=2000)
    data = load_data(spec)
    ann = zoo_ann("resnet20")
    cfg = PipelineConfig(method="burstfire", timesteps=4)
    new = data.calib.dataset
    old_idx = np.sort(np.random.default_rng(spec.seed).permutation(50000)[: spec.calib_size])
    old = ArrayDataset(new.images, new.labels, new.transform, old_idx)
    snns = {"stratified order (now)": convert_ann(ann, data, cfg),
            "index order (before)": convert_ann(ann, dataclasses.replace(data, calib=make_loader(old, 256)), cfg)}
    preds: dict[str, torch.Tensor] = {}
    labels = []
    for name, (snn, _record) in snns.items():
        out = []
        for x, y in data.test:
            out.append(snn.run(x, 4).mean(0).argmax(1))
            if len(labels) < len(data.test):
                labels.append(y)
        preds[name] = torch.cat(out)
    y = torch.cat(labels)
    a, b = preds.values()
    thr = [s[1]["thresholds"] for s in snns.values()]
    rel = [abs(thr[1][k]["mean"] / thr[0][k]["mean"] - 1) for k in thr[0]]
    return {"images": int(y.numel()), "accuracy": {k: 100.0 * float((p == y).float().mean()) for k, p in preds.items()},
            "prediction_agreement_percent": 100.0 * float((a == b).float().mean()),
            "threshold_mean_relative_difference_percent": {"median": 100.0 * float(np.median(rel)),
                                                           "max": 100.0 * float(max(rel))}}


def progress_overhead(args: argparse.Namespace) -> dict[str, Any]:
    from torch.utils.data import Subset

    from adacal import progress
    from adacal.config import DataSpec, PipelineConfig
    from adacal.datasets import make_loader
    from adacal.evaluate import evaluate
    from adacal.jobs import convert_ann, load_data

    data = load_data(DataSpec("cifar10", data_dir=str(args.data_dir), calib_size=1024, batch_size=256, test_size=500))
    snn, _ = convert_ann(zoo_ann("resnet20"), data, PipelineConfig(method="burstfire", timesteps=4))
    loader = make_loader(Subset(data.test.dataset, range(500)), 100)
    devnull = open(os.devnull, "w")  # noqa: SIM115 - kept open for the bars' lifetime

    def run(reporter: Any) -> None:
        with progress.reporting(reporter):
            evaluate(snn, loader, timesteps=4)

    times = interleaved({"none": lambda: run(None), "log lines": lambda: run(progress.LogReporter()),
                         "tqdm bar": lambda: run(progress.TqdmReporter(devnull))}, repeats=args.repeats)
    base = times["none"]
    return {"images": 500, "batches": 5, "repeats": args.repeats, "median_seconds": times,
            "overhead_percent": {k: 100.0 * (v / base - 1.0) for k, v in times.items() if k != "none"}}


def resume(threads: int) -> dict[str, Any]:
    from adacal.models import build_model

    work = Path(tempfile.mkdtemp(prefix="adacal-resume-"))
    torch.manual_seed(0)
    weights = work / "w.pt"
    torch.save(build_model("digits_cnn", 10).state_dict(), weights)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}

    def argv(out: Path) -> list[str]:
        return [sys.executable, "-m", "adacal", "sweep", "--model", "digits_cnn", "--dataset", "digits", "--weights",
                str(weights), "--methods", "plain,calibration,burstfire", "--timesteps", "1,2,3", "--calib-size",
                "128", "--no-iat", "--no-report", "--threads", str(threads), "--out", str(out), "--quiet"]

    t0 = time.perf_counter()
    subprocess.run(argv(work / "full"), env=env, check=True, stdout=subprocess.DEVNULL)
    full_s = time.perf_counter() - t0
    out = work / "killed"
    proc = subprocess.Popen(argv(out), env=env, stdout=subprocess.DEVNULL)
    t0 = time.perf_counter()
    while proc.poll() is None:
        p = out / "summary.partial.json"
        if p.is_file() and len(json.loads(p.read_text())["runs"]) >= KILL_AFTER_RUNS:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    killed_s = time.perf_counter() - t0
    before = json.loads((out / "summary.partial.json").read_text())["runs"]
    t0 = time.perf_counter()
    subprocess.run(argv(out), env=env, check=True, stdout=subprocess.DEVNULL)
    resumed_s = time.perf_counter() - t0
    after = json.loads((out / "summary.json").read_text())["runs"]
    kept = sum(1 for a, b in zip(after, before) if a == b)
    saved = sum(sum(r["time_s"].values()) for r in before)  # convert + evaluate time of the runs taken over
    return {"runs": len(after), "kill_after_runs": KILL_AFTER_RUNS, "killed_after_s": killed_s,
            "killed_rc": proc.returncode,
            "runs_taken_over": kept, "runs_recomputed": len(after) - kept, "uninterrupted_s": full_s,
            "taken_over_run_seconds": saved,
            "rerun_s": resumed_s}


def catalogue() -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location("test_bad_inputs", REPO / "tests" / "test_bad_inputs.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the file executes
    spec.loader.exec_module(mod)
    api = collections.Counter(c[2].__name__ for c in mod.API_CASES)
    cli = collections.Counter(c[3] for c in mod.CLI_CASES)
    return {"api_cases": len(mod.API_CASES), "cli_cases": len(mod.CLI_CASES), "api_by_class": dict(api),
            "cli_by_class": dict(cli)}


# ------------------------------------------------------------------------------------------ report
def markdown(r: dict[str, Any]) -> str:
    s, p, res, cat = r["subsets"], r["progress"], r["resume"], r["catalogue"]
    lines = [f"`{r['command']}` ({r['machine']['cpu']}, {r['machine']['torch_threads']} thread(s))", "",
             "**Test subsets** (zoo ResNet-20, BurstFire φ=4 at T=4, calibrated on "
             f"{s['calibration_set']['size']} stratified training images):", "",
             "| test subset | images | classes present | ANN % | BurstFire T=4 % |", "|---|---|---|---|---|"]
    for row in s["rows"]:
        present = sum(1 for c in row["class_counts"] if c)
        lines.append(f"| {row['subset']} | {row['images']} | {present} of 10 | {row['ann_accuracy']:.2f} | "
                     f"{row['burstfire_T4_accuracy']:.2f} |")
    lines += ["", "**Calibration order** (same model and method; thresholds and bias correction are fitted on the "
              "first calibration batch of 256; accuracy on all 10000 test images):", "",
              "| calibration set | classes in the first batch (count per class 0-9) | BurstFire T=4 % |",
              "|---|---|---|"]
    for name, c in s["calibration_order"].items():
        counts = c["first_batch_class_counts"]
        lines.append(f"| {name} | {sum(1 for k in counts if k)} ({', '.join(map(str, counts))}) | "
                     f"{c['burstfire_T4_accuracy']:.2f} |")
    agree = r.get("calibration_agreement")
    if agree:
        acc = agree["accuracy"]
        thr = agree["threshold_mean_relative_difference_percent"]
        full = [c["burstfire_T4_accuracy"] for c in s["calibration_order"].values()]
        differ = 100 - agree["prediction_agreement_percent"]
        text = (f"The two calibration sets move the thresholds by {thr['median']:.1f} % (median over layers; at most "
                f"{thr['max']:.1f} %) and the two SNNs disagree on {differ:.1f} % of {agree['images']} stratified "
                "test images (accuracy there: " + ", ".join(f"{k} {v:.2f} %" for k, v in acc.items()) + ")")
        if full[0] == full[1]:
            text += "; their equal full-test accuracies are equal counts of correct images, not the same network"
        gap = max(abs(full[0] - full[1]), abs(max(acc.values()) - min(acc.values())))
        text += (f". On this model the class-sorted first batch changed accuracy by at most {gap:.2f} points.")
        lines += ["", text]
    o = p["overhead_percent"]
    lines += ["", f"**Progress reporting** (evaluation of {p['images']} images in {p['batches']} batches, median of "
              f"{p['repeats']}): {p['median_seconds']['none']:.2f} s without a reporter; log lines "
              f"{o['log lines']:+.1f} %, tqdm bar {o['tqdm bar']:+.1f} %.",
              "", f"**Resume** (digits sweep, {res['runs']} runs, SIGKILL once {res['kill_after_runs']} runs were "
              f"finished, at {res['killed_after_s']:.1f} s): the same command took over {res['runs_taken_over']} "
              f"run(s) and computed {res['runs_recomputed']}, in {res['rerun_s']:.1f} s (uninterrupted sweep: "
              f"{res['uninterrupted_s']:.1f} s); the runs taken over had cost {res['taken_over_run_seconds']:.1f} s "
              "of conversion and evaluation, the rest of each invocation is start-up (imports, data, the ANN's "
              "evaluation).", "",
              f"**Bad-input catalogue** (`tests/test_bad_inputs.py`): {cat['api_cases']} API cases "
              f"({', '.join(f'{k} {v}' for k, v in sorted(cat['api_by_class'].items()))}) and {cat['cli_cases']} "
              f"command-line cases ({', '.join(f'{k} {v}' for k, v in sorted(cat['cli_by_class'].items()))})."]
    return "\n".join(lines) + "\n"


def readme() -> None:
    r = json.loads((RESULTS / f"{NAME}.json").read_text())
    path = REPO / "README.md"
    text = path.read_text()
    head = f"Generated by `python benchmarks/hardening.py --readme` from `benchmarks/results/{NAME}.json`."
    block = f"{BEGIN}\n{head}\n\n{markdown(r)}{END}"
    if BEGIN not in text:
        raise SystemExit(f"README.md has no {BEGIN} marker")
    path.write_text(re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _m: block, text, flags=re.S))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data-dir", default=str(SHARED / "data" / "cifar10"))
    ap.add_argument("--readme", action="store_true", help="only rewrite the README section from the result file")
    ap.add_argument("--redo", nargs="*", default=[], metavar="PART",
                    help="recompute these parts (subsets, calibration_agreement, progress, resume, catalogue); the "
                         "others are taken from the result file")
    args = ap.parse_args()
    if args.readme:
        readme()
        return
    start(args.threads)
    from adacal.atomic import atomic_write_json

    state_path = RESULTS / f".{NAME}.partial.json"  # parts done so far: a rerun resumes after the last one
    final = RESULTS / f"{NAME}.json"
    state = json.loads(final.read_text()) if final.is_file() else {}  # parts of the committed result are kept
    state.update(json.loads(state_path.read_text()) if state_path.is_file() else {})
    for name in args.redo:
        state.pop(name, None)
    parts = {"subsets": lambda: subsets(args), "calibration_agreement": lambda: calibration_agreement(args),
             "progress": lambda: progress_overhead(args), "resume": lambda: resume(args.threads),
             "catalogue": catalogue}
    state = {k: v for k, v in state.items() if k in parts}
    for name, run in parts.items():
        if name in state:
            print(f"{name}: done in an earlier run", flush=True)
            continue
        state[name] = run()
        atomic_write_json(state_path, state)
    result = {"command": command(), "machine": machine(), **state}
    write_results(NAME, result, markdown(result))
    state_path.unlink()
    readme()


if __name__ == "__main__":
    main()
