#!/usr/bin/env bash
# Clean release builds, timed, with their artefact sizes: the core alone against the full build.
#   bash benches/build/sizes.sh            # this tree: core only, then the default set
#   bash benches/build/sizes.sh REF        # also a full build of git REF first (e.g. the commit
#                                          # before the crate was split into features), for a
#                                          # side-by-side run on the same machine
# Every build starts from an empty target directory (the registry's downloads are kept), one
# after the other, so nothing else should run meanwhile.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=$(pwd)
work=$(mktemp -d)
trap 'git -C "$here" worktree remove --force "$work/ref" 2>/dev/null || true; rm -rf "$work"' EXIT
row() { printf '| %s | %s s | %s | %s |\n' "$1" "$2" "$3" "$4"; }
# Size of a binary as shipped: a stripped copy (the release profile keeps line tables).
size() {
    [ -e "$1" ] || { echo "—"; return; }
    cp "$1" "$work/stripped" && strip "$work/stripped" 2>/dev/null || true
    numfmt --to=iec --suffix=B "$(stat -c %s "$work/stripped")"
}
crates() { cargo tree "$@" -e normal --prefix none 2>/dev/null | sed 's/ (\*)//' | sort -u | wc -l; }
timed() { local start=$SECONDS; "$@" >/dev/null 2>&1; echo $((SECONDS - start)); }
echo "| build | wall time | stripped binaries | crates compiled (normal deps) |"
echo "|---|---|---|---|"
if [ $# -ge 1 ]; then
    git worktree add --detach "$work/ref" "$1" >/dev/null 2>&1
    t=$(cd "$work/ref" && CARGO_TARGET_DIR="$work/t-ref" timed cargo build --release --locked --bins --examples)
    n=$(cd "$work/ref" && crates)
    row "$1: cargo build --release (vigil + examples)" "$t" \
        "vigil $(size "$work/t-ref/release/vigil"), embed example $(size "$work/t-ref/release/examples/embed")" "$n"
fi
t=$(CARGO_TARGET_DIR="$work/t-core" timed cargo build --release --locked --no-default-features --lib --example embed)
row "core: cargo build --release --no-default-features (lib + embed example)" "$t" \
    "embed example $(size "$work/t-core/release/examples/embed")" \
    "$(crates --no-default-features)"
t=$(CARGO_TARGET_DIR="$work/t-full" timed cargo build --release --locked --bins --examples)
row "default: cargo build --release (vigil + examples)" "$t" \
    "vigil $(size "$work/t-full/release/vigil"), embed example $(size "$work/t-full/release/examples/embed")" "$(crates)"
