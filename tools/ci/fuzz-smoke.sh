#!/usr/bin/env bash
# Fuzz smoke test: builds every cargo-fuzz target of tools/fuzz (libFuzzer; nightly flags through RUSTC_BOOTSTRAP on
# the stable toolchain) and runs each for FUZZ_SECONDS (default 20) from its committed seed corpus. Fails on the
# first crash, panic or timeout; libFuzzer then prints the input and writes it under tools/fuzz/artifacts/<target>/.
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
  cargo install cargo-fuzz --locked --version 0.13.2
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
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  echo "fuzz-smoke: $t for ${secs} s"
  # -timeout: one input taking over 10 s is a hang; -rss_limit_mb: a runaway allocation is a failure too.
  if ! cargo fuzz run "${flags[@]}" "$t" "$scratch/$t" "tools/fuzz/corpus/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$scratch/$t.log" 2>&1; then
    tail -n 60 "$scratch/$t.log" >&2
    echo "fuzz-smoke: $t FAILED (the input is under tools/fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$t.log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' "$scratch/$t.log" | tail -n 1)
  echo "fuzz-smoke: $t ok: ${runs:-?} executions, ${cov:-cov: ?}"
done
echo "fuzz-smoke: all ${#targets[@]} targets passed in $((SECONDS - started)) s"
