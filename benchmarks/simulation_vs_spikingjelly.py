"""adacal vs SpikingJelly 2.0 ann2snn: simulation speed and agreement with the ANN, same networks.

Each network (CIFAR ResNet-20 with its trained zoo weights; VGG-16 with the zoo weights if present,
else random weights with warmed-up BatchNorm statistics: speed does not depend on training) is
converted twice:
  (a) SpikingJelly: ``ann2snn.Converter(recipe=RateCodingRecipe(dataloader=<splits.calib>))`` (its default
      layer-wise max-norm rate-coding recipe: Conv-BN fusion, IFNode(v_reset=None) i.e. soft reset,
      threshold 1 between VoltageScalers), simulated in both of its CPU modes: single-step
      (``reset_net``, then T calls summed) and multi-step (``set_step_mode(net, "m")``, input repeated on
      a leading T axis), and single-step again with network and input in channels-last memory order;
  (b) adacal with φ=1: ``prepare(ann, x)``, ``calibrate_thresholds(snn, calib_batch, timesteps=T)``,
      ``snn.run(x, T)`` with its defaults (time_chunk "auto", fused neuron update "auto", canonical row
      blocks on, convolution layout "auto"), the same with every convolution on contiguous input
      (``snn.layout = "contiguous"``) and with the eager neuron update (``snn.fused = False``).
All variants and the ANN (as trained, and with BatchNorm folded) are timed in alternation
(``interleaved``, median of ``--repeats``) with the same thread count, T and batch.
ratio_vs_spikingjelly = SJ best-mode time / adacal time (= our throughput / theirs; > 1: adacal faster);
ratio_vs_T_ann = SNN time / (T × ANN forward time).
Agreement (top-1 with the ANN's predictions, accuracy vs labels) is measured for the trained ResNet-20
at the same T on a seeded random subset of the real CIFAR-10 test set (the npz copy is sorted by
class). A SpikingJelly T-sweep on a few images checks that its converted net does approach the ANN as
T grows (i.e. that it was used correctly). SpikingJelly is installed by benchmarks/install_spikingjelly.sh.

    python benchmarks/simulation_vs_spikingjelly.py [--threads 1] [--repeats 5] [--timesteps 8]
"""
from __future__ import annotations

import argparse
import copy
import glob
import hashlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import REPO, command, dense_floor_ms, interleaved, machine, write_results

import adacal
from adacal.convert.fold_bn import fold_batchnorm
from adacal.convert.trace import trace
from adacal.datasets import get_splits
from adacal.datasets.registry import make_loader
from adacal.models import build_model, load_state_dict_file
from adacal.neurons.kernels import KERNEL

DATA = "/work/shared/data/cifar10"


def find_weights(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    final = REPO / "zoo" / "resnet20_cifar10.pt"
    if final.is_file():
        return final
    ckpts = REPO / "zoo" / "checkpoints"
    cands = [Path(p) for pat in ("*.pt", "*.ckpt") for p in glob.glob(str(ckpts / f"resnet20*{pat}"))]
    if not cands:
        raise SystemExit("no ResNet-20 weights: neither zoo/resnet20_cifar10.pt "
                         "nor zoo/checkpoints/resnet20*.pt|.ckpt")
    return max(cands, key=lambda p: p.stat().st_mtime)


def weights_info(path: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"path": os.path.relpath(path, REPO), "mtime": time.strftime(
        "%Y-%m-%d %H:%M:%S", time.localtime(path.stat().st_mtime)),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "model" in obj:
        info["kind"] = "training checkpoint (in progress)"
        info["epoch"] = obj.get("epoch")
        hist = obj.get("history") or []
        if hist and isinstance(hist[-1], dict) and "eval_acc" in hist[-1]:
            info["train_log_eval_acc"] = hist[-1]["eval_acc"]
    else:
        info["kind"] = "final state_dict"
    return info


def subset(dataset: Any, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    xs, ys = zip(*(dataset[i] for i in idx))
    return torch.stack(xs), torch.as_tensor(ys)


def sj_step(net: torch.nn.Module, x: torch.Tensor, T: int) -> torch.Tensor:
    """SpikingJelly single-step simulation as in its ann2snn examples: reset, T calls, summed."""
    from spikingjelly.activation_based import functional
    functional.reset_net(net)
    out = net(x)
    for _ in range(1, T):
        out = out + net(x)
    return out


def sj_multi(net: torch.nn.Module, x: torch.Tensor, T: int) -> torch.Tensor:
    """SpikingJelly multi-step simulation (net already in step mode "m"): input [T, B, ...]."""
    from spikingjelly.activation_based import functional
    functional.reset_net(net)
    return net(x.unsqueeze(0).expand(T, *x.shape)).sum(0)


def batched(fn: Any, x: torch.Tensor, bs: int) -> torch.Tensor:
    return torch.cat([fn(x[i:i + bs]) for i in range(0, len(x), bs)])


Part = dict[str, Any]


def agreement_part(args: Any, ann: Any, snn: Any, sj: Any, sj_multi_net: Any, multi_ok: bool, x_eval: torch.Tensor,
                   y_eval: torch.Tensor, T: int, eb: int, functional: Any) -> tuple[Part, Part, Part]:
    """Top-1 agreement with the ANN on real test images, and SpikingJelly's T-sweep (usage check)."""
    with torch.no_grad():
        ann_pred = batched(ann, x_eval, eb).argmax(1)
        sj_out = batched(lambda b: sj_step(sj, b, T), x_eval, eb)
        ad_out = batched(lambda b: snn.run(b, T).sum(0), x_eval, eb)
        check: dict[str, Any] = {}
        if multi_ok:  # multi-step must reproduce single-step (same net, same arithmetic up to rounding)
            mo = sj_multi(sj_multi_net, x_eval[:eb], T)
            check = {"images": int(min(eb, len(x_eval))),
                     "max_abs_diff_vs_step": float((mo - sj_out[:eb]).abs().max()),
                     "same_top1": float((mo.argmax(1) == sj_out[:eb].argmax(1)).float().mean())}

    def agree(out: torch.Tensor) -> dict[str, float]:
        p = out.argmax(1)
        return {"agreement_with_ann": float((p == ann_pred).float().mean()),
                "accuracy": float((p == y_eval).float().mean()),
                "distinct_predictions": int(p.unique().numel())}

    agreement = {
        "images": len(x_eval), "T": T, "subset": "seeded random (seed 0) subset of the 10 000 test images",
        "class_counts": torch.bincount(y_eval, minlength=10).tolist(),
        "ann_accuracy": float((ann_pred == y_eval).float().mean()),
        "spikingjelly_max_norm": agree(sj_out), "adacal": agree(ad_out),
        "spikingjelly_multistep_check": check,
    }
    sjA, adA = agreement["spikingjelly_max_norm"], agreement["adacal"]
    print(f"agreement on {len(x_eval)} test images at T={T}: ANN acc {agreement['ann_accuracy']:.3f} | "
          f"SJ agree {sjA['agreement_with_ann']:.3f} acc {sjA['accuracy']:.3f} | "
          f"adacal agree {adA['agreement_with_ann']:.3f} acc {adA['accuracy']:.3f}", flush=True)

    # ------------------------------------------------------------------ SJ T-sweep (usage check)
    sweep: dict[str, Any] = {}
    if args.sweep_images > 0:
        xs, ys = x_eval[:args.sweep_images], y_eval[:args.sweep_images]
        with torch.no_grad():
            ap_ = ann(xs).argmax(1)
            functional.reset_net(sj)
            acc_out = torch.zeros(len(xs), 10)
            points = {}
            for t in range(1, args.sweep_T + 1):
                acc_out += sj(xs)
                if t & (t - 1) == 0 or t == args.sweep_T:
                    p = acc_out.argmax(1)
                    points[t] = {"agreement_with_ann": float((p == ap_).float().mean()),
                                 "accuracy": float((p == ys).float().mean())}
        sweep = {"images": len(xs), "ann_accuracy": float((ap_ == ys).float().mean()), "by_T": points}
        print("SJ sweep agreement by T: "
              + ", ".join(f"{t}:{v['agreement_with_ann']:.2f}" for t, v in points.items()), flush=True)

    return agreement, sweep, check


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1],
                    help="torch threads; several values time the speed part once per value")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", nargs="+", default=["resnet20", "vgg16_cifar"])
    ap.add_argument("--timesteps", type=int, default=8)
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 1])
    ap.add_argument("--weights", default=None,
                    help="default: zoo/resnet20_cifar10.pt, else the newest zoo/checkpoints/resnet20*")
    ap.add_argument("--eval-images", type=int, default=1000)
    ap.add_argument("--eval-batch", type=int, default=250)
    ap.add_argument("--calib-batch", type=int, default=256)
    ap.add_argument("--sweep-images", type=int, default=64,
                    help="images for the SpikingJelly T-sweep (0: skip)")
    ap.add_argument("--sweep-T", type=int, default=256)
    args = ap.parse_args()
    logging.getLogger("spikingjelly").setLevel(logging.WARNING)
    try:  # SpikingJelly logs through loguru; keep its INFO lines and tqdm bars out of the output
        from loguru import logger as _lg
        _lg.remove()
    except Exception:
        pass
    import spikingjelly
    from spikingjelly.activation_based import ann2snn, functional
    from spikingjelly.activation_based.ann2snn.recipes import rate_coding

    rate_coding.tqdm = lambda it, *a, **k: it  # no calibration progress bar in the benchmark output

    torch.set_num_threads(args.threads[0])
    torch.manual_seed(0)
    T = args.timesteps
    started = time.perf_counter()
    load_start = os.getloadavg()

    # ------------------------------------------------------------------ networks and data
    wpath = find_weights(args.weights)
    with tempfile.TemporaryDirectory() as tmp:  # snapshot: a running training job replaces its checkpoint
        snap = Path(tmp) / wpath.name
        shutil.copy2(wpath, snap)
        winfo = weights_info(snap)
        ann = load_state_dict_file(build_model("resnet20", 10), snap).eval()
    winfo["path"] = os.path.relpath(wpath, REPO)
    splits = get_splits("cifar10", DATA, augment=False)
    calib_loader = make_loader(splits.calib, args.calib_batch)
    calib_batch = next(iter(calib_loader))[0]
    x_eval, y_eval = subset(splits.test, args.eval_images, seed=0)
    anns: dict[str, tuple[torch.nn.Module, str]] = {"resnet20": (ann, winfo["path"])}
    if "vgg16_cifar" in args.models:
        vgg_w = REPO / "zoo" / "vgg16_cifar_cifar10.pt"
        if vgg_w.is_file():
            anns["vgg16_cifar"] = (load_state_dict_file(build_model("vgg16_cifar", 10), vgg_w).eval(),
                                   os.path.relpath(vgg_w, REPO))
        else:
            vgg = build_model("vgg16_cifar", 10).train()
            with torch.no_grad():
                for xb, _ in list(calib_loader)[:2]:
                    vgg(xb)
            anns["vgg16_cifar"] = (vgg.eval(), "random weights, BN statistics from 2 calibration batches")
    anns = {k: v for k, v in anns.items() if k in args.models}

    # ------------------------------------------------------------------ conversions
    nets: dict[str, dict[str, Any]] = {}
    for name, (model, source) in anns.items():
        t0 = time.perf_counter()
        with torch.no_grad():
            recipe = ann2snn.RateCodingRecipe(dataloader=calib_loader)  # defaults: mode="Max", layer-wise
            sj = ann2snn.Converter(recipe=recipe, device="cpu").convert(copy.deepcopy(model))
        sj_convert_s = time.perf_counter() - t0
        sj.eval()
        sj_multi_net = copy.deepcopy(sj)
        try:
            functional.set_step_mode(sj_multi_net, "m")
            with torch.no_grad():
                sj_multi(sj_multi_net, calib_batch[:2], T)
            multi_ok, multi_err = True, None
        except Exception as exc:  # the converted graph may hold ops without a multi-step form
            multi_ok, multi_err = False, f"{type(exc).__name__}: {exc}"
        t0 = time.perf_counter()
        snn = adacal.prepare(model, calib_batch)
        adacal.calibrate_thresholds(snn, calib_batch, timesteps=T)
        adacal_convert_s = time.perf_counter() - t0
        snn.eval()
        gm = trace(copy.deepcopy(model).eval())
        fold_batchnorm(gm)
        gm.recompile()
        nets[name] = {"ann": model, "ann_folded": gm.eval(), "sj": sj, "sj_multi": sj_multi_net, "snn": snn,
                      "multi_ok": multi_ok, "multi_err": multi_err, "weights": source,
                      "conversion_s": {"spikingjelly": sj_convert_s, "adacal": adacal_convert_s}}
    compile_s = KERNEL.warm_up("cpu", torch.float32)  # before any timing; reported, not timed below

    # ------------------------------------------------------------------ speed (interleaved)
    rows: list[dict[str, Any]] = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, net in nets.items():
            snn, sj, sj_multi_net = net["snn"], net["sj"], net["sj_multi"]
            for batch in args.batches:
                x = x_eval[:batch].clone()

                def adacal_run(fused: bool | str, layout: str = "auto", x: torch.Tensor = x,
                               snn: Any = snn) -> torch.Tensor:
                    snn.fused, snn.layout = fused, layout
                    return snn.run(x, T).sum(0)

                # SpikingJelly in channels-last memory order too (its network and input converted), so
                # that adacal's layout choice is not compared against a handicapped SpikingJelly
                sj_cl = copy.deepcopy(sj).to(memory_format=torch.channels_last)
                x_cl = x.contiguous(memory_format=torch.channels_last)
                with torch.no_grad():
                    sj_cl_same = float((sj_step(sj_cl, x_cl, T) - sj_step(sj, x, T)).abs().max())
                fns = {
                    "ann": lambda x=x, m=net["ann"]: m(x),
                    "ann_folded": lambda x=x, m=net["ann_folded"]: m(x),
                    "sj_step": lambda x=x, sj=sj: sj_step(sj, x, T),
                    "sj_step_channels_last": lambda x=x_cl, sj=sj_cl: sj_step(sj, x, T),
                    "adacal": lambda: adacal_run("auto"),
                    "adacal_contiguous": lambda: adacal_run("auto", "contiguous"),
                    "adacal_eager": lambda: adacal_run(False),
                }
                if net["multi_ok"]:
                    fns["sj_multistep"] = lambda x=x, m=sj_multi_net: sj_multi(m, x, T)
                samples: dict[str, list[float]] = {k: [] for k in fns}

                def recorded(k: str, fn: Any, samples: dict[str, list[float]] = samples) -> Any:
                    def call() -> Any:
                        t0 = time.perf_counter()
                        out = fn()
                        samples[k].append(time.perf_counter() - t0)
                        return out
                    return call

                with torch.no_grad():
                    times = interleaved({k: recorded(k, fn) for k, fn in fns.items()}, args.repeats)
                snn.fused, snn.layout = "auto", "auto"
                best = {k: min(v[1:]) for k, v in samples.items()}  # v[0] is interleaved()'s warm-up call
                ann_t, folded_t = times["ann"], times["ann_folded"]
                sj_modes = {k: times[k] for k in ("sj_step", "sj_step_channels_last", "sj_multistep") if k in times}
                sj_best = min(sj_modes, key=sj_modes.get)
                sj_best_min = min(best[k] for k in sj_modes)
                row: dict[str, Any] = {
                    "model": name, "batch": batch, "T": T, "threads": threads,
                    "ms": {k: v * 1e3 for k, v in times.items()},
                    "sj_best_mode": sj_best.removeprefix("sj_"),
                    "ratio_vs_spikingjelly": sj_modes[sj_best] / times["adacal"],
                    "ratio_vs_spikingjelly_min": sj_best_min / best["adacal"],
                    "ratio_vs_spikingjelly_eager": sj_modes[sj_best] / times["adacal_eager"],
                    "ratio_vs_spikingjelly_contiguous": sj_modes[sj_best] / times["adacal_contiguous"],
                    "sj_channels_last_max_abs_diff": sj_cl_same,
                    "ratio_vs_spikingjelly_step": times["sj_step"] / times["adacal"],
                    "ratio_vs_spikingjelly_multistep": (times["sj_multistep"] / times["adacal"])
                    if "sj_multistep" in times else None,
                    "ratio_vs_T_ann": {k: times[k] / (T * ann_t) for k in fns if k not in ("ann", "ann_folded")},
                    "ratio_vs_T_ann_folded": {k: times[k] / (T * folded_t) for k in fns
                                              if k not in ("ann", "ann_folded")},
                }
                floor = dense_floor_ms(net["ann_folded"], x, T)
                row["dense_convolution_floor"] = floor
                # the most any dense-convolution simulator could beat SpikingJelly's best mode by
                row["ratio_vs_spikingjelly_bound"] = sj_modes[sj_best] / (floor["floor_ms"] / 1e3)
                row["channels_last_convolutions"] = sorted(
                    str(k[0][0][1]) for k, v in snn._block_plans().items()
                    if isinstance(k, tuple) and k[-1] == "auto" and v == torch.channels_last)
                rows.append(row)
                print(f"{name} threads {threads} batch {batch}: ANN {ann_t * 1e3:.1f} ms "
                      f"(folded {folded_t * 1e3:.1f}) | "
                      + " | ".join(f"{k} {times[k] * 1e3:.1f} ms" for k in fns if k not in ("ann", "ann_folded"))
                      + f" | adacal vs SJ best ({sj_best}) {row['ratio_vs_spikingjelly']:.2f}x"
                      + f" (fastest repeats {row['ratio_vs_spikingjelly_min']:.2f}x); dense-convolution floor "
                      + f"{floor['floor_ms']:.1f} ms: at most {row['ratio_vs_spikingjelly_bound']:.2f}x SJ", flush=True)
    torch.set_num_threads(args.threads[0])
    snn = nets["resnet20"]["snn"] if "resnet20" in nets else None
    sj = nets["resnet20"]["sj"] if "resnet20" in nets else None
    sj_multi_net = nets["resnet20"]["sj_multi"] if "resnet20" in nets else None
    multi_ok = bool(nets.get("resnet20", {}).get("multi_ok"))

    # ------------------------------------------------------------------ agreement with the ANN (ResNet-20)
    eb = args.eval_batch
    agreement: dict[str, Any] = {}
    sweep: dict[str, Any] = {}
    check: dict[str, Any] = {}
    if snn is not None:
        agreement, sweep, check = agreement_part(args, ann, snn, sj, sj_multi_net, multi_ok, x_eval, y_eval, T, eb,
                                                 functional)

    total_s = time.perf_counter() - started
    notes = [
        "Timings are medians of alternated runs, so background load hits all variants alike; the load "
        "average at start/end is recorded: the 2-core machine was shared with other engineers' jobs, so "
        "absolute ms are inflated and noisy; the ratios are what count. ratio_vs_spikingjelly_min uses the "
        "fastest repeat of each variant instead of the median.",
        "SpikingJelly calibration: RateCodingRecipe(dataloader) with defaults (mode='Max', momentum 0.1 EMA of "
        f"per-batch maxima, layer-wise, Conv-BN fused) over all {len(splits.calib)} images of splits.calib "
        f"(training data) in batches of {args.calib_batch}; adacal: calibrate_thresholds on the first batch "
        f"({len(calib_batch)} images) of the same loader, default CalibrationConfig (method 'mse', layer-wise), "
        "NeuronConfig defaults (phi=1, rho=1, v_init=0.5), no bias/potential correction.",
        "adacal runs with its defaults: time_chunk 'auto', fused neuron update 'auto' (compiled once per process "
        f"before timing: {compile_s:.1f} s here), canonical row blocks on (outputs independent of the chunking); "
        "'adacal eager' is the same with fused=False; 'adacal contiguous' with layout='contiguous' (every "
        "convolution on NCHW input, as before the layout plans; same outputs to the bit).",
        "SpikingJelly is also timed with its network and input in channels-last memory order (single-step); "
        "the best of its modes is what adacal is compared with. Largest output difference of that mode from "
        "its default: " + ", ".join(f"{r['model']} b={r['batch']} {r['sj_channels_last_max_abs_diff']:.1e}"
                                     for r in rows) + ".",
        "SpikingJelly's IFNode starts at v=0 with max-norm thresholds, so at small T most deep-layer neurons have "
        "not fired yet and the output is dominated by the fc bias; see sweep for its convergence with T.",
    ]
    payload = {
        "command": command(), "machine": machine(), "threads": args.threads, "repeats": args.repeats,
        "spikingjelly_version": getattr(spikingjelly, "__version__", "2.0.0"),
        "weights": winfo,
        "networks": {k: {"weights": v["weights"], "conversion_s": v["conversion_s"],
                         "spikingjelly_multistep": {"works": v["multi_ok"], "error": v["multi_err"]}}
                     for k, v in nets.items()},
        "T": T, "fused_compile_s": compile_s, "rows": rows, "agreement": agreement,
        "spikingjelly_T_sweep": sweep, "load_average_start": load_start, "load_average_end": os.getloadavg(),
        "total_runtime_s": total_s, "notes": notes,
    }

    def f(v: Any, fmt: str = ".2f") -> str:
        return "—" if v is None else format(v, fmt)

    md = ["# Simulation speed and agreement: adacal vs SpikingJelly 2.0 ann2snn", "",
          f"Command: `{command()}`", f"Machine: {machine()}",
          f"Load average start {tuple(round(v, 2) for v in load_start)}, end "
          f"{tuple(round(v, 2) for v in os.getloadavg())} (shared machine: see notes).",
          "Networks: " + "; ".join(f"{k}: weights {v['weights']}" for k, v in nets.items())
          + f". SpikingJelly {payload['spikingjelly_version']}, T={T}, threads {args.threads}, median of "
          f"{args.repeats} alternated repeats.", "",
          "## Speed", "",
          "ratio vs SJ = SpikingJelly's best mode time / adacal time (> 1: adacal faster); × T·ANN = SNN time / "
          "(T × ANN forward), in brackets against the ANN with BatchNorm folded. *Convolution floor*: the "
          "folded network's convolutions alone (profiled, the faster layout per convolution), the first once "
          "and the others T times — what any simulator with dense convolution kernels must spend; *bound vs SJ "
          "best* = SJ's best time / that floor, the largest speed-up over SpikingJelly such a simulator can "
          "reach.", "",
          "| model | threads | batch | adacal ms | adacal contiguous ms | adacal eager ms | SJ step ms | "
          "SJ step channels-last ms | SJ multi-step ms | **adacal vs SJ best** | fastest repeats | "
          "contiguous vs SJ best | eager vs SJ best | convolution floor ms | **bound vs SJ best** | "
          "adacal × T·ANN | SJ step × T·ANN | SJ multi × T·ANN |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ms, rt, rf = r["ms"], r["ratio_vs_T_ann"], r["ratio_vs_T_ann_folded"]
        md.append(f"| {r['model']} | {r['threads']} | {r['batch']} | {ms['adacal']:.1f} | "
                  f"{f(ms.get('adacal_contiguous'), '.1f')} | {ms['adacal_eager']:.1f} | {ms['sj_step']:.1f} | "
                  f"{f(ms.get('sj_step_channels_last'), '.1f')} | {f(ms.get('sj_multistep'), '.1f')} | "
                  f"**{r['ratio_vs_spikingjelly']:.2f}×** ({r['sj_best_mode']}) | "
                  f"{r['ratio_vs_spikingjelly_min']:.2f}× | "
                  f"{f(r.get('ratio_vs_spikingjelly_contiguous'))}× | "
                  f"{r['ratio_vs_spikingjelly_eager']:.2f}× | {r['dense_convolution_floor']['floor_ms']:.1f} | "
                  f"**{r['ratio_vs_spikingjelly_bound']:.2f}×** | {rt['adacal']:.2f}× ({rf['adacal']:.2f}×) | "
                  f"{rt['sj_step']:.2f}× ({rf['sj_step']:.2f}×) | "
                  f"{f(rt.get('sj_multistep'))}× ({f(rf.get('sj_multistep'))}×) |")
    md += ["", "Convolutions the default layout ran channels-last: " + "; ".join(
        f"{r['model']} b={r['batch']}: {', '.join(r['channels_last_convolutions']) or 'none'}" for r in rows)]
    md += ["", "ANN forward ms (as trained / BN folded): " + ", ".join(
        f"{r['model']} {r['threads']} thr batch {r['batch']} {r['ms']['ann']:.1f} / {r['ms']['ann_folded']:.1f}"
        for r in rows)]
    for k, v in nets.items():
        md.append(f"SpikingJelly multi-step mode works on {k}: {v['multi_ok']}"
                  + (f" ({v['multi_err']})" if v["multi_err"] else ""))
    if agreement:
        sjA, adA = agreement["spikingjelly_max_norm"], agreement["adacal"]
        md += ["", f"## Agreement with the ANN at T={T} (ResNet-20, {agreement['images']} real CIFAR-10 test images, "
               "seeded random subset)", "",
               "| network | top-1 agreement with ANN | accuracy | distinct predicted classes |",
               "|---|---|---|---|",
               f"| ANN | 1.000 | {agreement['ann_accuracy']:.3f} | — |",
               f"| SpikingJelly RateCodingRecipe (max-norm) | {sjA['agreement_with_ann']:.3f} | "
               f"{sjA['accuracy']:.3f} | {sjA['distinct_predictions']} |",
               f"| adacal prepare + calibrate_thresholds (φ=1) | {adA['agreement_with_ann']:.3f} | "
               f"{adA['accuracy']:.3f} | {adA['distinct_predictions']} |"]
        if check:
            md.append(f"SpikingJelly multi-step reproduces single-step on {check['images']} images to "
                      f"{check['max_abs_diff_vs_step']:.2g} (same top-1 {check['same_top1']:.3f}).")
    if sweep:
        md += ["", f"SpikingJelly T-sweep (usage check, first {sweep['images']} of those images, ANN accuracy "
               f"{sweep['ann_accuracy']:.2f}): agreement with ANN by T: "
               + ", ".join(f"T={t} {v['agreement_with_ann']:.2f}" for t, v in sweep["by_T"].items())]
    md += ["", "## Notes", ""] + [f"- {n}" for n in notes] + ["", f"Total runtime {total_s:.0f} s."]
    write_results("simulation_vs_spikingjelly", payload, "\n".join(md) + "\n")
    print(f"wrote benchmarks/results/simulation_vs_spikingjelly.{{json,md}} in {total_s:.0f} s")


if __name__ == "__main__":
    main()
