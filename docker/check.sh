#!/usr/bin/env bash
# The container check: build the image, then use it as docs/container.md says, one line per check.
#
#   docker/check.sh                                   # docker or podman, whichever has an engine
#   BASE=localhost/python-standin:3.11-slim-bookworm docker/check.sh   # no registry: docker/standin-base.sh
#   ENGINE=podman TAG=sononet-batch:check TESTS=1 docker/check.sh      # also the test image's pytest run
#
# Checks, each PASS or FAIL with what it saw: the build; --help; the headline command on a workdir
# the container's user cannot write (one line, rc 2); the default train-all on the demo corpus;
# label-folder on a read-only /data; --read-only with a tmpfs /tmp and a read-only cache volume
# (numba falls back to /tmp); a non-1000 --user; SIGTERM (`stop -t 10`) during training in the
# default worker processes, then the resume. Logs go to $WORK (kept). Exit status: failed checks.
set -uo pipefail
cd "$(dirname "$0")/.."

TAG=${TAG:-sononet-batch:check}
WORK=${WORK:-$(mktemp -d /var/tmp/sononet-check.XXXXXX)}
if [ -z "${ENGINE:-}" ]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker
  elif command -v podman >/dev/null; then ENGINE=podman
  else echo "check.sh: neither docker (with a running engine) nor podman found" >&2; exit 2; fi
fi
mkdir -p "$WORK/logs"
chmod 755 "$WORK"
failed=0
passed=0

result() {  # result NAME RC DETAIL: one line
  if [ "$2" = 0 ]; then
    passed=$((passed + 1)); echo "PASS $1: $3"
  else
    failed=$((failed + 1)); echo "FAIL $1: $3 (log: $WORK/logs/$1.log)"
  fi
}

run() {  # run NAME ARGS...: the image, output into the check's log
  local name=$1; shift
  "$ENGINE" run --rm "$@" >>"$WORK/logs/$name.log" 2>&1
}

writable() {  # writable DIR: a folder any uid may write, as a host user's ./work would be made for it
  mkdir -p "$1" && chmod 1777 "$1"
}

# --- build ---------------------------------------------------------------------------------------
build_args=()
[ -n "${BASE:-}" ] && build_args+=(--build-arg "BASE=$BASE")
t0=$(date +%s)
nice "$ENGINE" build "${build_args[@]}" -t "$TAG" . >"$WORK/logs/build.log" 2>&1
rc=$?
size=$("$ENGINE" image inspect --format '{{.Size}}' "$TAG" 2>/dev/null || echo 0)
result build $rc "$ENGINE build ${BASE:+(BASE=$BASE) }-> $TAG, $(( $(date +%s) - t0 )) s, $((size / 1000000)) MB"
if [ $rc != 0 ]; then
  echo "1 check failed; the image did not build, nothing else to check"
  exit 1
fi

# --- --help ------------------------------------------------------------------------------------
run help "$TAG" --help
rc=$?
grep -q "Usage: sononet-batch" "$WORK/logs/help.log" && [ $rc = 0 ]
result help $? "sononet-batch --help: rc $rc"

# --- a workdir the container's user cannot write ---------------------------------------------------
mkdir -p "$WORK/root-owned" && chmod 755 "$WORK/root-owned"  # what docker makes of a missing -v folder
run unwritable --user 4321:4321 -v "$WORK/root-owned:/work" "$TAG" train-all
rc=$?
last=$(tail -n 1 "$WORK/logs/unwritable.log")
[ $rc = 2 ] && ! grep -q Traceback "$WORK/logs/unwritable.log" && [[ $last == *"--user"*chown* ]]
result unwritable-workdir $? "--user 4321 on a root-owned 755 /work: rc $rc, no traceback: ${last:0:100}..."

# --- the default train-all, demo corpus ------------------------------------------------------------
writable "$WORK/work"
t0=$(date +%s)
run train-all -v "$WORK/work:/work" "$TAG"
rc=$?
status=$(grep -o '"status": *"[a-z]*"' "$WORK/work/runs/demo/run.json" 2>/dev/null)
[ $rc = 0 ] && [[ $status == *complete* ]] && [ -f "$WORK/work/runs/demo/metrics.json" ]
result train-all $? "docker run -v \$PWD/work:/work $TAG: rc $rc, run.json $status, $(( $(date +%s) - t0 )) s"
bars=$(grep -oE "demo corpus: +[0-9]+%" "$WORK/logs/train-all.log" | wc -l)  # tqdm bars, not the log line
[ "$bars" = 0 ]
result quiet-log $? "no progress bars off a terminal: $bars demo-corpus updates, $(wc -l <"$WORK/logs/train-all.log") log lines"

# --- label-folder on a read-only /data -------------------------------------------------------------
writable "$WORK/audio"
run make-audio --entrypoint python -v "$WORK/audio:/out" "$TAG" -c '
import numpy as np, soundfile as sf
t = np.arange(32000) / 16000
for i in range(12):
    sf.write(f"/out/clip{i:02d}.wav", 0.1 * np.sin(2 * np.pi * (120 + 15 * i) * t), 16000)
'
model=(--set model=runs/demo/cnn/model --set input=/data/incoming)
run label-folder -v "$WORK/audio:/data/incoming:ro" -v "$WORK/work:/work" "$TAG" label-folder "${model[@]}" \
  --set out=labels/incoming.parquet
rc=$?
[ $rc = 0 ] && [ -f "$WORK/work/labels/incoming.parquet" ]
result label-folder $? "12 clips on a read-only /data: rc $rc, labels/incoming.parquet $(
  [ -f "$WORK/work/labels/incoming.parquet" ] && echo written || echo missing)"

# --- --read-only, tmpfs /tmp, and a cache volume it cannot write ---------------------------------
mkdir -p "$WORK/ro-cache"
run read-only --read-only --tmpfs /tmp -v "$WORK/ro-cache:/cache:ro" -v "$WORK/audio:/data/incoming:ro" \
  -v "$WORK/work:/work" "$TAG" label-folder "${model[@]}" --set out=labels/read-only.parquet
rc=$?
[ $rc = 0 ] && [ -f "$WORK/work/labels/read-only.parquet" ] && grep -q "caching compiled kernels in /tmp" \
  "$WORK/logs/read-only.log"
result read-only $? "--read-only --tmpfs /tmp, /cache read-only: rc $rc, $(
  grep -o "caching compiled kernels in [^ ]*" "$WORK/logs/read-only.log" | head -n 1)"

# --- another uid --------------------------------------------------------------------------------
writable "$WORK/work-4321"
run other-user --user 4321:4321 -v "$WORK/audio:/data/incoming:ro" -v "$WORK/work:/models:ro" \
  -v "$WORK/work-4321:/work" "$TAG" label-folder --set model=/models/runs/demo/cnn/model \
  --set input=/data/incoming --set out=labels/incoming.parquet
rc=$?
run other-user --user 4321:4321 --entrypoint python "$TAG" -c "import sononet.kernels"
rc2=$?
[ $rc = 0 ] && [ $rc2 = 0 ] && [ -f "$WORK/work-4321/labels/incoming.parquet" ]
result other-user $? "--user 4321:4321: label-folder rc $rc, kernel import rc $rc2"

# --- SIGTERM during training (default worker processes), then the resume ---------------------------
name="sononet-check-$$"
sets=(--set 'models=["cnn","bigru"]' --set train.epochs=50 --set out=runs/sigterm --set prepare.out=runs/demo/shards)
"$ENGINE" run -d --name "$name" -v "$WORK/work:/work" "$TAG" train-all "${sets[@]}" >"$WORK/logs/sigterm.log" 2>&1
for _ in $(seq 1 900); do  # until a model has finished an epoch (its checkpoint), at most 15 min
  compgen -G "$WORK/work/runs/sigterm/*/checkpoint/last.pt" >/dev/null && break
  [ "$("$ENGINE" inspect --format '{{.State.Running}}' "$name")" = true ] || break
  sleep 1
done
t0=$(date +%s%N)
"$ENGINE" stop -t 10 "$name" >>"$WORK/logs/sigterm.log" 2>&1
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
code=$("$ENGINE" inspect --format '{{.State.ExitCode}}' "$name")
"$ENGINE" logs "$name" >>"$WORK/logs/sigterm.log" 2>&1
"$ENGINE" rm "$name" >/dev/null 2>&1
stopped=$(grep -c "stopped in epoch" "$WORK/logs/sigterm.log")
[ "$code" = 143 ] && [ "$stopped" -ge 1 ]
result sigterm $? "$ENGINE stop -t 10: exit $code after $((ms / 1000)).$(printf %03d $((ms % 1000))) s, $stopped model(s) checkpointed"
epochs=$(grep -o "stopped in epoch [0-9]*" "$WORK/logs/sigterm.log" | grep -o "[0-9]*$" | sort -n | tail -n 1)
run resume -v "$WORK/work:/work" "$TAG" train-all "${sets[@]}" --set "train.epochs=${epochs:-1}"
rc=$?
resumed=$(grep -cE ": resumed (in|after) epoch" "$WORK/logs/resume.log")
[ $rc = 0 ] && [ "$resumed" = "$stopped" ]
result resume $? "the same command, train.epochs=${epochs:-?}: rc $rc, $resumed model(s) resumed: $(
  grep -o "resumed in epoch.*" "$WORK/logs/resume.log" | head -n 1)"

# --- the test image ----------------------------------------------------------------------------------
if [ "${TESTS:-0}" = 1 ]; then
  nice "$ENGINE" build "${build_args[@]}" --target test -t "$TAG-test" . >"$WORK/logs/test-build.log" 2>&1
  run tests --user 4321:4321 "$TAG-test" -q
  rc=$?
  result tests $rc "pytest in the test image as uid 4321: rc $rc, $(grep -E "passed|failed" "$WORK/logs/tests.log" | tail -n 1)"
fi

echo "$passed passed, $failed failed ($ENGINE, logs in $WORK)"
exit $failed
