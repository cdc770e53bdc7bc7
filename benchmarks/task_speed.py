"""Wall time of every task's job with the fused neuron step against the eager one, in one run.

Each task runs the job its benchmark runs (``adacal sweep --config <task config>`` on the shared data
with the zoo weights, AdaFire at the task's T, so that calibration, the φ search's profiling and the
evaluation all simulate), on a seeded subset of the test set, twice: once as shipped (the fused
neuron step where it pays, issue 15) and once with ``TORCHDYNAMO_DISABLE=1`` (every step eager: the
simulation as it ran before the fused step). Each run is a fresh process, so the fused wall time
includes its compilation. The two runs alternate task by task, so machine noise hits both alike; both
must produce the same metrics and energy to the last digit (the fused step is bit-identical), which
is checked and recorded.

    python benchmarks/task_speed.py --threads 1
    python benchmarks/task_speed.py --tasks segmentation detection --threads 1   # a subset
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO, SHARED, command, machine, write_results

NAME = "task_speed"
DATA = Path(os.path.relpath(SHARED / "data", REPO))  # relative: the commands run in the repository
ZOO = Path("zoo")
#: Task -> the sweep arguments its benchmark uses, narrowed to AdaFire at one T on a test subset.
TASKS: dict[str, list[str]] = {
    "classification": ["--config", "resnet20_cifar10", "--data-dir", str(DATA / "cifar10"),
                       "--weights", str(ZOO / "resnet20_cifar10.pt"), "--timesteps", "8", "--test-size", "1000",
                       "--calib-size", "256", "--set", "data.holdout_size=1024"],
    "events": ["--config", "nmnist", "--data-dir", str(DATA / "events" / "nmnist"),
               "--weights", str(ZOO / "nmnist_cnn_nmnist.pt"), "--timesteps", "16"],
    "pointcloud": ["--config", "pointnet_modelnet10", "--data-dir", str(DATA / "pointcloud" / "modelnet10"),
                   "--weights", str(ZOO / "pointnet_cls_modelnet10.pt"), "--timesteps", "16", "--test-size", "256"],
    "segmentation": ["--config", "camvid_fcn", "--data-dir", str(DATA / "camvid"),
                     "--weights", str(ZOO / "fcn_small_camvid.pt"), "--timesteps", "16", "--test-size", "24"],
    "detection": ["--config", "fcos_lite_bccd", "--data-dir", str(DATA / "detection" / "bccd"),
                  "--weights", str(ZOO / "fcos_lite_bccd.pt"), "--timesteps", "16"],
}
PATHS = {"eager": {"TORCHDYNAMO_DISABLE": "1"}, "fused": {}}


def run_once(task: str, path: str, threads: int, workdir: Path) -> dict[str, Any]:
    """One fresh ``adacal sweep`` process; its wall time, stage times, metrics and energy."""
    out = workdir / f"{task}_{path}"
    argv = [sys.executable, "-m", "adacal", "sweep", *TASKS[task], "--methods", "adafire", "--no-iat",
            "--no-report", "--threads", str(threads), "--out", str(out), "--restart", "-q"]
    env = {**os.environ, **PATHS[path]}
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{task} ({path}) failed:\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    run = summary["runs"][0]
    return {"wall_s": wall, "convert_s": run["time_s"]["convert"], "evaluate_s": run["time_s"]["evaluate"],
            "metrics": run["metrics"], "energy_mj": run["energy_mj"], "num_samples": run["num_samples"],
            "command": "adacal " + " ".join(argv[3:])}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each time over repeated runs; the metrics of the first (all must agree)."""
    out = dict(runs[0])
    for key in ("wall_s", "convert_s", "evaluate_s"):
        out[key] = statistics.median(r[key] for r in runs)
        out[key + "_all"] = [r[key] for r in runs]
    return out


def measure(tasks: list[str], threads: int, repeats: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="adacal-task-speed-") as tmp:
        for task in tasks:
            runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PATHS}
            for _ in range(repeats):  # alternating, so machine noise hits both paths alike
                for p in PATHS:
                    runs[p].append(run_once(task, p, threads, Path(tmp)))
            e, f = median_run(runs["eager"]), median_run(runs["fused"])
            same = all(r["metrics"] == e["metrics"] and r["energy_mj"] == e["energy_mj"]
                       for r in runs["eager"] + runs["fused"])
            rows.append({"task": task, "T": int(TASKS[task][TASKS[task].index("--timesteps") + 1]),
                         "num_samples": f["num_samples"], "repeats": repeats, "eager": e, "fused": f,
                         "speedup_wall": e["wall_s"] / f["wall_s"],
                         "speedup_convert": e["convert_s"] / f["convert_s"],
                         "speedup_evaluate": e["evaluate_s"] / f["evaluate_s"], "identical": same})
            logging.info("%s: eager %.0f s, fused %.0f s (%.2fx), identical: %s", task, e["wall_s"], f["wall_s"],
                         rows[-1]["speedup_wall"], same)
    return rows


def shown(cmd: str) -> str:
    """A recorded command as a user would type it: repository-relative paths, no temporary folder."""
    cmd = re.sub(r"\S*/(zoo/\S+)", r"\1", cmd)
    cmd = re.sub(r"\S*/shared/data/", "../shared/data/", cmd)
    return re.sub(r"--out \S+", "--out OUT", cmd)


def markdown(state: dict[str, Any]) -> str:
    m = state["machine"]
    lines = ["# Task jobs: fused neuron step against eager, wall time", "",
             f"Command: `{state['command']}`",
             f"Machine: {m['cpu']}, {m['cores']} cores, {state['threads']} torch thread(s), torch {m['torch']}", "",
             "Each row: one task's `adacal sweep` (AdaFire, one T, a seeded test subset) run twice in fresh "
             "processes, as shipped (fused) and with `TORCHDYNAMO_DISABLE=1` (eager, the simulation before the "
             "fused step). Convert = calibration + φ search profiling + bias correction; the fused wall time "
             "includes compiling the step. *identical*: same metrics and energy to the last digit.", "",
             "Times are medians over the repeats (`repeats` in the JSON file); one run is noisy for jobs of "
             "under half a minute (events, detection's evaluation)."
             + (f" Load average at start: {state['load_average_start'][0]:.1f}."
                if "load_average_start" in state else "")
             + (f" {state['note']}" if state.get("note") else ""), "",
             "| task | T | test items | eager wall s | fused wall s | wall speed-up | convert speed-up | "
             "evaluate speed-up | identical |", "|---|---|---|---|---|---|---|---|---|"]
    for r in state["rows"]:
        lines.append(f"| {r['task']} | {r['T']} | {r['num_samples']} | {r['eager']['wall_s']:.0f} | "
                     f"{r['fused']['wall_s']:.0f} | {r['speedup_wall']:.2f}x | {r['speedup_convert']:.2f}x | "
                     f"{r['speedup_evaluate']:.2f}x | {'yes' if r['identical'] else 'NO'} |")
    lines += ["", "Commands (eager: the same with `TORCHDYNAMO_DISABLE=1` in the environment):", ""]
    lines += [f"- {r['task']}: `{shown(r['fused']['command'])}`" for r in state["rows"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1, help="runs per task and path (median times)")
    ap.add_argument("--note", default="", help="conditions worth recording (e.g. other jobs on the machine)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    started, load = time.perf_counter(), list(os.getloadavg())
    rows = measure(args.tasks, args.threads, args.repeats)
    state = {"command": command(), "machine": machine(), "threads": args.threads, "rows": rows, "note": args.note,
             "load_average_start": load,
             "benchmark_s": time.perf_counter() - started}
    write_results(NAME, state, markdown(state))


if __name__ == "__main__":
    main()
