#!/usr/bin/env bash
# Builds guestconf's libFuzzer target with the stable toolchain and runs it
# for a bounded time.
#
#   scripts/fuzz-guestconf.sh [SECONDS]     (default 60)
#
# Exits non-zero if the fuzzer finds a crash, after printing the input.
# cargo-fuzz needs nightly only for its -Zsanitizer flags; the coverage
# instrumentation libFuzzer needs is plain LLVM passes that stable rustc
# accepts through -C passes / -C llvm-args, so we set those ourselves and
# run without a sanitizer (safe Rust needs none to find panics).
set -euo pipefail

seconds="${1:-60}"
case "$seconds" in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz_dir="$root/guestconf/fuzz"
target_triple="$(rustc -vV | sed -n 's/^host: //p')"
fuzz_target=guestconf_text

# Naming --target keeps RUSTFLAGS away from build scripts, which must not be
# instrumented.
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

# New inputs go to the first corpus directory; the examples and seeds are
# read only.
status=0
"$binary" \
    -max_total_time="$seconds" \
    -max_len=8192 \
    -timeout=10 \
    -print_final_stats=1 \
    -artifact_prefix="$artifacts/" \
    "$corpus" "$root/guestconf/tests/examples" "$fuzz_dir/seeds" || status=$?

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
echo "fuzz-guestconf: no failures in ${seconds}s"
