#!/usr/bin/env bash
# scripts/test.sh: run every check and test of mod_wsgi-rs, from any directory.
#
#   1. scripts/deps.sh --bench               install missing Debian packages (incl. wrk and
#                                            the C mod_wsgi, for the benchmark smoke test)
#   2. cargo fmt --all -- --check            formatting
#   3. cargo clippy --all-targets -- -D warnings
#   4. cargo build                           the tests load target/debug/libmod_wsgi.so
#   5. cargo test --all-targets -- --test-threads=2
#
# Stops at the first failing step and exits non-zero, naming the step.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

step() {
    local name=$1
    shift
    echo
    echo "==== test.sh: $name: $*"
    local start=$SECONDS
    if ! "$@"; then
        echo "==== test.sh: FAILED at step '$name' ($*)" >&2
        exit 1
    fi
    echo "==== test.sh: $name: ok ($((SECONDS - start)) s)"
}

step deps ./scripts/deps.sh --bench
step fmt cargo fmt --all -- --check
step clippy cargo clippy --all-targets -- -D warnings
step build cargo build
step test cargo test --all-targets -- --test-threads=2

echo
echo "==== test.sh: all steps passed"
