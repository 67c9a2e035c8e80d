#!/usr/bin/env bash
# The prepared one-GPU check (issue: scale out). On one GPU, in under 8 minutes: SmolLM2-135M (or a
# fresh model when its cached weights are absent) through SFT -> DPO -> GRPO with small budgets,
# CumPT calibration, and the scoring benchmark (transformers, and vLLM when installed), written to
# ${OUT:-bench/results}/gpu.json.
#
#   bash bench/gpu.sh                       # in a checkout with .venv, or with python3 that has torch+CUDA
#   MODEL=fresh bash bench/gpu.sh           # no SmolLM2 cache on that machine
#
# Missing packages (trl, datasets, peft, pydantic, ... on a bare CUDA image) can be installed from
# wheels in .whl/ (pip download them where there is a network; see docs/scale-out.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
if [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/taosr-site .whl/*.whl
  export PYTHONPATH=/tmp/taosr-site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi
MODEL=${MODEL:-smollm2-135m}
if [ "$MODEL" = smollm2-135m ] && [ ! -f "${TAOSR_CACHE:-$HOME/.cache/taosr}/smollm2-135m/config.json" ]; then
  echo "no cached SmolLM2-135M under ${TAOSR_CACHE:-~/.cache/taosr}: using a fresh model (MODEL=fresh)" >&2
  MODEL=fresh
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
OUTDIR=${OUT:-bench/results}
mkdir -p "$OUTDIR"
PYTHONUNBUFFERED=1 timeout 470 "$PY" bench/gpu_pipeline.py --model "$MODEL" --out "$OUTDIR/gpu.json" "$@"
