#!/usr/bin/env bash
# Builds the libFuzzer targets of netd/fuzz (the interfaces-file and the
# firewall-file parsers) with the stable toolchain and runs each for a
# bounded time.
#
#   scripts/fuzz-netd.sh [SECONDS]     (per target, default 30)
#
# Exits non-zero if the fuzzer finds a crash, after printing the input.
# How this works on stable rustc: see scripts/fuzz-guestconf.sh and
# docs/guestconf.md.
set -euo pipefail

seconds="${1:-30}"
case "$seconds" in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz_dir="$root/netd/fuzz"
target_triple="$(rustc -vV | sed -n 's/^host: //p')"
targets=(interfaces_text firewall_text)

# Naming --target keeps RUSTFLAGS away from build scripts, which must not be
# instrumented.
export RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing -Cdebug-assertions -Coverflow-checks"
build_args=()
for t in "${targets[@]}"; do build_args+=(--bin "$t"); done
cargo build --release --quiet \
    --manifest-path "$fuzz_dir/Cargo.toml" \
    --target "$target_triple" \
    "${build_args[@]}"

failed=0
for t in "${targets[@]}"; do
    binary="$fuzz_dir/target/$target_triple/release/$t"
    corpus="$fuzz_dir/corpus/$t"
    artifacts="$fuzz_dir/artifacts/$t"
    seeds="$fuzz_dir/seeds/${t%_text}"
    mkdir -p "$corpus" "$artifacts"
    rm -f "$artifacts"/crash-* "$artifacts"/leak-* "$artifacts"/timeout-* "$artifacts"/oom-*
    status=0
    "$binary" \
        -max_total_time="$seconds" \
        -max_len=8192 \
        -timeout=10 \
        -print_final_stats=1 \
        -artifact_prefix="$artifacts/" \
        "$corpus" "$seeds" || status=$?
    if [ "$status" -ne 0 ]; then
        failed=1
        for input in "$artifacts"/*; do
            [ -f "$input" ] || continue
            echo "=== $t: fuzzer input that failed: $input"
            od -A d -c "$input"
            echo "=== base64: $(base64 -w0 "$input")"
            echo "=== reproduce: $binary $input"
        done
    else
        echo "fuzz-netd: $t: no failures in ${seconds}s"
    fi
done
exit "$failed"
