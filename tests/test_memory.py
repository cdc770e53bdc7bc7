"""Memory of a streaming run does not grow with T (issue 15, item 2).

Peak resident memory is measured in a subprocess: large allocations go straight to mmap (so a
free returns memory to the OS) and the kernel's peak-RSS counter is reset before each run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adacal.convert import prepare

pytestmark = pytest.mark.usefixtures("single_thread")

SCRIPT = r"""
import json, re, sys, torch
from torch import nn
from adacal.convert import prepare
from adacal.calibrate import calibrate_thresholds

torch.set_num_threads(1)

def status(key):
    return int(re.search(key + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
x = torch.randn(8, 3, 48, 48)
snn = prepare(model, x)
calibrate_thresholds(snn, x, timesteps=8)
result = {}
for reduce in (None, "sum"):
    for T in (8, int(sys.argv[1]), 8):  # 8 again: the first run also pays one-off allocations
        snn.run(x, 2, time_chunk=1, reduce=reduce)
        reset_peak()
        base = status("VmRSS")
        snn.run(x, T, time_chunk=1, reduce=reduce)
        result[f"{reduce}-{T}"] = status("VmHWM") - base
print(json.dumps(result))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux peak-RSS reset")
def test_streaming_memory_does_not_grow_with_T(tmp_path: Path):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONPATH=os.pathsep.join(sys.path))
    try:
        done = subprocess.run([sys.executable, "-c", SCRIPT, "128"], capture_output=True, text=True, env=env,
                              timeout=300, check=True)
    except subprocess.CalledProcessError as exc:
        if "clear_refs" in exc.stderr:
            pytest.skip("peak-RSS reset not permitted here")
        raise
    peaks = json.loads(done.stdout.strip().splitlines()[-1])
    for reduce in ("None", "sum"):
        short, long = peaks[f"{reduce}-8"], peaks[f"{reduce}-128"]
        # one step's activations: 8 × 16 × 48 × 48 × 4 B ≈ 1.2 MB per tensor
        assert long <= 1.5 * short + (1 << 20), (reduce, short, long)


def test_reduce_sum_and_mean_are_the_stepwise_time_sums(images, small_cnn):
    snn = prepare(small_cnn, images(4))
    from adacal.calibrate import calibrate_thresholds

    calibrate_thresholds(snn, images(8), timesteps=8)
    x = images(3, seed=2)
    steps = snn.run(x, 9)
    expected = steps[0].clone()
    for t in range(1, 9):
        expected += steps[t]
    for chunk in (1, 4, None):
        assert torch.equal(snn.run(x, 9, time_chunk=chunk, reduce="sum"), expected)
    assert torch.equal(snn.run(x, 9, batch_chunk=2, reduce="mean"), expected / 9)


def test_auto_chunk_follows_the_measured_activation_size(images, small_cnn):
    snn = prepare(small_cnn, images(4))
    small = snn.measured_row_bytes(images(2))
    big = snn.measured_row_bytes(images(2, shape=(3, 16, 16)))  # 4x the pixels of the conversion
    assert small == snn.activation_bytes and big == 4 * small
