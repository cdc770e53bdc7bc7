"""Cost of the Adaptive Calibration search: sensitivity profiling with prefix reuse vs the naive way.

Profiles φ ∈ {1..8} and ρ ∈ {1, 1.5, …, 10} on CIFAR ResNet-20 (T=8, one batch of 128 real
CIFAR-10 training images if ../shared/data/cifar10 exists, else random images; the zoo
checkpoint if present, else random weights — timing does not depend on either) with prefix
reuse and with a full re-run per candidate, on the same layers, and checks both give the same
table. Also times the Pareto search on 100 layers × 20 candidates.

    python benchmarks/search_cost.py [--layers 19] [--threads 1]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import REPO, SHARED, command, machine, write_results

from adacal.calibrate import calibrate_thresholds
from adacal.convert import prepare
from adacal.models import build_model, load_state_dict_file
from adacal.search import SearchTable, minimise_cost, minimise_score
from adacal.sensitivity import profile


def calib_batch(n: int) -> tuple[torch.Tensor, str]:
    path = SHARED / "data" / "cifar10" / "test.npz"
    if path.exists():
        from adacal.datasets import get_splits
        sp = get_splits("cifar10", SHARED / "data" / "cifar10", calib_size=n, augment=False)
        xs = torch.stack([sp.calib[i][0] for i in range(n)])
        return xs, "CIFAR-10 training images (calibration split)"
    return torch.randn(n, 3, 32, 32), "random images"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=19, help="profile the first N neurons (19 = all)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ann = build_model("resnet20", 10)
    ckpt = REPO / "zoo" / "resnet20_cifar10.pt"
    weights = "random"
    if ckpt.exists():
        load_state_dict_file(ann, ckpt)
        weights = str(ckpt.relative_to(REPO))
    ann.eval()
    x, data_desc = calib_batch(args.batch)
    snn = prepare(ann, x)
    T = 8
    for n in snn.neurons().values():
        n.set_phi(8)
    calibrate_thresholds(snn, x, timesteps=T)
    layers = list(snn.neurons())[: args.layers]
    rows = {}
    for knob, cands in (("phi", list(range(1, 9))), ("rho", [1 + 0.5 * i for i in range(19)])):
        t0 = time.perf_counter()
        fast = profile(snn, x, knob=knob, candidates=cands, timesteps=T, layers=layers)
        t_fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        slow = profile(snn, x, knob=knob, candidates=cands, timesteps=T, layers=layers, reuse_prefix=False)
        t_slow = time.perf_counter() - t0
        same = fast.scores == slow.scores and fast.costs == slow.costs
        rows[knob] = {"candidates": len(cands), "layers": len(layers), "reuse_s": t_fast, "naive_s": t_slow,
                      "speedup": t_slow / t_fast, "identical_tables": same}
        print(knob, rows[knob])
    rng = np.random.default_rng(0)
    costs = np.sort(rng.random((100, 20)), axis=1)
    scores = np.sort(rng.random((100, 20)), axis=1)[:, ::-1].copy()
    table = SearchTable.from_arrays(costs, scores)
    t0 = time.perf_counter()
    minimise_score(table, float(costs[:, 10].sum()))
    t_phi = time.perf_counter() - t0
    t0 = time.perf_counter()
    minimise_cost(table, float(scores[:, 5].sum()))
    t_rho = time.perf_counter() - t0
    payload = {"command": command(), "machine": machine(), "model": "resnet20", "weights": weights,
               "data": data_desc, "T": T, "batch": args.batch, "profiling": rows,
               "pareto_100x20": {"minimise_score_s": t_phi, "minimise_cost_s": t_rho,
                                 "table": "anticorrelated random (cost rising, score falling)"}}
    md = ["# Search cost", "", f"Command: `{command()}`", f"Machine: {machine()}",
          f"Model: ResNet-20 ({weights}), T={T}, batch {args.batch} of {data_desc}", "",
          "| knob | layers × candidates | prefix reuse (s) | naive re-run (s) | speed-up | identical tables |",
          "|---|---|---|---|---|---|"]
    for k, r in rows.items():
        md.append(f"| {k} | {r['layers']} × {r['candidates']} | {r['reuse_s']:.1f} | {r['naive_s']:.1f} | "
                  f"{r['speedup']:.2f}× | {r['identical_tables']} |")
    md += ["", f"Pareto search, 100 layers × 20 candidates: minimise_score {t_phi * 1e3:.1f} ms, "
               f"minimise_cost {t_rho * 1e3:.1f} ms."]
    write_results("search_cost", payload, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
