#!/usr/bin/env bash
# Builds ctr's libFuzzer target (the template path sanitizer) with the
# stable toolchain and runs it for a bounded time. Same method as
# scripts/fuzz-guestconf.sh; see docs/guestconf.md for why stable works.
#
#   scripts/fuzz-ctr.sh [SECONDS]     (default 30)
#
# Exits non-zero if the fuzzer finds a crash, after printing the input.
set -euo pipefail

seconds="${1:-30}"
case "$seconds" in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz_dir="$root/ctr/fuzz"
target_triple="$(rustc -vV | sed -n 's/^host: //p')"
fuzz_target=ctr_path

export RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing -Cdebug-assertions -Coverflow-checks"
cargo build --release --quiet \
    --manifest-path "$fuzz_dir/Cargo.toml" \
    --target "$target_triple" \
    --bin "$fuzz_target"

binary="$fuzz_dir/target/$target_triple/release/$fuzz_target"
corpus="$fuzz_dir/corpus/$fuzz_target"
artifacts="$fuzz_dir/artifacts/$fuzz_target"
mkdir -p "$corpus" "$artifacts"
rm -f "$artifacts"/crash-* "$artifacts"/leak-* "$artifacts"/timeout-* "$artifacts"/oom-*

status=0
"$binary" \
    -max_total_time="$seconds" \
    -max_len=8192 \
    -timeout=10 \
    -print_final_stats=1 \
    -artifact_prefix="$artifacts/" \
    "$corpus" "$fuzz_dir/seeds/$fuzz_target" || status=$?

if [ "$status" -ne 0 ]; then
    for input in "$artifacts"/*; do
        [ -f "$input" ] || continue
        echo "=== fuzzer input that failed: $input"
        od -A d -c "$input"
        echo "=== base64: $(base64 -w0 "$input")"
        echo "=== reproduce: $binary $input"
    done
    exit "$status"
fi
echo "fuzz-ctr: no failures in ${seconds}s"
