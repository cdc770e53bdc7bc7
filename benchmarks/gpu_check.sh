#!/usr/bin/env bash
# CUDA checks and GPU speed of the simulation core, in one short run (≤ 10 min on one GPU):
# installs what it needs, runs benchmarks/gpu_check.py, writes benchmarks/results/gpu_check.{json,md}
# (and copies them to $OUT when the device runner sets it).
#
#   bash benchmarks/gpu_check.sh                 # uses .venv/bin/python of the repository, else python3
#   PYTHON=/path/to/python bash benchmarks/gpu_check.sh
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"

"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())"
# adacal's own imports (no install needed with PYTHONPATH; torchvision for the model registry)
"$PYTHON" -c "import torchvision" 2>/dev/null || "$PYTHON" -m pip install -q torchvision
# SpikingJelly without its heavy dependencies (see install_spikingjelly.sh); cupy is optional
PYTHON="$PYTHON" bash benchmarks/install_spikingjelly.sh || echo "SpikingJelly unavailable: adacal-only speed rows"
CUDA_MAJOR="$("$PYTHON" -c 'import torch; print((torch.version.cuda or "12").split(".")[0])')"
"$PYTHON" -m pip install -q "cupy-cuda${CUDA_MAJOR}x" || echo "cupy-cuda${CUDA_MAJOR}x did not install: no SpikingJelly cupy rows"

timeout 540 "$PYTHON" benchmarks/gpu_check.py --repeats 5 "$@"

if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT/benchmarks/results"
  cp benchmarks/results/gpu_check.json benchmarks/results/gpu_check.md "$OUT/benchmarks/results/"
fi
