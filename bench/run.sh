#!/usr/bin/env bash
# bench/run.sh: the one command of the benchmark suite (see docs/performance.md).
#
#   bench/run.sh [run.py options]      e.g. bench/run.sh --duration 5 --rounds 3
#
# 1. installs the Debian packages it needs (./scripts/deps.sh --bench: wrk, the C mod_wsgi);
# 2. builds the module (cargo build --release -> target/release/libmod_wsgi.so);
# 3. makes the benchmark virtualenv from bench/requirements.txt (pinned gunicorn, granian,
#    Flask), with /usr/bin/python3.11, under /tmp/mod-wsgi-rs-bench (world-readable, since
#    Apache's children run as www-data); it is reused while requirements.txt is unchanged;
# 4. runs the driver, /usr/bin/python3.11 bench/run.py, which writes bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh --bench
cargo build --release

BENCH_ROOT=/tmp/mod-wsgi-rs-bench
hash=$(sha256sum bench/requirements.txt | cut -c1-12)
venv="$BENCH_ROOT/venv-$hash"
if [[ ! -x "$venv/bin/gunicorn" || ! -f "$venv/.complete" ]]; then
    mkdir -p "$BENCH_ROOT"
    chmod 755 "$BENCH_ROOT"
    rm -rf "$venv"
    /usr/bin/python3.11 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r bench/requirements.txt \
        || { echo "bench: installing bench/requirements.txt failed; retrying without granian" >&2
             grep -v '^granian' bench/requirements.txt > "$BENCH_ROOT/requirements-nogranian.txt"
             "$venv/bin/pip" install --quiet --disable-pip-version-check \
                 -r "$BENCH_ROOT/requirements-nogranian.txt"; }
    chmod -R a+rX "$venv"
    touch "$venv/.complete"
fi

exec /usr/bin/python3.11 bench/run.py --venv "$venv" "$@"
