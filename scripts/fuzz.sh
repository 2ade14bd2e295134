#!/usr/bin/env bash
# Fuzzes every target in fuzz/ with libFuzzer (cargo-fuzz, on the nightly toolchain).
#
#   bash scripts/fuzz.sh                  # 10 M inputs per target (hours): for people
#   bash scripts/fuzz.sh --seconds 20     # a short run per target (CI)
#   bash scripts/fuzz.sh --runs 1000000 player api
#
# Needs: the nightly toolchain (`rustup toolchain install nightly`) and cargo-fuzz (installed
# from crates.io here if missing: `cargo install cargo-fuzz --locked`). Builds into
# $TUTTI_FUZZ_TARGET (default ~/.cache/tutti/fuzz-target), corpora in fuzz/corpus/<target>
# (kept between runs), crashes in fuzz/artifacts/<target>. Prints one line per target:
# inputs run, exec/s, coverage; exits non-zero on the first crash, naming the input file.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=10000000
seconds=""
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(decode player link pairing api rtp)

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: the nightly toolchain is missing: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --locked
fi
target_dir=${TUTTI_FUZZ_TARGET:-$HOME/.cache/tutti/fuzz-target}
cargo +nightly fuzz build --target-dir "$target_dir" 2>&1 | tail -1

limit=(-runs="$runs")
[ -n "$seconds" ] && limit=(-max_total_time="$seconds")
for t in "${targets[@]}"; do
    log=$(mktemp)
    if ! cargo +nightly fuzz run --target-dir "$target_dir" "$t" -- "${limit[@]}" \
        -print_final_stats=1 >"$log" 2>&1; then
        echo "fuzz: $t CRASHED:" >&2
        grep -E "panicked|ERROR|SUMMARY|Test unit written|artifact" "$log" | head -20 >&2
        exit 1
    fi
    done_line=$(grep -E "^#[0-9]+\s+DONE" "$log" | tail -1)
    inputs=$(grep -oE "^Done [0-9]+ runs in [0-9]+ second" "$log" | tail -1)
    echo "fuzz: $t: ${inputs:-?} | $(echo "$done_line" | grep -oE 'cov: [0-9]+|exec/s: [0-9]+' | tr '\n' ' ')"
    rm -f "$log"
done
