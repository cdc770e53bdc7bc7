#!/usr/bin/env bash
# Finish the model zoo on one GPU in one short run (≤ 10 min): VGG-16 and the wide ResNet-20
# (64-128-256) on the shared CIFAR-10 copy, with benchmarks/zoo/train_cifar10.py's recipe
# (one-cycle SGD, bf16 autocast, channels-last, crop+flip), its checkpoints and manifest entries.
# train_cifar10.py trains on the CPU; this wrapper runs the same main() with the training loop on
# CUDA and the data loader in worker processes, then evaluates in float32 as the script does.
# Epochs are sized for an H100/H200-class GPU (about 4 min per network); override with
# EPOCHS_VGG / EPOCHS_RESNET. Outputs: zoo/{vgg16_cifar,resnet20_wide}_cifar10.pt, zoo/manifest.json,
# zoo/train_*.log — copied to $OUT when the device runner sets it.
#
#   bash benchmarks/zoo/gpu_train.sh
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
export PYTHONPATH="$REPO/src:$REPO/benchmarks/zoo${PYTHONPATH:+:$PYTHONPATH}"
DATA="${DATA:-$REPO/../shared/data/cifar10}"
EPOCHS_VGG="${EPOCHS_VGG:-40}"
EPOCHS_RESNET="${EPOCHS_RESNET:-40}"
WORKERS="${WORKERS:-12}"

"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())"
"$PYTHON" -c "import torchvision, PIL" 2>/dev/null || "$PYTHON" -m pip install -q torchvision pillow
[ -f "$DATA/train_jpeg.npz" ] || { echo "CIFAR-10 copy not found at $DATA (set DATA=...)"; exit 1; }

train() {  # model epochs batch lr
  timeout 290 "$PYTHON" - "$@" <<'PY'
import functools, sys, torch
import train_cifar10 as tc
from adacal import training

model, epochs, batch, lr = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
workers = int(__import__("os").environ.get("WORKERS", "12"))
real_train, real_loader = training.train_classifier, tc.make_loader

def on_cuda(model_, loader, **kw):  # train on the GPU, hand the model back on the CPU
    kw["device"] = "cuda"
    res = real_train(model_, loader, **kw)
    model_.cpu()
    return res

def loader(ds, bs, **kw):  # augmentation in worker processes: the GPU outruns one Python loop
    if kw.get("shuffle"):
        kw["num_workers"] = workers
    return real_loader(ds, bs, **kw)

tc.train_classifier, tc.make_loader = on_cuda, loader
torch.backends.cudnn.benchmark = True
sys.exit(tc.main(["--model", model, "--epochs", epochs, "--batch-size", batch, "--lr", lr,
                  "--threads", "8", "--data-dir", __import__("os").environ["DATA"], "--no-resume"]))
PY
}
export DATA WORKERS
train vgg16_cifar "$EPOCHS_VGG" 256 0.1 || echo "vgg16_cifar: training failed or timed out"
train resnet20_wide "$EPOCHS_RESNET" 256 0.1 || echo "resnet20_wide: training failed or timed out"

if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT/zoo"
  cp zoo/vgg16_cifar_cifar10.pt zoo/resnet20_wide_cifar10.pt zoo/manifest.json "$OUT/zoo/" 2>/dev/null || true
  cp zoo/train_vgg16_cifar.log zoo/train_resnet20_wide.log "$OUT/zoo/" 2>/dev/null || true
fi
