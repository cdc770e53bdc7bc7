"""CUDA checks and GPU speed for the simulation core (issue 15, item 4): one short run on a GPU box.

1. The neuron update: fused (Triton) on CUDA == eager on CUDA == eager on CPU, bit for bit, on
   adversarial values (membranes on multiples of θ and their neighbours), float32 and float64.
2. A small network (CIFAR ResNet-20, random weights, max thresholds, T=16): on CUDA, every
   chunking gives bit-identical outputs (canonical row blocks) and fused == eager bit for bit;
   CUDA vs CPU: convolutions differ in the last bits between devices, so the check is closeness
   (max |Δ| of the time-averaged outputs, top-1 agreement, share of identical steps), reported.
3. Speed, as benchmarks/simulation_speed.py and simulation_vs_spikingjelly.py on the CPU:
   ResNet-20 and VGG-16, batch 64 and 1, T=8 and 32, SNN time / (T × ANN) for adacal eager, fused
   (default) and blocks off, against SpikingJelly 2.0's torch backend (single- and multi-step) and
   its cupy backend when cupy installs. Random weights (speed does not depend on training).

Writes benchmarks/results/gpu_check.{json,md}. Run through benchmarks/gpu_check.sh.

    python benchmarks/gpu_check.py [--repeats 5] [--timesteps 8 32]
"""
from __future__ import annotations

import argparse
import copy
import time
from typing import Any

import torch
from _common import command, machine, write_results

from adacal.calibrate import calibrate_thresholds
from adacal.config import CalibrationConfig
from adacal.convert import prepare
from adacal.convert.fold_bn import fold_batchnorm
from adacal.convert.trace import trace
from adacal.models import build_model
from adacal.neurons.kernels import KERNEL, if_update_eager_


def sync() -> None:
    torch.cuda.synchronize()


def timed_interleaved(fns: dict[str, Any], repeats: int) -> dict[str, float]:
    """Median wall time per function on the GPU, alternating, after one warm-up call each."""
    for f in fns.values():
        f()
    sync()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            sync()
            t0 = time.perf_counter()
            f()
            sync()
            samples[k].append(time.perf_counter() - t0)
    return {k: sorted(v)[len(v) // 2] for k, v in samples.items()}


def kernel_check() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dtype in (torch.float32, torch.float64):
        g = torch.Generator().manual_seed(0)
        P, rows = 4099, 33
        th = ((torch.rand(P, generator=g, dtype=torch.float64) + 0.3) * 1.5).to(dtype)
        phi = torch.tensor(3.0, dtype=dtype)
        u_cpu = (torch.rand(rows, P, generator=g, dtype=torch.float64).to(dtype) * th)
        u_gpu_e, u_gpu_f = u_cpu.clone().cuda(), u_cpu.clone().cuda()
        same_cpu = same_fused = True
        naive = 0
        for _ in range(20):
            target = torch.randint(-2, 7, u_cpu.shape, generator=g).to(dtype) * th
            z = (torch.randn(u_cpu.shape, generator=g, dtype=torch.float64) * 2).to(dtype) * th
            pick = torch.rand(u_cpu.shape, generator=g)
            z = torch.where(pick < 0.3, target - u_cpu, z)
            up, down = torch.tensor(1e30, dtype=dtype), torch.tensor(-1e30, dtype=dtype)
            z = torch.where((pick >= 0.3) & (pick < 0.5), torch.nextafter(target - u_cpu, up), z)
            z = torch.where((pick >= 0.5) & (pick < 0.7), torch.nextafter(target - u_cpu, down), z)
            naive += int((torch.floor((u_cpu + z) / th) != torch.div(u_cpu + z, th, rounding_mode="floor")).sum())
            o_cpu = torch.empty_like(u_cpu)
            if_update_eager_(u_cpu, z, th, phi, o_cpu, torch.empty_like(u_cpu))
            zc, thc, phic = z.cuda(), th.cuda(), phi.cuda()
            o_e = torch.empty_like(u_gpu_e)
            if_update_eager_(u_gpu_e, zc, thc, phic, o_e, torch.empty_like(u_gpu_e))
            o_f = torch.empty(1, rows, P, dtype=dtype, device="cuda")
            done = KERNEL.steps_(u_gpu_f, zc.unsqueeze(0).contiguous(), None, thc, phic, o_f)
            same_fused &= done == 1 and torch.equal(o_f[0], o_e) and torch.equal(u_gpu_f, u_gpu_e)
            same_cpu &= torch.equal(o_e.cpu(), o_cpu) and torch.equal(u_gpu_e.cpu(), u_cpu)
        out[str(dtype)] = {"fused_equals_eager_on_cuda": bool(same_fused),
                           "cuda_eager_equals_cpu_eager": bool(same_cpu),
                           "plain_floor_cases_corrected": naive, "fused_failed": KERNEL.failed.get("cuda")}
        print(f"kernel {dtype}: fused==eager on CUDA {same_fused}, CUDA==CPU {same_cpu}", flush=True)
    return out


def realistic(name: str, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(name, 10).train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(32, 3, 32, 32))
    return model.eval().to(device)


def network_check(T: int = 16) -> dict[str, Any]:
    ann = realistic("resnet20", "cpu")
    calib = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    cfg = CalibrationConfig(method="max")
    cpu = prepare(ann, calib[:8])
    calibrate_thresholds(cpu, calib, timesteps=T, config=cfg)
    gpu = copy.deepcopy(cpu).cuda()
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    ref_cpu = cpu.run(x, T)
    ref = gpu.run(x.cuda(), T, time_chunk=None)
    chunkings = {}
    for kw in ({"time_chunk": 1}, {"time_chunk": 5}, {"batch_chunk": 1}, {"batch_chunk": 4, "time_chunk": 3}):
        chunkings[str(kw)] = bool(torch.equal(gpu.run(x.cuda(), T, **kw), ref))
    gpu.fused = False
    eager = gpu.run(x.cuda(), T, time_chunk=None)
    gpu.fused = True
    fused = gpu.run(x.cuda(), T, time_chunk=None)
    gpu.fused = "auto"
    gpu.deterministic = False
    free = [bool(torch.equal(gpu.run(x.cuda(), T, **kw), ref)) for kw in ({"time_chunk": 1}, {"batch_chunk": 1})]
    gpu.deterministic = True
    r = ref.cpu()
    res = {
        "T": T, "chunkings_identical_on_cuda": chunkings, "fused_equals_eager_on_cuda": bool(torch.equal(fused, eager)),
        "chunkings_identical_with_blocks_off": free,
        "cuda_vs_cpu": {
            "max_abs_diff_of_mean_output": float((r.mean(0) - ref_cpu.mean(0)).abs().max()),
            "output_scale": float(ref_cpu.mean(0).abs().max()),
            "top1_agreement": float((r.mean(0).argmax(1) == ref_cpu.mean(0).argmax(1)).float().mean()),
            "identical_steps": float((r == ref_cpu).flatten(1).all(1).float().mean()),
        },
    }
    print(f"network: {res}", flush=True)
    return res


def speed(models: list[str], batches: list[int], timesteps: list[int], repeats: int) -> list[dict[str, Any]]:
    try:
        from spikingjelly.activation_based import ann2snn, functional
        from spikingjelly.activation_based.ann2snn.recipes import rate_coding

        rate_coding.tqdm = lambda it, *a, **k: it  # no calibration progress bar
    except ImportError:
        ann2snn = functional = None
    rows = []
    for name in models:
        ann = realistic(name, "cuda")
        gm = trace(copy.deepcopy(ann))
        fold_batchnorm(gm)
        gm.recompile()
        calib = torch.randn(64, 3, 32, 32, device="cuda")
        snn = prepare(ann, calib[:8])
        calibrate_thresholds(snn, calib, timesteps=8, config=CalibrationConfig(method="max"))
        sj_nets: dict[str, Any] = {}
        if ann2snn is not None:
            loader = [(calib[i:i + 32], torch.zeros(32, dtype=torch.long)) for i in range(0, 64, 32)]
            with torch.no_grad():
                sj = ann2snn.Converter(recipe=ann2snn.RateCodingRecipe(dataloader=loader), device="cuda").convert(
                    copy.deepcopy(ann)).eval()
            sj_nets["sj_step"] = sj
            multi = copy.deepcopy(sj)
            functional.set_step_mode(multi, "m")
            sj_nets["sj_multistep_torch"] = multi
            try:
                cup = copy.deepcopy(multi)
                for m in cup.modules():  # SpikingJelly neurons carry a backend ("torch" | "cupy")
                    if hasattr(m, "supported_backends") and "cupy" in m.supported_backends:
                        m.backend = "cupy"
                with torch.no_grad():
                    functional.reset_net(cup)
                    cup(calib[:2].unsqueeze(0).expand(2, -1, -1, -1, -1))
                sj_nets["sj_multistep_cupy"] = cup
            except Exception as exc:  # cupy missing or no cupy kernel for this net
                print(f"SpikingJelly cupy backend unavailable: {type(exc).__name__}: {exc}", flush=True)
        for batch in batches:
            x = torch.randn(batch, 3, 32, 32, device="cuda")
            for T in timesteps:
                def sim(fused: bool | str, det: bool, x: torch.Tensor = x, T: int = T, snn: Any = snn) -> Any:
                    snn.fused, snn.deterministic = fused, det
                    return snn.run(x, T)

                fns: dict[str, Any] = {"ann": lambda x=x, m=ann: m(x), "ann_folded": lambda x=x, m=gm: m(x),
                                       "adacal_eager": lambda: sim(False, True),
                                       "adacal_fused": lambda: sim("auto", True),
                                       "adacal_fused_blocks_off": lambda: sim("auto", False)}
                for k, net in sj_nets.items():
                    if k == "sj_step":
                        def step(net: Any = net, x: torch.Tensor = x, T: int = T) -> Any:
                            functional.reset_net(net)
                            out = net(x)
                            for _ in range(1, T):
                                out = out + net(x)
                            return out
                        fns[k] = step
                    else:
                        def multi_run(net: Any = net, x: torch.Tensor = x, T: int = T) -> Any:
                            functional.reset_net(net)
                            return net(x.unsqueeze(0).expand(T, *x.shape)).sum(0)
                        fns[k] = multi_run
                with torch.no_grad():
                    times = timed_interleaved(fns, repeats)
                snn.fused, snn.deterministic = "auto", True
                sj_best = min((k for k in times if k.startswith("sj_")), key=times.get, default=None)
                row = {"model": name, "batch": batch, "T": T, "ms": {k: v * 1e3 for k, v in times.items()},
                       "ratio_vs_T_ann": {k: v / (T * times["ann"]) for k, v in times.items()
                                          if k not in ("ann", "ann_folded")},
                       "ratio_vs_T_ann_folded": {k: v / (T * times["ann_folded"]) for k, v in times.items()
                                                 if k not in ("ann", "ann_folded")},
                       "sj_best_mode": sj_best,
                       "adacal_vs_sj_best": (times[sj_best] / times["adacal_fused"]) if sj_best else None,
                       "determinism_overhead": times["adacal_fused"] / times["adacal_fused_blocks_off"],
                       "fused_speedup": times["adacal_eager"] / times["adacal_fused"]}
                rows.append(row)
                print(f"{name} b={batch} T={T}: " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in times.items())
                      + (f" | adacal vs SJ best ({sj_best}) {row['adacal_vs_sj_best']:.2f}x" if sj_best else ""),
                      flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--timesteps", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 1])
    ap.add_argument("--models", nargs="+", default=["resnet20", "vgg16_cifar"])
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: gpu_check needs a GPU")
    started = time.perf_counter()
    compile_s = KERNEL.warm_up("cuda", torch.float32)
    payload: dict[str, Any] = {"command": command(), "machine": machine(), "gpu": torch.cuda.get_device_name(),
                               "cuda": torch.version.cuda, "fused_compile_s_cuda": compile_s}
    payload["kernel"] = kernel_check()
    payload["network"] = network_check()
    payload["speed"] = speed(args.models, args.batches, args.timesteps, args.repeats)
    payload["fused_failed"] = dict(KERNEL.failed)
    payload["total_runtime_s"] = time.perf_counter() - started
    md = ["# GPU check: CUDA outputs and simulation speed", "", f"Command: `{command()}`",
          f"GPU: {payload['gpu']} (CUDA {payload['cuda']}); fused update compiled in {compile_s:.1f} s.", "",
          "## Bit-identity", "", f"- neuron kernel: {payload['kernel']}", f"- network: {payload['network']}", "",
          "## Speed (SNN time / (T × ANN); in brackets vs the BN-folded ANN)", "",
          "| model | batch | T | ANN ms | eager | fused (default) | fused, blocks off | SJ best | adacal vs SJ best |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in payload["speed"]:
        rt, rf = r["ratio_vs_T_ann"], r["ratio_vs_T_ann_folded"]
        sj = r["sj_best_mode"]
        md.append(f"| {r['model']} | {r['batch']} | {r['T']} | {r['ms']['ann']:.2f} | {rt['adacal_eager']:.2f}× | "
                  f"**{rt['adacal_fused']:.2f}×** ({rf['adacal_fused']:.2f}×) | "
                  f"{rt['adacal_fused_blocks_off']:.2f}× | "
                  + (f"{sj} {rt[sj]:.2f}× | {r['adacal_vs_sj_best']:.2f}× |" if sj else "— | — |"))
    md += ["", f"Total runtime {payload['total_runtime_s']:.0f} s."]
    write_results("gpu_check", payload, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
