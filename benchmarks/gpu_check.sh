#!/usr/bin/env bash
# benchmarks/gpu_check.py on a fresh GPU machine, in one command:
#   bash benchmarks/gpu_check.sh [OUT_DIR] [more gpu_check.py flags]     -> OUT_DIR/gpu.json (default: $OUT or .)
# Uses the python on PATH (or $PYTHON). torch must be there already (a CUDA build for the GPU part); the other
# packages clearbench needs are installed only when missing, and the repo itself with `pip install -e . --no-deps`
# (falling back to PYTHONPATH). Each step prints what it did. Runs with --study, bounded to stay under 8 minutes.
set -u
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-.}}
[ $# -gt 0 ] && shift
PY=${PYTHON:-python3}
echo "== $($PY -c 'import sys; print(sys.executable, sys.version.split()[0])')"
if ! $PY -c 'import torch; print("== torch", torch.__version__, "cuda available:", torch.cuda.is_available(), torch.cuda.device_count(), "GPU(s)")'; then
  echo "== torch is not importable: install torch (a CUDA build) first"; exit 1
fi
missing=$($PY - <<'PYEOF'
import importlib.util
# module -> distribution, from pyproject.toml's dependencies (torch is checked above)
deps = {"torchvision": "torchvision", "transformers": "transformers>=5.0", "tokenizers": "tokenizers", "peft": "peft",
        "accelerate": "accelerate", "diffusers": "diffusers", "open_clip": "open_clip_torch", "datasets": "datasets",
        "PIL": "pillow", "rouge_score": "rouge-score", "scipy": "scipy", "sklearn": "scikit-learn",
        "matplotlib": "matplotlib", "safetensors": "safetensors", "numpy": "numpy", "tqdm": "tqdm", "yaml": "pyyaml",
        "submitit": "submitit>=1.5"}
print(" ".join(dist for mod, dist in deps.items() if importlib.util.find_spec(mod) is None))
PYEOF
)
if [ -n "$missing" ]; then
  echo "== installing the missing packages: $missing"
  $PY -m pip install $missing || echo "== pip could not install them (no package index reachable?): the parts that need them will fail"
else
  echo "== every dependency is importable"
fi
if $PY -m pip install -e . --no-deps --no-build-isolation -q; then
  echo "== installed clearbench from $PWD (pip install -e . --no-deps)"
else
  echo "== pip install -e . failed: using PYTHONPATH=$PWD"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT_DIR"
echo "== $PY benchmarks/gpu_check.py --out $OUT_DIR/gpu.json --study $*"
exec $PY benchmarks/gpu_check.py --out "$OUT_DIR/gpu.json" --study --study-timeout 180 "$@"
