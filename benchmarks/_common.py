"""Shared helpers for benchmark scripts: machine description, timing, atomic result files."""
from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}


def command() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median wall time of each function, timed in alternation so machine noise hits all alike."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            samples[k].append(timed(f))
    return {k: statistics.median(v) for k, v in samples.items()}


def write_results(name: str, payload: dict[str, Any], markdown: str) -> None:
    """``results/<name>.json`` and ``.md``, each written atomically (adacal.atomic)."""
    from adacal.atomic import atomic_write_text

    atomic_write_text(RESULTS / f"{name}.json", json.dumps(payload, indent=2))
    atomic_write_text(RESULTS / f"{name}.md", markdown)


def start(threads: int) -> None:
    """Logging, thread count and seed, the same way in every benchmark."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(threads)
    torch.manual_seed(0)


def zoo_ann(model: str) -> torch.nn.Module:
    """The committed zoo network ``zoo/<model>_cifar10.pt``, in eval mode."""
    from adacal.models import build_model, load_state_dict_file

    return load_state_dict_file(build_model(model, 10), REPO / "zoo" / f"{model}_cifar10.pt").eval()


def cifar10_splits(calib_size: int, seed: int = 0) -> Any:
    """The shared CIFAR-10 copy; the calibration images come from the training split."""
    from adacal.datasets import get_splits

    return get_splits("cifar10", SHARED / "data" / "cifar10", calib_size=calib_size, seed=seed, augment=False)


def random_subset(dataset: Any, n: int) -> torch.utils.data.Subset:
    """A seeded random subset: the npz test set is sorted by class, so never take the first n."""
    pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n]
    return torch.utils.data.Subset(dataset, pick.tolist())


def convolution_ms(model: torch.nn.Module, x: torch.Tensor, repeats: int = 3) -> list[float]:
    """Milliseconds of each convolution call of one forward pass, in call order (profiler, the fastest
    of ``repeats`` passes per call)."""
    from torch.profiler import ProfilerActivity, profile

    per_call: list[list[float]] = []
    with torch.no_grad():
        model(x)
        for _ in range(repeats):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                model(x)
            convs = sorted((e for e in prof.events() if e.name == "aten::convolution"),
                           key=lambda e: e.time_range.start)
            per_call.append([e.cpu_time_total / 1e3 for e in convs])
    return [min(c) for c in zip(*per_call)]


def run_convolution_ms(run: Any, repeats: int = 3) -> float:
    """Milliseconds that one call of ``run`` spends in convolutions (profiler; the least of
    ``repeats`` calls): for a simulation, its convolutions in the layouts it really uses."""
    from torch.profiler import ProfilerActivity, profile

    totals = []
    with torch.no_grad():
        run()
        for _ in range(repeats):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                run()
            totals.append(sum(e.cpu_time_total for e in prof.events() if e.name == "aten::convolution") / 1e3)
    return min(totals)


def dense_floor_ms(folded: torch.nn.Module, x: torch.Tensor, T: int) -> dict[str, float]:
    """What the convolutions alone cost a simulation of T steps with dense kernels: the first one once
    (the SNN computes it once for a constant input), every other one T times — per step on the batch,
    or once on all T steps stacked (T × batch rows), whichever is faster, each in the faster of the two
    memory layouts (what ``layout="auto"`` may pick). A floor for any simulator that runs dense
    convolutions, adacal and SpikingJelly alike."""
    folded_cl = copy.deepcopy(folded).to(memory_format=torch.channels_last)

    def fastest(inp: torch.Tensor) -> list[float]:
        a = convolution_ms(folded, inp)
        b = convolution_ms(folded_cl, inp.contiguous(memory_format=torch.channels_last))
        return [min(u, v) for u, v in zip(a, b)]

    step = fastest(x)
    stacked = fastest(x.repeat(T, *([1] * (x.dim() - 1)))) if T > 1 else step
    rest = [min(T * s, k) for s, k in zip(step[1:], stacked[1:])]
    return {"floor_ms": step[0] + sum(rest), "convolutions": len(step),
            "ann_convolution_ms": sum(convolution_ms(folded, x))}
