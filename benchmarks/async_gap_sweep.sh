#!/usr/bin/env bash
# Runs benchmarks/async_gap.py arms side by side on a machine with many cores (and a GPU):
# the data set once, the SDT+BN bases side by side (--prepare), then one process per
# (group of arms, seed). Arms in one group run in order in one process, so an arm that only
# changes the export (th2, deep) reuses its group's trained checkpoint instead of racing for it.
#
# usage: benchmarks/async_gap_sweep.sh WORK OUT EPOCHS DEVICE SECONDS "group;group;..." [SEEDS]
#   WORK     async_gap --work folder          OUT      folder for async_gap.json / PNG
#   EPOCHS   fine-tune epochs of every arm     DEVICE   cpu | cuda | auto
#   SECONDS  wall-clock budget: workers are stopped after it (finished runs are kept)
#   groups   e.g. "sdt;mtt;mtt-budget25-w16c64-th2,mtt-budget25-w16c64"
#   SEEDS    comma-separated (default 0,1)
# If the bases cannot train on DEVICE (e.g. no working CUDA), the sweep falls back to the CPU at
# 2 epochs and says so.
set -u
WORK=$1 OUT=$2 EPOCHS=$3 DEVICE=$4 SECONDS_BUDGET=$5 ARM_GROUPS=$6 SEEDS=${7:-0,1}
HERE=$(cd "$(dirname "$0")" && pwd)
START=$(date +%s)
AG=(python "$HERE/async_gap.py" --work "$WORK" --threads 1 ${SWEEP_EXTRA:-})  # SWEEP_EXTRA=--smoke: seconds
mkdir -p "$OUT" "$WORK"

python -c "from flexsnn.data.registry import load_event_dataset as L
L('saccade-mnist', split='train', seed=0); L('saccade-mnist', split='test', seed=0)" || exit 1
echo "data ready after $(( $(date +%s) - START )) s"

IFS=';' read -ra GROUP_LIST <<< "$ARM_GROUPS"
ALL_ARMS=$(IFS=,; echo "${GROUP_LIST[*]}")
# one --prepare process per distinct base (the first arm that needs it)
python - "$HERE/async_gap.py" "$ALL_ARMS" > "$WORK/base-arms.txt" <<'EOF'
import sys, runpy
ARMS = runpy.run_path(sys.argv[1])["ARMS"]
seen = {}
for arm in sys.argv[2].split(","):
    key = (ARMS[arm].get("base_floor"), str(ARMS[arm].get("base_width")))
    seen.setdefault(key, arm)
print(" ".join(seen.values()))
EOF
prepare_bases() {
    local pids=() rc=0
    for a in $(cat "$WORK/base-arms.txt"); do
        "${AG[@]}" --prepare --device "$DEVICE" --arms "$a" --out "$WORK/prep" > "$WORK/prep-$a.log" 2>&1 &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    return $rc
}
prepare_bases || {
    echo "a base failed on $DEVICE:"; tail -n 8 "$WORK"/prep-*.log
    DEVICE=cpu; EPOCHS=2; echo "falling back to the CPU at 2 epochs"
    prepare_bases || { echo "bases failed on the CPU too"; exit 1; }
}
echo "bases ready after $(( $(date +%s) - START )) s (device $DEVICE, epochs $EPOCHS)"

LEFT=$(( SECONDS_BUDGET - ($(date +%s) - START) ))
pids=()
for g in "${GROUP_LIST[@]}"; do
    for s in ${SEEDS//,/ }; do
        timeout "$LEFT" "${AG[@]}" --device "$DEVICE" --epochs "$EPOCHS" --arms "$g" --seeds "$s" \
            --out "$WORK/partial" > "$WORK/run-${g%%,*}-s$s.log" 2>&1 &
        pids+=($!)
    done
done
for p in "${pids[@]}"; do wait "$p"; done
echo "arms done after $(( $(date +%s) - START )) s"
grep -h "seed [0-9]:" "$WORK"/run-*.log
"${AG[@]}" --aggregate --out "$OUT"
