"""What moving each residual add into its neuron's fused step saves, measured within one run.

The same converted ResNet-20 simulated with the rewrite (``adacal.neurons.residual``, the
default) and without it (the graph as converted: add, then neuron), timed in alternation so the
shared machine's noise hits both alike; outputs checked equal to the bit first. Random weights
with warmed-up BatchNorm statistics and max thresholds: speed does not depend on training.

    python benchmarks/residual_fusion.py [--threads 1] [--repeats 7]
"""
from __future__ import annotations

import argparse
import os
from typing import Any

import torch
from _common import command, interleaved, machine, write_results
from simulation_speed import realistic

import adacal.spiking_model as spiking_model
from adacal.calibrate import calibrate_thresholds
from adacal.config import CalibrationConfig
from adacal.convert import prepare
from adacal.models import build_model
from adacal.neurons.kernels import KERNEL


def _session_entries(snn: Any) -> dict[Any, Any]:
    return {k: v for k, v in snn._split_cache.items() if isinstance(k, tuple) and k[0] == "session"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_start = os.getloadavg()
    KERNEL.warm_up("cpu", torch.float32)
    ann = realistic(build_model("resnet20", 10), (3, 32, 32))
    snn = prepare(ann, torch.randn(8, 3, 32, 32))
    calibrate_thresholds(snn, torch.randn(32, 3, 32, 32), timesteps=8, config=CalibrationConfig(method="max"))
    fuse = spiking_model.fuse_residual_adds
    x0 = torch.randn(2, 3, 32, 32)
    graphs = {}  # the session graphs of each variant, built once (building one costs ms)
    for fused_adds in (True, False):
        for k in _session_entries(snn):
            del snn._split_cache[k]
        spiking_model.fuse_residual_adds = fuse if fused_adds else (lambda gm: gm)
        try:
            snn.run(x0, 2)
        finally:
            spiking_model.fuse_residual_adds = fuse
        graphs[fused_adds] = _session_entries(snn)

    def run(fused_adds: bool, x: torch.Tensor, T: int) -> torch.Tensor:
        snn._split_cache.update(graphs[fused_adds])
        return snn.run(x, T)

    rows = []
    with torch.no_grad():
        for batch, T in ((64, 8), (1, 8), (1, 32)):
            x = torch.randn(batch, 3, 32, 32)
            run(True, x, T)  # plans and layouts settled before the check and the timing
            if not torch.equal(run(True, x, T), run(False, x, T)):
                raise SystemExit(f"outputs differ at batch {batch}, T={T}")
            reps = args.repeats * (3 if batch == 1 else 1)
            t = interleaved({"separate": lambda x=x, T=T: run(False, x, T),
                             "fused": lambda x=x, T=T: run(True, x, T)}, reps)
            rows.append({"batch": batch, "T": T, "separate_ms": t["separate"] * 1e3, "fused_ms": t["fused"] * 1e3,
                         "speedup": t["separate"] / t["fused"], "repeats": reps})
            print(f"b={batch} T={T}: add separate {t['separate'] * 1e3:.1f} ms, in the neuron "
                  f"{t['fused'] * 1e3:.1f} ms ({rows[-1]['speedup']:.3f}x)", flush=True)
    payload = {"command": command(), "machine": machine(), "load_average_start": load_start,
               "load_average_end": os.getloadavg(), "model": "resnet20", "rows": rows}
    md = ["# Residual adds inside the neuron's fused step vs a separate add (ResNet-20)", "",
          f"Command: `{command()}`", f"Machine: {machine()}",
          f"Load average at start {tuple(round(v, 2) for v in load_start)} (shared machine). Medians of "
          "repeats timed in alternation; outputs equal to the bit (checked).", "",
          "| batch | T | add separate ms | add in the neuron ms | speed-up | repeats |", "|---|---|---|---|---|---|"]
    md += [f"| {r['batch']} | {r['T']} | {r['separate_ms']:.1f} | {r['fused_ms']:.1f} | {r['speedup']:.3f}× | "
           f"{r['repeats']} |" for r in rows]
    write_results("residual_fusion", payload, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
