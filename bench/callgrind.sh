#!/usr/bin/env bash
# bench/callgrind.sh: instructions per hello-world request under valgrind's callgrind, for
# this module or Debian's C mod_wsgi, in embedded or daemon mode (docs/performance.md, "Third
# pass"). Instruction counts do not depend on the machine's load, unlike requests per second.
#
#   bench/callgrind.sh [--module PATH] [--mode embedded|daemon] [--requests N] [--keep]
#
# --module  the .so to load (default: target/release/libmod_wsgi.so; Debian's C module is
#           /usr/lib/apache2/modules/mod_wsgi.so)
# --mode    embedded (default) or daemon (WSGIDaemonProcess processes=1 threads=2)
# --requests N  keep-alive requests of the measured run (default 1000)
# --keep    keep the run folders (callgrind.out.<pid> files, for callgrind_annotate)
#
# Apache runs as `apache2 -X` (event MPM, one process of 4 threads) under callgrind, started
# as www-data so that the output files, which callgrind creates at start, stay writable (and
# the daemon, forked from it, is profiled too). Everything each process executes is counted,
# in a run of N requests and a run of 2N; the difference divided by N is the cost of one
# request, start-up and shutdown cancelling out. `callgrind_control` is not used: it waits
# until the process runs guest code, and an idle Apache thread sits in poll().
# Takes well under a minute in all. Needs valgrind (installed if missing).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
module=$REPO/target/release/libmod_wsgi.so
mode=embedded
requests=1000
keep=0
while [ $# -gt 0 ]; do
    case $1 in
        --module) module=$(realpath "$2"); shift 2 ;;
        --mode) mode=$2; shift 2 ;;
        --requests) requests=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        *) echo "usage: $0 [--module PATH] [--mode embedded|daemon] [--requests N] [--keep]" >&2
           exit 2 ;;
    esac
done
case $mode in embedded|daemon) ;; *) echo "--mode: embedded or daemon" >&2; exit 2 ;; esac
if [ ! -f "$module" ]; then
    echo "no module at $module (cargo build --release first)" >&2
    exit 1
fi
command -v valgrind >/dev/null || apt-get install -y valgrind >/dev/null
M=/usr/lib/apache2/modules

free_port() {
    /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# One profiled run of `$1` requests; prints "<apache Ir> <daemon Ir>" (0 when embedded).
run() {
    local n=$1 dir port
    dir=$(mktemp -d /tmp/mod-wsgi-rs-callgrind.XXXXXX)
    chmod 755 "$dir"
    cp "$REPO/bench/apps/app.py" "$dir/app.py"
    port=$(free_port)
    {
        echo "ServerRoot \"$dir\""
        echo "ServerName 127.0.0.1"
        echo "Listen 127.0.0.1:$port"
        echo "PidFile \"$dir/httpd.pid\""
        echo "DefaultRuntimeDir \"$dir\""
        echo "Mutex file:$dir default"
        echo "ErrorLog \"$dir/error.log\""
        echo "LogLevel warn"
        echo "KeepAlive On"
        echo "MaxKeepAliveRequests 0"
        echo "LoadModule mpm_event_module $M/mod_mpm_event.so"
        echo "StartServers 1"
        echo "ServerLimit 1"
        echo "ThreadsPerChild 4"
        echo "ThreadLimit 4"
        echo "MaxRequestWorkers 4"
        echo "LoadModule authz_core_module $M/mod_authz_core.so"
        echo "<Directory />"
        echo "    Require all granted"
        echo "</Directory>"
        echo "LoadModule wsgi_module \"$module\""
        echo "WSGISocketPrefix \"$dir/wsgi\""
        if [ "$mode" = daemon ]; then
            echo "WSGIDaemonProcess bench processes=1 threads=2"
            echo "WSGIScriptAlias / \"$dir/app.py\" process-group=bench application-group=%{GLOBAL}"
        else
            echo "WSGIScriptAlias / \"$dir/app.py\" application-group=%{GLOBAL}"
        fi
    } >"$dir/httpd.conf"
    chown -R www-data "$dir"
    runuser -u www-data -- valgrind --tool=callgrind --dump-instr=no \
        --callgrind-out-file="$dir/callgrind.out.%p" \
        /usr/sbin/apache2 -X -f "$dir/httpd.conf" >"$dir/valgrind.log" 2>&1 &
    local vg=$!
    local up=0
    for _ in $(seq 240); do
        if curl -sf -m 5 "http://127.0.0.1:$port/hello" >/dev/null; then up=1; break; fi
        sleep 0.5
    done
    if [ $up = 0 ]; then
        echo "Apache did not start under valgrind; see $dir" >&2
        kill "$vg" 2>/dev/null || true
        exit 1
    fi
    /usr/bin/python3 - "$port" "$n" <<'PY'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=120)
for _ in range(int(sys.argv[2])):
    c.request("GET", "/hello")
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
PY
    local apache_pid
    apache_pid=$(cat "$dir/httpd.pid")
    kill "$apache_pid"
    wait "$vg" || true
    sleep 2
    # The Apache process is the one of the pid file; the daemon (forked from it) the other.
    local counts=(0 0) f ir
    for f in "$dir"/callgrind.out.*; do
        ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$f")
        if [ "${f##*.}" = "$apache_pid" ]; then counts[0]=$ir; else counts[1]=$ir; fi
    done
    echo "${counts[0]} ${counts[1]}"
    if [ $keep = 1 ]; then echo "kept: $dir" >&2; else rm -rf "$dir"; fi
}

read -r a1 d1 < <(run "$requests")
read -r a2 d2 < <(run $((2 * requests)))
echo "module: $module ($mode mode), $requests and $((2 * requests)) requests"
echo "instructions per request, Apache process: $(((a2 - a1) / requests))"
if [ "$mode" = daemon ]; then
    echo "instructions per request, daemon process: $(((d2 - d1) / requests))"
fi
