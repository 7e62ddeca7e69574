#!/usr/bin/env bash
# Builds libFuzzer targets with the stable toolchain and runs each for a
# bounded time.
#
#   scripts/fuzz.sh SECONDS FUZZ_DIR TARGET[=SEEDS[:SEEDS…]] …
#
#   FUZZ_DIR  a fuzz package (guestconf/fuzz, ctr/fuzz, netd/fuzz), relative
#             to the repository's root; its binaries are the targets
#   SEEDS     read-only seed directories for TARGET, relative to the root;
#             new inputs go to FUZZ_DIR/corpus/TARGET
#
# Exits non-zero if a fuzzer finds a failing input, after printing it.
# cargo-fuzz needs nightly only for its -Zsanitizer flags; the coverage
# instrumentation libFuzzer needs is plain LLVM passes that stable rustc
# accepts through -C passes / -C llvm-args, so we set those ourselves and
# run without a sanitizer (safe Rust needs none to find panics).
set -euo pipefail

usage() {
    echo "usage: $0 SECONDS FUZZ_DIR TARGET[=SEEDS[:SEEDS...]]..." >&2
    exit 2
}
[ "$#" -ge 3 ] || usage
seconds="$1"
case "$seconds" in
    '' | *[!0-9]*) usage ;;
esac
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz_dir="$root/$2"
shift 2
[ -f "$fuzz_dir/Cargo.toml" ] || { echo "$fuzz_dir is not a fuzz package" >&2; exit 2; }
target_triple="$(rustc -vV | sed -n 's/^host: //p')"

targets=()
build_args=()
for spec in "$@"; do
    t="${spec%%=*}"
    targets+=("$spec")
    build_args+=(--bin "$t")
done

# Naming --target keeps RUSTFLAGS away from build scripts, which must not be
# instrumented.
export RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# Built under the repository's target/ (one directory for every fuzz
# package: they share most dependencies), so a fresh checkout with a kept
# target/ does not build them again.
export CARGO_TARGET_DIR="$root/target/fuzz"
cargo build --release --quiet \
    --manifest-path "$fuzz_dir/Cargo.toml" \
    --target "$target_triple" \
    "${build_args[@]}"

failed=0
for spec in "${targets[@]}"; do
    t="${spec%%=*}"
    seeds=()
    if [ "$spec" != "$t" ]; then
        IFS=: read -r -a dirs <<<"${spec#*=}"
        for d in "${dirs[@]}"; do seeds+=("$root/$d"); done
    fi
    binary="$CARGO_TARGET_DIR/$target_triple/release/$t"
    corpus="$fuzz_dir/corpus/$t"
    artifacts="$fuzz_dir/artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    rm -f "$artifacts"/crash-* "$artifacts"/leak-* "$artifacts"/timeout-* "$artifacts"/oom-*
    status=0
    "$binary" \
        -max_total_time="$seconds" \
        -max_len=8192 \
        -timeout=10 \
        -print_final_stats=1 \
        -artifact_prefix="$artifacts/" \
        "$corpus" "${seeds[@]}" || status=$?
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
        echo "fuzz: $t: no failures in ${seconds}s"
    fi
done
exit "$failed"
