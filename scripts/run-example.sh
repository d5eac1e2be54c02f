#!/usr/bin/env bash
# scripts/run-example.sh: build mod_wsgi-rs and serve the example Flask app
# (examples/flask_app) with `mod_wsgi-express start-server` on 127.0.0.1.
#
#   scripts/run-example.sh          install missing packages (scripts/deps.sh), build the
#                                   module and mod_wsgi-express (cargo build --release), make
#                                   the app's virtualenv, start mod_wsgi-express in the
#                                   background, wait until it answers, print the URL and logs
#   scripts/run-example.sh stop     stop it (SIGTERM to mod_wsgi-express, which stops Apache
#                                   and its daemon processes) and wait for it to exit (30 s)
#
# Environment:
#   PORT=8080            the port on 127.0.0.1 to listen on (default 8080); must be free
#   WSGI_MODULE_SO=path  load this module instead of target/release/libmod_wsgi.so, e.g.
#                        Debian's C mod_wsgi: /usr/lib/apache2/modules/mod_wsgi.so
#                        (mod_wsgi-express itself is still built)
#
# Everything Apache reads lives in /tmp/mod-wsgi-rs-example (Apache's children run as
# www-data, which cannot read a repository under /root): a copy of the app, its virtualenv,
# a copy of the module, and the server root mod_wsgi-express writes (server/: httpd.conf,
# apachectl, logs/). This uses its own configuration only: it never touches Debian's apache2
# service or port 80.
set -euo pipefail
umask 022

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN_DIR=/tmp/mod-wsgi-rs-example
PORT=${PORT:-8080}
PYTHON=/usr/bin/python3.11 # Debian's Python, never whatever `python3` is on PATH

SERVER_ROOT=$RUN_DIR/server
PID_FILE=$RUN_DIR/express.pid
EXPRESS_LOG=$RUN_DIR/express.log
ERROR_LOG=$SERVER_ROOT/logs/error_log
ACCESS_LOG=$SERVER_ROOT/logs/access_log
VENV=$RUN_DIR/venv
MODULE=$RUN_DIR/mod_wsgi.so

log() { echo "run-example: $*"; }
die() {
    echo "run-example: error: $*" >&2
    exit 1
}

# Prints the pid of the example's mod_wsgi-express if it is running (checked against its
# command line, so that a recycled pid is never signalled).
running_pid() {
    [[ -f $PID_FILE ]] || return 1
    local pid
    pid=$(<"$PID_FILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    local cmdline
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *mod_wsgi-express*start-server* && $cmdline == *"$SERVER_ROOT"* ]] || return 1
    echo "$pid"
}

stop_server() {
    local pid
    if ! pid=$(running_pid); then
        log "no example server is running"
        rm -f "$PID_FILE"
        return 0
    fi
    log "stopping the example server (mod_wsgi-express, pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 150); do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PID_FILE"
            return 0
        fi
        sleep 0.2
    done
    die "the example server (pid $pid) did not stop within 30 s"
}

print_logs() {
    local file
    for file in "$EXPRESS_LOG" "$ERROR_LOG"; do
        if [[ -s $file ]]; then
            echo "---- last lines of $file ----" >&2
            tail -n 30 "$file" >&2
        fi
    done
    echo "----" >&2
}

case "${1:-start}" in
stop)
    stop_server
    exit 0
    ;;
start) ;;
*)
    echo "usage: $0 [start|stop]" >&2
    exit 2
    ;;
esac

if ! [[ $PORT =~ ^[1-9][0-9]{0,4}$ ]] || ((PORT > 65535)); then
    die "PORT must be a port number, not '$PORT'"
fi

# 1. Dependencies, the module and mod_wsgi-express.
"$REPO/scripts/deps.sh"

log "building the module and mod_wsgi-express: cargo build --release"
(cd "$REPO" && cargo build --release)
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir=$REPO/$target_dir
EXPRESS=$target_dir/release/mod_wsgi-express
[[ -x $EXPRESS ]] || die "the build did not produce $EXPRESS"
if [[ -n ${WSGI_MODULE_SO:-} ]]; then
    [[ -f $WSGI_MODULE_SO ]] || die "WSGI_MODULE_SO=$WSGI_MODULE_SO: no such file"
    module_src=$WSGI_MODULE_SO
    log "using the module $module_src (WSGI_MODULE_SO)"
else
    module_src=$target_dir/release/libmod_wsgi.so
    [[ -f $module_src ]] || die "the build did not produce $module_src"
fi

# 2. A previous run of this example is replaced; anything else on the port is an error.
if running_pid >/dev/null; then
    stop_server
fi
# Something already accepts connections on the port? ($1 expands in the inner bash.)
# shellcheck disable=SC2016
if timeout 2 bash -c ': <>"/dev/tcp/127.0.0.1/$1"' _ "$PORT" 2>/dev/null; then
    die "port $PORT on 127.0.0.1 is already in use; choose another one, e.g. PORT=$((PORT == 65535 ? 8081 : PORT + 1)) $0"
fi

# 3. The runtime folder, readable by www-data: the app, the module, the virtualenv.
if [[ -L $RUN_DIR || (-e $RUN_DIR && ! -O $RUN_DIR) ]]; then
    die "$RUN_DIR exists but is not a directory owned by $(id -un); remove it first"
fi
mkdir -p "$RUN_DIR"
chmod 755 "$RUN_DIR"

rm -rf "$RUN_DIR/app"
cp -R "$REPO/examples/flask_app" "$RUN_DIR/app"
find "$RUN_DIR/app" -name __pycache__ -prune -exec rm -rf {} +
install -m 0755 "$module_src" "$MODULE"

# The virtualenv: made once with Debian's Python 3.11, reinstalled when requirements change.
if [[ ! -x $VENV/bin/python ]] || ! grep -qx 'home = /usr/bin' "$VENV/pyvenv.cfg" 2>/dev/null; then
    log "creating the virtualenv $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi
if ! cmp -s "$RUN_DIR/app/requirements.txt" "$VENV/.requirements.txt"; then
    log "installing the app's requirements into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$RUN_DIR/app/requirements.txt"
    cp "$RUN_DIR/app/requirements.txt" "$VENV/.requirements.txt"
fi
chmod -R a+rX "$RUN_DIR"

# 4. mod_wsgi-express, in the background and in a session of its own (so that closing the
# terminal does not signal it); it writes the server root and runs Apache in the foreground.
express_args=(
    start-server "$RUN_DIR/app/app.wsgi"
    --python-home "$VENV"
    --module "$MODULE"
    --host 127.0.0.1
    --port "$PORT"
    --server-root "$SERVER_ROOT"
    --working-directory "$RUN_DIR/app"
    --access-log
)
log "starting: $EXPRESS ${express_args[*]}"
env -u VIRTUAL_ENV -u PYTHONHOME -u PYTHONPATH \
    setsid "$EXPRESS" "${express_args[@]}" </dev/null >"$EXPRESS_LOG" 2>&1 &
echo $! >"$PID_FILE"

url=http://127.0.0.1:$PORT/
code=000
for _ in $(seq 60); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)
    [[ $code != 000 ]] && break
    running_pid >/dev/null || break # mod_wsgi-express exited
    sleep 0.5
done
if [[ $code == 000 ]]; then
    print_logs
    stop_server >/dev/null || true
    die "the example server did not answer on $url within 30 s"
fi
if [[ $code != 200 ]]; then
    print_logs
    stop_server
    die "the example server answered $url with HTTP $code instead of 200 (server stopped)"
fi

echo
echo "The example Flask app is served by mod_wsgi-express + $(basename "$module_src") at:"
echo "  $url          (JSON: ${url}json)"
echo "  /json says:   $(curl -s --max-time 5 "${url}json" || true)"
echo "  error log:    $ERROR_LOG"
echo "  access log:   $ACCESS_LOG"
echo "  config:       $SERVER_ROOT/httpd.conf"
echo "  its output:   $EXPRESS_LOG (pid $(<"$PID_FILE"))"
echo "  stop it with: $0 stop"
