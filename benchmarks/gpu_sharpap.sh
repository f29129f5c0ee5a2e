#!/usr/bin/env bash
# The SharpAP experiment's checks on a CUDA machine, in one command (from the repository root):
#
#     bash benchmarks/gpu_sharpap.sh DATA_DIR OUT [SECONDS]
#
# 1. the CUDA-against-CPU tests (pytest -m gpu);
# 2. one ML-1M run of the lean table on CUDA: no attack, RevAdv and RevAdv+SharpAP against all five victims
#    (OUT/table-lean, its cells cached there as in any `table` command);
# 3. the cost on the GPU: s per victim epoch and per outer iteration at the lean and paper presets.
# Each step has its share of SECONDS (default 900) as a time limit, so the command ends on time and keeps what
# finished; logs go to OUT/*.log. DEVICE=cpu DATASET=synthetic PRESET=ci runs the same steps as a dry run here.
set -u
data=${1?usage: gpu_sharpap.sh DATA_DIR OUT [SECONDS]}
out=${2:?usage: gpu_sharpap.sh DATA_DIR OUT [SECONDS]}
budget=${3:-900}
device=${DEVICE:-cuda}
dataset=${DATASET:-fed-ml}
preset=${PRESET:-lean}
threads=${THREADS:-8}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}

step() {  # step NAME SHARE_PERCENT COMMAND...: run COMMAND under its share of the budget, log to OUT/NAME.log
    local name=$1 share=$2
    shift 2
    local limit=$((budget * share / 100)) start=$SECONDS
    echo "== $name (limit ${limit} s)"
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - start)) s"
    tail -n 25 "$out/$name.log"
}

"$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
# the two files with `gpu` tests: collecting every test module would need `implicit` and `ray` on the GPU machine
step gpu-tests 10 "$python" -m pytest -q -p no:cacheprovider -m gpu tests/test_sharpap.py tests/test_speed_equivalence.py
step table-lean 50 "$python" -m experiments.sharpap table --datasets "$dataset" --data-dir "$data" --preset "$preset" \
    --runs 1 --workers 1 --threads "$threads" --device "$device" --victims wrmf bpr lightgcn sgl simgcl \
    --attacks none revadv revadv+sharpap --out "$out/table-lean"
cat "$out/table-lean/table.md" "$out/table-lean/attacks.md" "$out/table-lean/utility.md" 2>/dev/null
costs="lean paper"
[ "$preset" = ci ] && costs=ci
for cost in $costs; do
    step "bench-$cost" 18 "$python" benchmarks/bench_sharpap.py --dataset "$dataset" --data-dir "$data" \
        --device "$device" --preset "$cost" --epochs 2 --iterations 3 --threads "$threads"
done
