#!/usr/bin/env bash
# One command for a GPU machine (under 8 minutes on one GPU): the CUDA tests, then resnest50 against
# timm's resnest50d and torchvision's resnet50 (inference and training, bf16 autocast, channels_last,
# eager and compiled, batch 64 and 256), printing ratios. Run from the repository root:
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check.sh needs a CUDA GPU')"
timeout 120 python3 -m pytest -m cuda -q -p no:cacheprovider
timeout 330 python3 benchmarks/gpu_compare.py --batches 64,256 --rounds 5
