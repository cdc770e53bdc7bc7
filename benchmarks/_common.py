"""Shared helpers for benchmark scripts: machine description, timing, atomic result files."""
from __future__ import annotations

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
