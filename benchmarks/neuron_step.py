"""One neuron update, three ways: eager ops, the compiled update through dynamo's guards, and the
same compiled graph called directly (adacal.neurons.kernels, "Direct calls").

Per step, float32, [rows, P] membrane, per-position θ, φ = 4, T = 8 steps per call: the eager
reference loop (``if_update_eager_``: add, exact floor division, clamp, multiply, subtract), and
``KERNEL.steps_`` with ``direct_calls`` off (every step through ``torch.compile``'s guarded
entry) and on (the default). All three are timed in alternation in one run; their outputs are
checked equal to the bit first. What it decides: ``FUSED_MIN_ELEMENTS``, the step size from which
``fused="auto"`` compiles — below the break-even a compiled call costs more than the passes it
saves — and how much batch-1 simulation gains. Then whole ``IFNeuron`` calls at batch 1, one step
and eight, eager vs fused: what preparing a call costs (``FUSED_MIN_CALL_ELEMENTS``).

    python benchmarks/neuron_step.py [--threads 1] [--repeats 9]
"""
from __future__ import annotations

import argparse
from typing import Any

import torch
from _common import command, interleaved, machine, start, write_results

from adacal.neurons.kernels import FUSED_MIN_CALL_ELEMENTS, FUSED_MIN_ELEMENTS, KERNEL, if_update_eager_

SIZES = ((1, 256), (1, 1024), (1, 4096), (1, 16384), (64, 1024), (64, 16384))
T = 8


def case(rows: int, per: int, repeats: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(rows * per)
    th = torch.rand(per, generator=g) + 0.2
    phi = torch.tensor(4.0)
    u0 = torch.rand(rows, per, generator=g) * th
    z = torch.randn(T, rows, per, generator=g) * th
    state = {k: (u0.clone(), torch.empty_like(z)) for k in ("eager", "guarded", "direct")}
    scratch, zero = torch.empty_like(u0), torch.zeros(())

    def eager() -> None:
        u, out = state["eager"]
        for t in range(T):
            if_update_eager_(u, z[t], th, phi, out[t], scratch, zero)

    def compiled(direct: bool) -> None:
        u, out = state["direct" if direct else "guarded"]
        KERNEL.direct_calls = direct
        try:
            KERNEL.steps_(u, z, None, th, phi, out)
        finally:
            KERNEL.direct_calls = True

    fns = {"eager": eager, "guarded": lambda: compiled(False), "direct": lambda: compiled(True)}
    for f in fns.values():  # one call each from the same state: the outputs must agree to the bit
        f()
    ref_u, ref_out = state["eager"]
    same = all(torch.equal(u, ref_u) and torch.equal(out, ref_out) for u, out in state.values())
    if not same:
        raise SystemExit(f"outputs differ at rows={rows}, P={per}: fix the kernel before timing it")
    secs = interleaved(fns, repeats)
    us = {k: 1e6 * v / T for k, v in secs.items()}
    return {"rows": rows, "positions": per, "elements": rows * per, "us_per_step": us,
            "direct_vs_eager": us["eager"] / us["direct"], "direct_vs_guarded": us["guarded"] / us["direct"]}


def neuron_call(channels: int, side: int, steps: int, repeats: int) -> dict[str, Any]:
    """One ``IFNeuron`` call on a batch-1 ``[channels, side, side]`` map with ``steps`` steps stacked:
    everything a simulation pays per neuron and call (θ and bias rows, operand views, the update),
    eager against fused=True (compiled, called directly)."""
    from adacal.neurons import IFNeuron

    g = torch.Generator().manual_seed(channels * side + steps)
    n = IFNeuron(phi=4)
    n.set_mode("snn")
    n.set_theta(torch.rand(channels, generator=g) + 0.5)  # per channel, with a bias correction, as calibrated
    n.set_bias_offset(torch.randn(channels, generator=g) * 0.01)
    n.timesteps = steps
    x = torch.randn(steps, channels, side, side, generator=g)
    outs = {}
    for fused in (False, True):
        n.fused = fused
        n.reset()
        outs[fused] = n(x)
    if not torch.equal(outs[False], outs[True]):
        raise SystemExit(f"neuron call outputs differ at {channels}x{side}x{side}, {steps} steps")

    def call(fused: bool) -> None:
        n.fused = fused
        n(x)

    secs = interleaved({"eager": lambda: call(False), "fused": lambda: call(True)}, repeats)
    us = {k: 1e6 * v for k, v in secs.items()}
    return {"channels": channels, "side": side, "steps": steps, "elements_per_step": channels * side * side,
            "us_per_call": us, "fused_vs_eager": us["eager"] / us["fused"]}


def markdown(payload: dict[str, Any]) -> str:
    lines = ["# The neuron update: eager, compiled through dynamo, compiled and called directly", "",
             f"Command: `{payload['command']}`", f"Machine: {payload['machine']}", "",
             f"µs per step (float32, T = {T} steps per call, φ = 4, per-position θ), median of "
             f"{payload['repeats']} runs timed in alternation; outputs checked equal to the bit first. "
             f"`fused=\"auto\"` compiles steps of ≥ {payload['fused_min_elements']} elements.", "",
             "| rows × positions | elements | eager | compiled, guarded call | compiled, direct call | "
             "direct vs eager | direct vs guarded |", "|---|---|---|---|---|---|---|"]
    for r in payload["rows_"]:
        u = r["us_per_step"]
        lines.append(f"| {r['rows']} × {r['positions']} | {r['elements']} | {u['eager']:.1f} | {u['guarded']:.1f} | "
                     f"{u['direct']:.1f} | {r['direct_vs_eager']:.2f}× | {r['direct_vs_guarded']:.2f}× |")
    lines += ["", "## One neuron call", "",
              "µs per `IFNeuron` call at batch 1 (per-channel θ, bias correction, φ = 4), eager against "
              "`fused=True` (direct compiled calls), outputs checked equal first: what a call costs beyond its "
              f"steps. `fused=\"auto\"` compiles only calls of ≥ {payload['fused_min_call_elements']} elements "
              "(all steps), so a single small streaming step stays eager.", "",
              "| map | elements per step | steps per call | eager | fused | fused vs eager |",
              "|---|---|---|---|---|---|"]
    for r in payload["calls"]:
        u = r["us_per_call"]
        lines.append(f"| {r['channels']}×{r['side']}×{r['side']} | {r['elements_per_step']} | {r['steps']} | "
                     f"{u['eager']:.1f} | {u['fused']:.1f} | {r['fused_vs_eager']:.2f}× |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    start(args.threads)
    KERNEL.warm_up("cpu", torch.float32)
    rows = [case(r, p, args.repeats) for r, p in SIZES]
    calls = [neuron_call(c, side, steps, args.repeats) for c, side in ((16, 32), (32, 16), (64, 8)) for steps in (1, 8)]
    payload = {"command": command(), "machine": machine(), "repeats": args.repeats,
               "fused_min_elements": FUSED_MIN_ELEMENTS, "fused_min_call_elements": FUSED_MIN_CALL_ELEMENTS,
               "rows_": rows, "calls": calls}
    write_results("neuron_step", payload, markdown(payload))


if __name__ == "__main__":
    main()
