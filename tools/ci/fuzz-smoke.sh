#!/usr/bin/env bash
# Fuzz smoke test: builds every cargo-fuzz target of tools/fuzz (libFuzzer; nightly flags through RUSTC_BOOTSTRAP on
# the stable toolchain) and runs each for FUZZ_SECONDS (default 20) from its committed seed corpus, FUZZ_JOBS targets
# at a time (default: one per core; each fuzzer is one process on one core, so each gets the same time as alone).
# Fails on a crash, panic or timeout; libFuzzer then prints the input and writes it under
# tools/fuzz/artifacts/<target>/.
#
#   tools/ci/fuzz-smoke.sh                        # every target, 20 s each
#   FUZZ_SECONDS=600 tools/ci/fuzz-smoke.sh host  # one target, the 10-minute run
#
# New inputs found go to a scratch corpus (deleted at exit), so the committed corpus changes only by hand.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${FUZZ_SECONDS:-20}
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never

if ! cargo fuzz --version >/dev/null 2>&1; then
  # A debug build of the tool: it only drives cargo and libFuzzer, and builds in about half the time.
  cargo install cargo-fuzz --locked --version 0.13.2 --debug
fi
# Its own folder under the workspace's target/: the fuzz build instruments every crate, so it shares nothing with
# the normal build.
target_dir=${FUZZ_TARGET_DIR:-$PWD/${CARGO_TARGET_DIR:-target}/fuzz}
case "$target_dir" in /*) ;; *) target_dir=$PWD/$target_dir ;; esac
# No sanitizer: jitgate's crates forbid unsafe code, and a panic (overflow checks and debug assertions stay on) is
# what these targets look for; AddressSanitizer would double the build and halve the executions.
flags=(--fuzz-dir tools/fuzz --sanitizer none --target-dir "$target_dir")

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list --fuzz-dir tools/fuzz)
fi
started=$SECONDS
cargo fuzz build "${flags[@]}"
echo "fuzz-smoke: built ${#targets[@]} targets in $((SECONDS - started)) s"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
jobs=${FUZZ_JOBS:-$(nproc)}
# One target: its run's log and, when it passed, a summary line in $scratch/<target>.ok.
fuzz_one() {
  local t=$1
  mkdir -p "$scratch/$t"
  # -timeout: one input taking over 10 s is a hang; -rss_limit_mb: a runaway allocation is a failure too.
  if cargo fuzz run "${flags[@]}" "$t" "$scratch/$t" "tools/fuzz/corpus/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$scratch/$t.log" 2>&1; then
    local runs cov
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$t.log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$scratch/$t.log" | tail -n 1)
    echo "fuzz-smoke: $t ok: ${runs:-?} executions, ${cov:-cov: ?}" >"$scratch/$t.ok"
  fi
}
echo "fuzz-smoke: ${#targets[@]} targets for ${secs} s each, $jobs at a time"
running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  fuzz_one "$t" &
  running=$((running + 1))
done
wait
failed=0
for t in "${targets[@]}"; do
  if [ -f "$scratch/$t.ok" ]; then
    cat "$scratch/$t.ok"
  else
    tail -n 60 "$scratch/$t.log" >&2
    echo "fuzz-smoke: $t FAILED (the input is under tools/fuzz/artifacts/$t/)" >&2
    failed=1
  fi
done
[ "$failed" = 0 ] || exit 1
echo "fuzz-smoke: all ${#targets[@]} targets passed in $((SECONDS - started)) s"
