#!/usr/bin/env bash
# Install SpikingJelly 2.0.0 for benchmarks/simulation_vs_spikingjelly.py only (not an adacal dependency).
#
# Its declared requirements (torchaudio, tensorboard, h5py, matplotlib, SciencePlots, ...) would pull in
# torch builds that fight ours, so install it without dependencies and add only what the import path
# `spikingjelly.activation_based.ann2snn` needs: tqdm and requests (ann2snn.utils / recipes import them)
# and loguru (spikingjelly.logger).
#
#   bash benchmarks/install_spikingjelly.sh            # into .venv of the repository
#   PYTHON=/path/to/python bash benchmarks/install_spikingjelly.sh
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
"$PYTHON" -m pip install --no-deps spikingjelly==2.0.0 tqdm loguru requests certifi charset-normalizer idna urllib3
"$PYTHON" -c "import spikingjelly.activation_based.ann2snn, spikingjelly.activation_based.functional; print('spikingjelly ann2snn import OK')"
