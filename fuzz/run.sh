#!/usr/bin/env bash
# Builds the fuzz targets and runs each for a given time, then prints one
# table: target, seconds, executions, findings. Exits non-zero when any run
# found something (a crash, a leak, a timeout, an out-of-memory) or failed
# to run, so CI turns a finding into a failing step.
#
#   bash fuzz/run.sh [SECONDS] [TARGET...]     # default: 60 s, every target
#
# Knobs (environment):
#   JOBS=N          targets run at once (default 1; the machine has 2 cores)
#   SANITIZER=S     address (default) | none  -- see README.md for why ASan
#   NICE=N          niceness of the build and the runs (default 0)
#   FUZZ_ARGS=...   extra libFuzzer flags for every run
#
# Each target keeps its corpus in fuzz/corpus/TARGET (not committed) and
# starts from fuzz/seeds/TARGET; findings land in fuzz/artifacts/TARGET,
# the libFuzzer output of the last run in fuzz/target/runs/TARGET.log.
# Replay a finding with: fuzz/target/x86_64-unknown-linux-gnu/release/TARGET FILE
set -euo pipefail
cd "$(dirname "$0")"

SECS=${1:-60}
[[ $# -gt 0 ]] && shift
[[ $SECS =~ ^[0-9]+$ && $SECS -gt 0 ]] || { echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2; }
JOBS=${JOBS:-1}
SANITIZER=${SANITIZER:-address}
NICE=${NICE:-0}
FUZZ_ARGS=${FUZZ_ARGS:-}
TRIPLE=x86_64-unknown-linux-gnu
BIN_DIR=target/$TRIPLE/release
LOG_DIR=target/runs

# cargo-fuzz drives nightly-only rustc flags (-Zsanitizer, sancov passes);
# the project's toolchain is stable 1.95, which allows them with this.
export RUSTC_BOOTSTRAP=1

command -v cargo-fuzz >/dev/null || {
    echo "cargo-fuzz is missing: cargo install cargo-fuzz --version 0.13.2 --locked" >&2
    exit 2
}

mapfile -t ALL < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^portcullis-fuzz$')
if [[ $# -gt 0 ]]; then
    TARGETS=("$@")
    for t in "${TARGETS[@]}"; do
        printf '%s\n' "${ALL[@]}" | grep -qx "$t" || { echo "unknown target $t (have: ${ALL[*]})" >&2; exit 2; }
    done
else
    TARGETS=("${ALL[@]}")
fi

# The committed Cargo.lock pins the versions (the workspace's own, plus
# libfuzzer-sys). Not --locked: when a workspace crate gains a dependency,
# cargo adds just that one to the lock (rust-version 1.95 picks versions
# this toolchain builds) and keeps every pinned version; commit the change.
echo "== building ${#TARGETS[@]} fuzz target(s) (sanitizer: $SANITIZER)" >&2
# Default cargo-fuzz profile: optimised, with debug assertions and overflow
# checks on, so an arithmetic overflow is a finding too.
build=(nice -n "$NICE" cargo fuzz build --sanitizer "$SANITIZER")
if [[ ${#TARGETS[@]} -eq ${#ALL[@]} ]]; then
    "${build[@]}"
else
    for t in "${TARGETS[@]}"; do "${build[@]}" "$t"; done
fi

mkdir -p "$LOG_DIR"

# extra_args TARGET: the dictionary of a target; extra_seeds: more seed dirs.
extra_args() {
    case $1 in
        session | dsn) echo "-dict=session.dict" ;;
        config) echo "-dict=config.dict" ;;
    esac
}
extra_seeds() {
    # The shipped configs are the best seeds of the config loader.
    [[ $1 == config ]] && echo "../config"
    return 0
}

findings_of() { # findings_of TARGET: number of finding files in artifacts/
    find "artifacts/$1" -maxdepth 1 -type f \
        \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) 2>/dev/null | wc -l
}

run_one() { # run_one TARGET: runs it and writes LOG_DIR/TARGET.result
    local t=$1 log=$LOG_DIR/$1.log before after rc=0 execs start
    mkdir -p "corpus/$t" "artifacts/$t"
    before=$(findings_of "$t")
    start=$(date +%s)
    # shellcheck disable=SC2046,SC2086 # word splitting of the flag lists is meant
    nice -n "$NICE" "$BIN_DIR/$t" "corpus/$t" "seeds/$t" $(extra_seeds "$t") \
        -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" $(extra_args "$t") $FUZZ_ARGS >"$log" 2>&1 || rc=$?
    after=$(findings_of "$t")
    execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    if [[ -z $execs ]]; then
        # Stopped by a finding: the last status line has the count.
        execs=$(grep -o '^#[0-9]*' "$log" | tail -n 1 | tr -d '#')
    fi
    # Seconds actually run: a finding stops the run early.
    echo "$t $(($(date +%s) - start)) ${execs:-0} $((after - before)) $rc" >"$LOG_DIR/$t.result"
}

echo "== running each for ${SECS}s, $JOBS at a time" >&2
running=0
for t in "${TARGETS[@]}"; do
    rm -f "$LOG_DIR/$t.result"
    echo "   $t" >&2
    run_one "$t" &
    running=$((running + 1))
    if ((running >= JOBS)); then
        wait -n || true
        running=$((running - 1))
    fi
done
wait

status=0
passed=0
failed=0
printf '\n%-14s %8s %14s %9s\n' target seconds executions findings
for t in "${TARGETS[@]}"; do
    if [[ ! -s $LOG_DIR/$t.result ]]; then
        printf '%-14s %8s %14s %9s\n' "$t" "$SECS" "?" "did not run"
        status=1
        failed=$((failed + 1))
        continue
    fi
    read -r name secs execs found rc <"$LOG_DIR/$t.result"
    printf '%-14s %8s %14s %9s\n' "$name" "$secs" "$execs" "$found"
    if ((found > 0 || rc != 0)); then
        status=1
        failed=$((failed + 1))
        echo "--- $t: exit $rc, $found finding(s); last lines of $LOG_DIR/$t.log:" >&2
        tail -n 40 "$LOG_DIR/$t.log" >&2
        ls -1 "artifacts/$t" >&2
    else
        passed=$((passed + 1))
    fi
done
# One closing line in the form test runners use (a target passes when its
# run ended without a finding).
echo "fuzz: $passed passed, $failed failed"
exit "$status"
