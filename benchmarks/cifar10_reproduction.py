"""Does the refactored benchmark (the library's sweep) reproduce the committed CIFAR-10 grid?

Compares every run of ``results/cifar10_methods_previous.json`` (the library's sweep with the
settings the committed grid was made with, ``cifar10_methods.py --defaults previous``) with the
record of the same method and T in ``results/cifar10_methods.json`` (the grid written by the
benchmark's own loop before the refactor): accuracy (and the number of test images it amounts to),
energy, mean timesteps and the searched φ/ρ per layer. Writes ``cifar10_reproduction.{json,md}``.

    python benchmarks/cifar10_reproduction.py
"""
from __future__ import annotations

import json
from typing import Any

from _common import RESULTS, command, write_results
from cifar10_methods import records


def main() -> None:
    old = json.loads((RESULTS / "cifar10_methods.json").read_text())
    new = json.loads((RESULTS / "cifar10_methods_previous.json").read_text())
    before = {(r["method"], r["T"]): r for r in old["records"]}
    rows = []
    for r in records(new):
        o = before.get((r["method"], r["T"]))
        if o is None:
            continue
        images = r["num_samples"] or old["test_images"]
        knobs = r["knobs"] or {}
        same_phi = o.get("phi") is None or knobs.get("phi") == o.get("phi")
        same_rho = o.get("rho") is None or knobs.get("rho") == o.get("rho")
        rows.append({"method": r["method"], "T": r["T"], "accuracy_before": o["accuracy"],
                     "accuracy_now": r["accuracy"],
                     "images_differing": round(abs(r["accuracy"] - o["accuracy"]) * images / 100),
                     "energy_before_mj": o["energy_mj"], "energy_now_mj": r["energy_mj"],
                     "energy_rel_diff": r["energy_mj"] / o["energy_mj"] - 1,
                     "mean_timesteps_before": o["mean_timesteps"], "mean_timesteps_now": r["mean_timesteps"],
                     "same_phi": same_phi, "same_rho": same_rho})
    payload = {"command": command(), "before": {"command": old["command"], "file": "results/cifar10_methods.json"},
               "now": {"command": new.get("command"), "file": "results/cifar10_methods_previous.json"}, "rows": rows}
    write_results("cifar10_reproduction", payload, markdown(payload))


def markdown(p: dict[str, Any]) -> str:
    lines = ["# CIFAR-10 grid: reproduction through the library's sweep", "",
             f"Before: `{p['before']['command']}` ({p['before']['file']}, the benchmark's own loop).",
             f"Now: `{p['now']['command']}` ({p['now']['file']}, `adacal.jobs.sweep_to_folder`, same settings).",
             f"This file: `{p['command']}`.", "",
             "| method | T | accuracy before → now (%) | test images differing | energy mJ before → now | "
             "mean T before → now | same φ / ρ per layer |", "|---|---|---|---|---|---|---|"]
    for r in p["rows"]:
        lines.append(f"| {r['method']} | {r['T']} | {r['accuracy_before']:.2f} → {r['accuracy_now']:.2f} | "
                     f"{r['images_differing']} | {r['energy_before_mj']:.5f} → {r['energy_now_mj']:.5f} "
                     f"({100 * r['energy_rel_diff']:+.2f}%) | {r['mean_timesteps_before']:.2f} → "
                     f"{r['mean_timesteps_now']:.2f} | {'yes' if r['same_phi'] else 'no'} / "
                     f"{'yes' if r['same_rho'] else 'no'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
