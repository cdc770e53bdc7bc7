"""SNN simulation speed relative to T × the ANN's forward time, in one run per configuration.

ratio = SNN wall time for T steps / (T × ANN forward time), same network, batch and threads.
Modes: time-batched (all T steps stacked on the batch axis per call), streaming (one step per
call) and intermediate time chunks. Random weights: speed does not depend on training.

    python benchmarks/simulation_speed.py [--threads 1] [--repeats 5]
"""
from __future__ import annotations

import argparse

import torch
from _common import command, interleaved, machine, write_results

from adacal.calibrate import calibrate_thresholds
from adacal.convert import prepare
from adacal.models import build_model


def realistic(model: torch.nn.Module, shape: tuple[int, ...]) -> torch.nn.Module:
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(32, *shape))
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--timesteps", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    T = args.timesteps
    configs = [("resnet20", 64), ("resnet20", 1), ("vgg16_cifar", 64), ("vgg16_cifar", 1)]
    rows = []
    for name, batch in configs:
        ann = realistic(build_model(name, 10), (3, 32, 32))
        x = torch.randn(batch, 3, 32, 32)
        snn = prepare(ann, torch.randn(max(batch, 8), 3, 32, 32))
        calibrate_thresholds(snn, torch.randn(32, 3, 32, 32), timesteps=T)
        fns = {"ann": lambda a=ann, x=x: a(x), "auto": lambda s=snn, x=x: s.run(x, T)}
        for chunk in sorted({T, 4, 2, 1}):
            fns[f"chunk{chunk}"] = lambda s=snn, x=x, c=chunk: s.run(x, T, time_chunk=c)
        with torch.no_grad():
            times = interleaved(fns, args.repeats)
        ann_t = times.pop("ann")
        row = {"model": name, "batch": batch, "T": T, "ann_forward_s": ann_t}
        for k, v in times.items():
            row[f"{k}_s"] = v
            row[f"{k}_ratio"] = v / (T * ann_t)
        row["auto_chunk"] = min(T, max(1, snn.AUTO_CHUNK_BYTES // max(1, snn.activation_bytes * batch)))
        row["batched_ratio"] = row[f"chunk{T}_ratio"]
        row["streaming_ratio"] = row["chunk1_ratio"]
        rows.append(row)
        print(f"{name} b={batch}: auto {row['auto_ratio']:.2f}x, batched {row['batched_ratio']:.2f}x, "
              f"streaming {row['streaming_ratio']:.2f}x of T x ANN ({ann_t * 1e3:.1f} ms ANN)")
    md = ["# Simulation speed: SNN time / (T × ANN forward time)", "",
          f"Command: `{command()}`", f"Machine: {machine()}", "",
          "| model | batch | T | ANN ms | default (auto chunk) | batched (T stacked) | chunk 4 | chunk 2 | streaming |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['model']} | {r['batch']} | {r['T']} | {r['ann_forward_s'] * 1e3:.1f} | "
                  f"{r['auto_ratio']:.2f}× (chunk {r['auto_chunk']}) | {r['batched_ratio']:.2f}× | "
                  f"{r.get('chunk4_ratio', float('nan')):.2f}× | "
                  f"{r.get('chunk2_ratio', float('nan')):.2f}× | {r['streaming_ratio']:.2f}× |")
    md += ["", "Reference points (issue, same kind of machine): SpikingJelly 2.0 step mode 1.23-1.25×, "
           "multi-step 2.5×, sinabs ≈2×, a hand-written IF loop ≈1.13×."]
    write_results("simulation_speed", {"command": command(), "machine": machine(), "rows": rows}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
