#!/usr/bin/env bash
# scripts/run-example.sh: build mod_wsgi-rs and serve the example Flask app
# (examples/flask_app) through a standalone Apache httpd on 127.0.0.1.
#
#   scripts/run-example.sh          install missing packages (scripts/deps.sh), build the
#                                   module (cargo build --release), set up and start Apache,
#                                   wait until it answers, print the URL and the log paths
#   scripts/run-example.sh stop     stop that Apache (SIGTERM to its pid) and wait for it to exit (up to 30 s)
#
# Environment:
#   PORT=8080            the port on 127.0.0.1 to listen on (default 8080); must be free
#   WSGI_MODULE_SO=path  load this module instead of building target/release/libmod_wsgi.so,
#                        e.g. Debian's C mod_wsgi: /usr/lib/apache2/modules/mod_wsgi.so
#
# Everything Apache reads lives in /tmp/mod-wsgi-rs-example (Apache's children run as
# www-data, which cannot read a repository under /root): a copy of the app, its virtualenv,
# a copy of the module, the generated httpd.conf, the logs and the pid file. This uses its
# own config only: it never touches Debian's apache2 service or port 80.
set -euo pipefail
umask 022

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN_DIR=/tmp/mod-wsgi-rs-example
PORT=${PORT:-8080}
APACHE=/usr/sbin/apache2
APACHE_MODULES=/usr/lib/apache2/modules
PYTHON=/usr/bin/python3.11 # Debian's Python, never whatever `python3` is on PATH

CONF=$RUN_DIR/conf/httpd.conf
PID_FILE=$RUN_DIR/run/httpd.pid
ERROR_LOG=$RUN_DIR/logs/error.log
ACCESS_LOG=$RUN_DIR/logs/access.log
VENV=$RUN_DIR/venv
MODULE=$RUN_DIR/mod_wsgi.so

log() { echo "run-example: $*"; }
die() {
    echo "run-example: error: $*" >&2
    exit 1
}

# Apache gets a clean, predictable environment (no PYTHONPATH/PYTHONHOME or pyenv leaking in).
apache() {
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        "$APACHE" "$@"
}

# Prints the pid of the example Apache if it is running (checked against its command line).
running_pid() {
    [[ -f $PID_FILE ]] || return 1
    local pid
    pid=$(<"$PID_FILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$CONF" || return 1
    echo "$pid"
}

stop_server() {
    local pid
    if ! pid=$(running_pid); then
        log "no example server is running"
        return 0
    fi
    log "stopping the example server (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    die "the example server (pid $pid) did not stop within 30 s"
}

print_error_log() {
    if [[ -s $ERROR_LOG ]]; then
        echo "---- last lines of $ERROR_LOG ----" >&2
        tail -n 30 "$ERROR_LOG" >&2
        echo "----" >&2
    fi
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

# 1. Dependencies and the module.
"$REPO/scripts/deps.sh"

if [[ -n ${WSGI_MODULE_SO:-} ]]; then
    [[ -f $WSGI_MODULE_SO ]] || die "WSGI_MODULE_SO=$WSGI_MODULE_SO: no such file"
    module_src=$WSGI_MODULE_SO
    log "using the module $module_src (WSGI_MODULE_SO), not building"
else
    log "building the module: cargo build --release"
    (cd "$REPO" && cargo build --release)
    target_dir=${CARGO_TARGET_DIR:-target}
    [[ $target_dir == /* ]] || target_dir=$REPO/$target_dir
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

# 3. The runtime folder, readable by www-data.
if [[ -L $RUN_DIR || (-e $RUN_DIR && ! -O $RUN_DIR) ]]; then
    die "$RUN_DIR exists but is not a directory owned by $(id -un); remove it first"
fi
mkdir -p "$RUN_DIR"/{conf,logs,run,lock,htdocs}
chmod 755 "$RUN_DIR"

rm -rf "$RUN_DIR/app"
cp -R "$REPO/examples/flask_app" "$RUN_DIR/app"
find "$RUN_DIR/app" -name __pycache__ -prune -exec rm -rf {} +
cp "$REPO/apache-conf/example-site.conf" "$RUN_DIR/conf/example-site.conf"
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

# 4. A complete, minimal standalone httpd.conf.
user_lines="# Not started as root: the children run as $(id -un)."
if [[ $(id -u) -eq 0 ]]; then
    id www-data >/dev/null 2>&1 || die "user www-data does not exist"
    user_lines=$'User www-data\nGroup www-data'
fi
cat >"$CONF" <<EOF
# Generated by scripts/run-example.sh: a standalone Apache serving examples/flask_app
# through mod_wsgi. Not Debian's apache2 configuration, which it does not use.
ServerRoot $RUN_DIR
ServerName 127.0.0.1
Listen 127.0.0.1:$PORT
PidFile $PID_FILE
DefaultRuntimeDir $RUN_DIR/run
Mutex file:$RUN_DIR/lock default
ErrorLog $ERROR_LOG
LogLevel warn
LogFormat "%h %l %u %t \"%r\" %>s %b %D" timed
CustomLog $ACCESS_LOG timed
$user_lines

LoadModule mpm_event_module $APACHE_MODULES/mod_mpm_event.so
LoadModule authz_core_module $APACHE_MODULES/mod_authz_core.so
LoadModule authn_core_module $APACHE_MODULES/mod_authn_core.so
LoadModule mime_module $APACHE_MODULES/mod_mime.so
LoadModule alias_module $APACHE_MODULES/mod_alias.so
LoadModule env_module $APACHE_MODULES/mod_env.so
LoadModule setenvif_module $APACHE_MODULES/mod_setenvif.so
LoadModule dir_module $APACHE_MODULES/mod_dir.so

# Small: one or two children, each with its own embedded Python.
StartServers 1
ServerLimit 2
ThreadsPerChild 16
MaxRequestWorkers 32
MinSpareThreads 8
MaxSpareThreads 32

TypesConfig /etc/mime.types
DocumentRoot $RUN_DIR/htdocs
<Directory />
    AllowOverride None
    Require all denied
</Directory>

LoadModule wsgi_module $MODULE

Define EXAMPLE_DIR $RUN_DIR
Define EXAMPLE_VENV $VENV
# A copy of apache-conf/example-site.conf from the repository.
Include $RUN_DIR/conf/example-site.conf
EOF

# 5. Check the config, start Apache, wait until it answers.
if ! check_out=$(apache -t -f "$CONF" 2>&1); then
    echo "$check_out" >&2
    die "apache2 -t rejected $CONF"
fi

: >"$ERROR_LOG"
rm -f "$PID_FILE" # stale, from a server that died (a running one was stopped above)
log "starting Apache: $APACHE -f $CONF -k start"
if ! apache -f "$CONF" -k start; then
    print_error_log
    die "Apache did not start"
fi

url=http://127.0.0.1:$PORT/
code=000
for _ in $(seq 40); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)
    [[ $code != 000 ]] && break
    if [[ -f $PID_FILE ]] && ! running_pid >/dev/null; then
        break # Apache started and then exited
    fi
    sleep 0.5
done
if [[ $code == 000 ]]; then
    print_error_log
    stop_server >/dev/null || true
    die "Apache did not answer on $url within 20 s"
fi
if [[ $code != 200 ]]; then
    print_error_log
    stop_server
    die "Apache answered $url with HTTP $code instead of 200 (server stopped)"
fi

echo
echo "The example Flask app is served by Apache + $(basename "$module_src") at:"
echo "  $url          (JSON: ${url}json)"
echo "  /json says:   $(curl -s --max-time 5 "${url}json" || true)"
echo "  error log:    $ERROR_LOG"
echo "  access log:   $ACCESS_LOG"
echo "  config:       $CONF"
echo "  stop it with: $0 stop"
