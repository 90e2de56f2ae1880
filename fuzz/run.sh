#!/usr/bin/env bash
# Runs the fuzz targets for a bounded time each and fails on the first crash,
# leak of a panic, timeout or out-of-memory. See README.md.
#
#   fuzz/run.sh [--seconds N] [--corpus-dir DIR] [target...]
#
# Every target by default (`cargo fuzz list`), 30 s each. The committed seeds
# (fuzz/seeds/<target>) are read, never written: what a run grows goes to
# DIR/<target> (default: a temporary directory, removed afterwards), so the
# corpus is never committed. A crashing input is kept in
# fuzz/artifacts/<target>/ (git-ignored) and its path printed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

seconds=30
corpus_dir=""
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --corpus-dir) corpus_dir="$(realpath -m "$2")"; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) targets+=("$1"); shift ;;
    esac
done
cd "$here"

# cargo fuzz needs nightly flags (-Z sanitizer, -C passes); this lets the
# stable toolchain accept them instead of installing a nightly.
export RUSTC_BOOTSTRAP=1

# libFuzzer itself is C++ (built by libfuzzer-sys).
if ! command -v c++ >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq g++ >/dev/null
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi

cleanup=""
if [ -z "$corpus_dir" ]; then
    corpus_dir="$(mktemp -d)"
    cleanup="$corpus_dir"
fi
trap 'if [ -n "$cleanup" ]; then rm -rf "$cleanup"; fi' EXIT

# No sanitizer: the parsers are safe Rust, so ASan finds nothing the Rust
# checks do not; what we hunt is panics, overflows (debug assertions on) and
# wrong answers (the targets' assertions). README.md has the reasoning.
build_flags=(--sanitizer none --debug-assertions --release)

start=$(date +%s)
# One build for all targets: they share every dependency.
cargo fuzz build "${build_flags[@]}"
echo "fuzz: build took $(( $(date +%s) - start )) s"

failed=()
for t in "${targets[@]}"; do
    mkdir -p "$corpus_dir/$t" "artifacts/$t"
    echo "fuzz: $t for ${seconds} s"
    # -timeout: an input taking longer is a failure (a hang); -rss_limit_mb:
    # so is growing past it; -max_len fits a 16 KiB ClientHello.
    set +e
    cargo fuzz run "${build_flags[@]}" "$t" "$corpus_dir/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -max_len=20000 \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"$corpus_dir/$t.log" 2>&1
    rc=$?
    set -e
    # The coverage lines and final stats; everything when it failed.
    if [ $rc -ne 0 ]; then
        tail -n 60 "$corpus_dir/$t.log"
        failed+=("$t")
    else
        grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::' "$corpus_dir/$t.log" || true
    fi
done
echo "fuzz: all done in $(( $(date +%s) - start )) s"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
