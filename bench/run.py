#!/usr/bin/python3.11
"""Side-by-side benchmark of mod_wsgi-rs against Debian's C mod_wsgi, gunicorn and granian.

Standard library only. Usually started by ``bench/run.sh`` (which installs the packages,
builds the module and makes the virtualenv); see ``docs/performance.md``.

Every target is started fresh in its own world-readable folder under
``/tmp/mod-wsgi-rs-bench`` and listens on 127.0.0.1 only. Each round starts every target,
then runs each scenario against each target in turn (A B C ... within the scenario, the
order rotated from round to round), then stops every target by pid. Every figure is the
median over the rounds. Load comes from ``wrk --latency``.

``--smoke`` is a quick check (one round, about 1 s per measurement, hello world and the
upload only, this module embedded and daemon and C mod_wsgi embedded, system Python):
``tests/bench_smoke.rs`` runs it.
"""

import argparse
import datetime
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_DIR = os.path.join(REPO, "bench")
BENCH_ROOT = "/tmp/mod-wsgi-rs-bench"
APACHE = "/usr/sbin/apache2"
MODULES_DIR = "/usr/lib/apache2/modules"
C_MODULE = os.path.join(MODULES_DIR, "mod_wsgi.so")
WRK = shutil.which("wrk") or "/usr/bin/wrk"
MIB = 1024 * 1024
UPLOAD_BYTES = 10 * MIB
STOP_GRACE = 12.0
START_TIMEOUT = 40.0

# name, description, path, wrk connections, extra (script / static twin / payload bytes)
SCENARIOS = [
    {"name": "hello-c1", "what": "hello world, 1 connection", "path": "/hello", "conns": 1},
    {"name": "hello-c16", "what": "hello world, 16 connections", "path": "/hello", "conns": 16},
    {"name": "hello-c64", "what": "hello world, 64 connections", "path": "/hello", "conns": 64},
    {
        "name": "stream-1m",
        "what": "1 MiB response yielded in 64 KiB blocks, 4 connections",
        "path": "/stream?size=1048576",
        "static": "/static/1m.bin",
        "conns": 4,
        "payload": MIB,
    },
    {
        "name": "stream-64m",
        "what": "64 MiB response yielded in 64 KiB blocks, 2 connections",
        "path": "/stream?size=67108864",
        "static": "/static/64m.bin",
        "conns": 2,
        "payload": 64 * MIB,
    },
    {
        "name": "file-100m",
        "what": "100 MiB file through wsgi.file_wrapper, 2 connections",
        "path": "/file",
        "static": "/static/100m.bin",
        "conns": 2,
        "payload": 100 * MIB,
    },
    {
        "name": "upload-10m",
        "what": "10 MiB POST read through wsgi.input, 4 connections",
        "path": "/upload",
        "conns": 4,
        "upload": UPLOAD_BYTES,
    },
    {"name": "flask-json", "what": "Flask JSON endpoint, 16 connections", "path": "/flask/json",
     "conns": 16, "flask": True},
]
SMOKE_SCENARIOS = ("hello-c16", "upload-10m")

# name -> (kind, mode, C counterpart, description)
TARGETS = {
    "rs-embedded": ("apache", "embedded", "c-embedded", "this module, embedded mode"),
    "c-embedded": ("apache", "embedded", None, "Debian's C mod_wsgi, embedded mode"),
    "rs-daemon": ("apache", "daemon", "c-daemon", "this module, daemon mode"),
    "c-daemon": ("apache", "daemon", None, "Debian's C mod_wsgi, daemon mode"),
    "gunicorn": ("gunicorn", None, "c-daemon", "gunicorn, gthread worker"),
    "granian": ("granian", None, "c-daemon", "granian --interface wsgi"),
    "apache-static": ("apache", "static", None, "Apache serving the same bytes as static files"),
}
SMOKE_TARGETS = ("rs-embedded", "rs-daemon", "c-embedded")


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_text(cmd, **kwargs):
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, **kwargs)
        return (done.stdout + done.stderr).strip()
    except (OSError, subprocess.SubprocessError) as error:
        return f"unavailable ({error})"


# ---------------------------------------------------------------------------------------------
# Files and folders


def make_world_readable_dir(path):
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o755)


def prepare_data(sizes):
    """The files the apps and the static target serve, made once and kept."""
    data = os.path.join(BENCH_ROOT, "data")
    make_world_readable_dir(BENCH_ROOT)
    make_world_readable_dir(data)
    block = (bytes(range(256)) * 256)[: 64 * 1024]
    for size in sizes:
        path = os.path.join(data, f"{size // MIB}m.bin")
        if not os.path.exists(path) or os.path.getsize(path) != size:
            partial = f"{path}.{os.getpid()}.tmp"
            with open(partial, "wb") as out:
                for _ in range(size // len(block)):
                    out.write(block)
            os.replace(partial, path)
        os.chmod(path, 0o644)
    return data


def prepare_app(run_dir, data_dir):
    app_dir = os.path.join(run_dir, "app")
    make_world_readable_dir(app_dir)
    for name in ("app.py", "flask_app.py"):
        shutil.copy(os.path.join(BENCH_DIR, "apps", name), os.path.join(app_dir, name))
        os.chmod(os.path.join(app_dir, name), 0o644)
    os.symlink(data_dir, os.path.join(app_dir, "data"))
    return app_dir


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# Processes


def children_map():
    result = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        result.setdefault(ppid, []).append(int(entry))
    return result


def process_tree(root):
    kids = children_map()
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(kids.get(pid, []))
    return tree


def read_proc(pid, name):
    try:
        with open(f"/proc/{pid}/{name}", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def rss_kib(pid):
    for line in read_proc(pid, "status").decode(errors="replace").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def alive(pid):
    status = read_proc(pid, "status").decode(errors="replace")
    return bool(status) and "\nState:\tZ" not in status


class Target:
    """One server under test, started fresh in its own folder."""

    def __init__(self, name, args, run_dir, app_dir, data_dir, round_no):
        self.name = name
        self.kind, self.mode, self.counterpart, self.description = TARGETS[name]
        self.args = args
        self.dir = os.path.join(run_dir, f"{name}-r{round_no}")
        self.app_dir = app_dir
        self.data_dir = data_dir
        self.port = None
        self.proc = None
        self.known_pids = set()
        self.startup_s = None

    # Configuration ---------------------------------------------------------------------------

    def apache_conf(self):
        a = self.args
        lines = [
            "# Generated by bench/run.py",
            f'ServerRoot "{self.dir}"',
            "ServerName 127.0.0.1",
            f"Listen 127.0.0.1:{self.port}",
            f'PidFile "{self.dir}/httpd.pid"',
            f'DefaultRuntimeDir "{self.dir}"',
            f"Mutex file:{self.dir} default",
            f'ErrorLog "{self.dir}/error.log"',
            "LogLevel warn",
            "Timeout 60",
            "KeepAlive On",
            "MaxKeepAliveRequests 0",
            "KeepAliveTimeout 5",
            "EnableSendfile On",
            "EnableMMAP On",
            f"LoadModule mpm_event_module {MODULES_DIR}/mod_mpm_event.so",
            f"StartServers {a.apache_children}",
            f"ServerLimit {a.apache_children}",
            f"ThreadsPerChild {a.apache_threads}",
            f"ThreadLimit {a.apache_threads}",
            f"MaxRequestWorkers {a.apache_children * a.apache_threads}",
            "MinSpareThreads 1",
            f"MaxSpareThreads {a.apache_children * a.apache_threads}",
            "MaxConnectionsPerChild 0",
        ]
        if os.geteuid() == 0:
            lines += ["User www-data", "Group www-data"]
        for mod in ("authz_core", "mime", "alias"):
            lines.append(f"LoadModule {mod}_module {MODULES_DIR}/mod_{mod}.so")
        lines += [
            "TypesConfig /etc/mime.types",
            f'DocumentRoot "{self.app_dir}"',
            "<Directory />",
            "    Require all granted",
            "</Directory>",
        ]
        if self.mode == "static":
            lines.append(f'Alias /static "{self.data_dir}"')
            return "\n".join(lines) + "\n"
        module = self.args.module if self.name.startswith("rs-") else C_MODULE
        lines.append(f'LoadModule wsgi_module "{module}"')
        lines.append(f'WSGISocketPrefix "{self.dir}/wsgi"')
        # Both modules may then send wsgi.file_wrapper files with sendfile, as the static
        # target does (EnableSendfile On above); both default to Off.
        lines.append("WSGIEnableSendfile On")
        script = os.path.join(self.app_dir, "app.py")
        venv = self.args.venv
        if self.mode == "embedded":
            if venv:
                lines.append(f'WSGIPythonHome "{venv}"')
            lines.append(f'WSGIScriptAlias / "{script}" application-group=%{{GLOBAL}}')
        else:
            home = f" python-home={venv}" if venv else ""
            lines.append(
                f"WSGIDaemonProcess bench processes=1 threads={self.args.threads}"
                f" display-name=%{{GROUP}}{home}"
            )
            lines.append(
                f'WSGIScriptAlias / "{script}" process-group=bench application-group=%{{GLOBAL}}'
            )
        return "\n".join(lines) + "\n"

    def command(self):
        if self.kind == "apache":
            conf = os.path.join(self.dir, "httpd.conf")
            with open(conf, "w") as handle:
                handle.write(self.apache_conf())
            os.chmod(conf, 0o644)
            return [APACHE, "-f", conf, "-DFOREGROUND"]
        bindir = os.path.join(self.args.venv, "bin")
        threads = str(self.args.threads)
        if self.kind == "gunicorn":
            return [
                os.path.join(bindir, "gunicorn"),
                "--chdir", self.app_dir,
                "--worker-class", "gthread",
                "--workers", "1",
                "--threads", threads,
                "--bind", f"127.0.0.1:{self.port}",
                "--backlog", "2048",
                "--keep-alive", "5",
                "--log-level", "warning",
                "--pid", os.path.join(self.dir, "gunicorn.pid"),
                "app:application",
            ]
        return [
            os.path.join(bindir, "granian"),
            "--interface", "wsgi",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--workers", "1",
            "--blocking-threads", threads,
            "--no-access-log",
            "--log-level", "warning",
            "--working-dir", self.app_dir,
            "app:application",
        ]

    # Life cycle ------------------------------------------------------------------------------

    def start(self):
        make_world_readable_dir(self.dir)
        self.port = free_port()
        cmd = self.command()
        out = open(os.path.join(self.dir, "stdout.log"), "wb")
        err = open(os.path.join(self.dir, "stderr.log"), "wb")
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        began = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=self.dir, env=env,
            start_new_session=True,
        )
        out.close()
        err.close()
        probe = "/static/1m.bin" if self.mode == "static" else "/hello"
        deadline = began + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            try:
                status, _ = http_request(self.port, "GET", probe, timeout=2)
                if status == 200:
                    self.startup_s = time.monotonic() - began
                    self.remember_pids()
                    return
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError(f"{self.name} did not answer within {START_TIMEOUT:.0f} s: {self.tail()}")

    def tail(self):
        text = ""
        for name in ("stderr.log", "error.log"):
            path = os.path.join(self.dir, name)
            if os.path.exists(path):
                with open(path, errors="replace") as handle:
                    text += "".join(handle.readlines()[-15:])
        return text.strip()

    def remember_pids(self):
        if self.proc is not None:
            self.known_pids.update(process_tree(self.proc.pid))

    def memory(self):
        """VmRSS of every process of the target (root and all descendants), in KiB."""
        processes = []
        for pid in process_tree(self.proc.pid):
            self.known_pids.add(pid)
            comm = read_proc(pid, "comm").decode(errors="replace").strip()
            cmdline = read_proc(pid, "cmdline").replace(b"\0", b" ").decode(errors="replace")
            if pid == self.proc.pid:
                role = "parent" if self.kind == "apache" else "master"
            elif "(wsgi:" in comm or "(wsgi:" in cmdline:
                role = "daemon"
            elif self.kind == "apache":
                role = "child"
            else:
                role = "worker"
            processes.append({"pid": pid, "role": role, "comm": comm, "rss_kib": rss_kib(pid)})
        return processes

    def signal_stop(self):
        if self.proc is None:
            return
        self.remember_pids()
        try:
            os.kill(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def finish_stop(self, deadline):
        """After signal_stop: waits until deadline, then SIGKILLs the parent and leftovers."""
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"{self.name}: still running {STOP_GRACE:.0f} s after SIGTERM, SIGKILL")
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        leftovers = set(p for p in self.known_pids if p != self.proc.pid and alive(p))
        marker = self.dir.encode()
        for entry in os.listdir("/proc"):
            if entry.isdigit() and marker in read_proc(int(entry), "cmdline"):
                leftovers.add(int(entry))
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc = None


# ---------------------------------------------------------------------------------------------
# HTTP and wrk


def http_request(port, method, path, body=None, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, data
    finally:
        conn.close()


def sanity_check(target, scenarios):
    """Checks once that each scenario's URL answers what it should; returns the problems."""
    problems = []
    for scenario in scenarios:
        path = scenario.get("static") if target.mode == "static" else scenario["path"]
        if path is None:
            continue
        body = b"u" * scenario["upload"] if "upload" in scenario else None
        try:
            status, data = http_request(target.port, "POST" if body else "GET", path, body)
        except OSError as error:
            problems.append(f"{scenario['name']}: {error}")
            continue
        expected = None
        if path == "/hello":
            expected = b"Hello, World!"
        elif "upload" in scenario:
            expected = str(scenario["upload"]).encode()
        if status != 200:
            problems.append(f"{scenario['name']}: status {status}")
        elif expected is not None and data != expected:
            problems.append(f"{scenario['name']}: body {data[:60]!r}")
        elif "payload" in scenario and len(data) != scenario["payload"]:
            problems.append(f"{scenario['name']}: {len(data)} bytes")
        elif scenario.get("flask") and b"Hello, World!" not in data:
            problems.append(f"{scenario['name']}: body {data[:60]!r}")
    return problems


UNITS_TIME = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}
UNITS_BYTES = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def parse_time_ms(text):
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    return float(match.group(1)) * UNITS_TIME[match.group(2)]


def parse_wrk(output):
    """The figures of a `wrk --latency` report."""
    result = {"non2xx": 0, "socket_errors": 0}
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    result["req_per_s"] = float(match.group(1)) if match else 0.0
    match = re.search(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB|TB)", output)
    result["transfer_mib_s"] = (
        float(match.group(1)) * UNITS_BYTES[match.group(2)] / MIB if match else 0.0
    )
    match = re.search(r"(\d+) requests in ([\d.]+\w+), ([\d.]+)(B|KB|MB|GB|TB) read", output)
    result["requests"] = int(match.group(1)) if match else 0
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        match = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+\w+)", output, re.M)
        result[key] = parse_time_ms(match.group(1)) if match else None
    match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if match:
        result["non2xx"] = int(match.group(1))
    match = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if match:
        result["socket_errors"] = sum(int(g) for g in match.groups())
    result["errors"] = result["non2xx"] + result["socket_errors"]
    return result


def run_wrk(port, scenario, path, duration, timeout_s=30):
    conns = scenario["conns"]
    cmd = [
        WRK, "--latency", "-t", str(min(2, conns)), "-c", str(conns), "-d", f"{duration}s",
        "--timeout", f"{timeout_s}s",
    ]
    env = dict(os.environ)
    if "upload" in scenario:
        cmd += ["-s", os.path.join(BENCH_DIR, "upload.lua")]
        env["UPLOAD_BYTES"] = str(scenario["upload"])
    cmd.append(f"http://127.0.0.1:{port}{path}")
    done = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=duration + timeout_s + 30
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"wrk failed ({done.returncode}): {(done.stderr or done.stdout).strip()[:300]}"
        )
    return done.stdout


def measure(target, scenario, args):
    path = scenario.get("static") if target.mode == "static" else scenario["path"]
    if args.warmup > 0:
        run_wrk(target.port, scenario, path, args.warmup)
    output = run_wrk(target.port, scenario, path, args.duration)
    figures = parse_wrk(output)
    if "upload" in scenario:
        figures["mib_s"] = figures["req_per_s"] * scenario["upload"] / MIB
    elif "payload" in scenario:
        figures["mib_s"] = figures["req_per_s"] * scenario["payload"] / MIB
    else:
        figures["mib_s"] = figures["transfer_mib_s"]
    processes = target.memory()
    figures["processes"] = processes
    figures["rss_total_mib"] = sum(p["rss_kib"] for p in processes) / 1024
    figures["wrk_output"] = output
    return figures


# ---------------------------------------------------------------------------------------------
# Results


def median_of(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(rounds):
    ok = [r for r in rounds if "error" not in r]
    if not ok:
        return None
    med = {
        key: median_of([r[key] for r in ok])
        for key in ("req_per_s", "p50_ms", "p99_ms", "mib_s", "rss_total_mib")
    }
    med["errors"] = sum(r["errors"] for r in ok)
    med["rounds_ok"] = len(ok)
    # Per-process memory: from the round whose total is the median one.
    by_total = sorted(ok, key=lambda r: r["rss_total_mib"])
    med["processes"] = by_total[len(by_total) // 2]["processes"]
    return med


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(value, digits=1, suffix=""):
    if value is None:
        return "–"
    return f"{value:,.{digits}f}{suffix}"


def evaluate_goals(results):
    """The goals of the issue, each with met (True/False/None when not measured) and detail."""
    scen = {s["name"]: s for s in results["scenarios"]}

    def med(scenario, target):
        entry = scen.get(scenario, {}).get("targets", {}).get(target, {})
        return entry.get("median")

    goals = []

    def hello_goal(mode, threshold):
        details, met = [], True
        for name in ("hello-c1", "hello-c16", "hello-c64"):
            rs, c = med(name, f"rs-{mode}"), med(name, f"c-{mode}")
            r = ratio(rs and rs["req_per_s"], c and c["req_per_s"])
            if r is None:
                met = None if met is True else met
                continue
            details.append(f"{name} {r:.2f}×")
            if r < threshold:
                met = False
        return met, ", ".join(details)

    met, detail = hello_goal("embedded", 1.15)
    goals.append({"goal": "embedded hello world ≥ 1.15× mod_wsgi embedded req/s",
                  "met": met, "detail": detail})
    met, detail = hello_goal("daemon", 1.3)
    goals.append({"goal": "daemon hello world ≥ 1.3× mod_wsgi daemon req/s",
                  "met": met, "detail": detail})

    worse, compared = [], 0
    for s in results["scenarios"]:
        for mode in ("embedded", "daemon"):
            rs, c = med(s["name"], f"rs-{mode}"), med(s["name"], f"c-{mode}")
            if rs and c and rs["p99_ms"] is not None and c["p99_ms"] is not None:
                compared += 1
                if rs["p99_ms"] > c["p99_ms"]:
                    worse.append(f"{s['name']} {mode} {rs['p99_ms']:.2f} vs {c['p99_ms']:.2f} ms")
    goals.append({
        "goal": "p99 latency no worse than mod_wsgi's (same mode) in any scenario",
        "met": (not worse) if compared else None,
        "detail": ("worse in: " + "; ".join(worse)) if worse else f"{compared} comparisons",
    })

    peaks = {}
    for target in ("rs-daemon", "c-daemon"):
        values = [med(s["name"], target) for s in results["scenarios"]]
        values = [v["rss_total_mib"] for v in values if v]
        peaks[target] = max(values) if values else None
    met = None
    if peaks["rs-daemon"] is not None and peaks["c-daemon"] is not None:
        met = peaks["rs-daemon"] <= peaks["c-daemon"]
    goals.append({
        "goal": "daemon resident memory no more than mod_wsgi's (peak over scenarios, all processes)",
        "met": met,
        "detail": f"{fmt(peaks['rs-daemon'])} MiB vs {fmt(peaks['c-daemon'])} MiB",
    })

    details, met = [], None
    for name in ("stream-1m", "stream-64m", "file-100m"):
        static = med(name, "apache-static")
        for mode in ("embedded", "daemon"):
            rs = med(name, f"rs-{mode}")
            r = ratio(rs and rs["mib_s"], static and static["mib_s"])
            if r is None:
                continue
            met = (met is not False) and r >= 0.9
            details.append(f"{name} {mode} {r:.0%}")
    goals.append({
        "goal": "large responses and file_wrapper ≥ 90% of Apache's static throughput",
        "met": met, "detail": ", ".join(details),
    })
    return goals


def render_markdown(results):
    meta = results["meta"]
    out = [f"# mod_wsgi-rs benchmark, {meta['finished']}", ""]
    out.append(f"Command: `{meta['command']}`  ")
    m = meta["machine"]
    out.append(f"Machine: {m['nproc']} CPUs, {m['cpu']}, {m['mem_total']}  ")
    out.append("Versions: " + "; ".join(f"{k} {v}" for k, v in meta["versions"].items()) + "  ")
    s = meta["settings"]
    out.append(
        f"Settings: {s['rounds']} round(s) of {s['duration_s']} s per measurement (after "
        f"{s['warmup_s']} s of warm-up), medians; Apache event MPM, {s['apache_children']} "
        f"children × {s['apache_threads']} threads for every Apache target; daemon mode "
        f"processes=1 threads={s['threads']}; gunicorn 1 gthread worker × {s['threads']} "
        f"threads; granian 1 worker × {s['threads']} blocking threads."
    )
    out.append("")
    out.append("Ratios: `rs-*` against `c-*` in the same mode; gunicorn and granian against "
               "`c-daemon`. `vs static`: MiB/s against Apache serving the same bytes as a "
               "static file. Errors: non-2xx responses plus socket errors, summed over the "
               "rounds. RSS: sum of VmRSS of all the target's processes after the measurement.")
    out.append("")
    out.append("## Goals")
    out.append("")
    if meta["settings"]["smoke"]:
        out.append("Smoke run: one short round, possibly with a debug build; the figures only "
                   "show that the suite works.")
        out.append("")
    out.append("| Goal | Met | Detail |")
    out.append("|---|---|---|")
    for goal in results["goals"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[goal["met"]]
        out.append(f"| {goal['goal']} | {met} | {goal['detail']} |")
    out.append("")
    out.append("## Scenarios")
    for scenario in results["scenarios"]:
        out.append("")
        out.append(f"### {scenario['name']}: {scenario['what']}")
        out.append("")
        out.append("| Target | req/s | ×C | p50 ms | p99 ms | p99 ×C | errors | MiB/s | vs static "
                   "| RSS MiB |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        static = scenario["targets"].get("apache-static", {}).get("median")
        for name, entry in scenario["targets"].items():
            med = entry.get("median")
            if med is None:
                out.append(f"| {name} | failed: {entry.get('error', '?')[:80]} |||||||||")
                continue
            ref_name = TARGETS[name][2]
            ref = scenario["targets"].get(ref_name, {}).get("median") if ref_name else None
            r_req = ratio(med["req_per_s"], ref and ref["req_per_s"])
            r_p99 = ratio(med["p99_ms"], ref and ref["p99_ms"])
            vs_static = ratio(med["mib_s"], static and static["mib_s"]) if static else None
            out.append(
                f"| {name} | {fmt(med['req_per_s'])} | {fmt(r_req, 2, '×')} | "
                f"{fmt(med['p50_ms'], 2)} | {fmt(med['p99_ms'], 2)} | {fmt(r_p99, 2, '×')} | "
                f"{med['errors']} | {fmt(med['mib_s'])} | "
                f"{fmt(vs_static and vs_static * 100, 0, '%')} | {fmt(med['rss_total_mib'])} |"
            )
    out.append("")
    out.append("## Start-up and memory")
    out.append("")
    out.append("Start-up: from starting the server to its first successful request (median). "
               "Memory: after the last scenario of the median round, per process (MiB).")
    out.append("")
    out.append("| Target | start-up s | processes (role: MiB) | total MiB |")
    out.append("|---|---:|---|---:|")
    last = results["scenarios"][-1] if results["scenarios"] else None
    for name, info in results["targets"].items():
        procs, total = "–", None
        med = last and last["targets"].get(name, {}).get("median")
        if med is None and name == "apache-static":
            for scenario in results["scenarios"]:
                med = scenario["targets"].get(name, {}).get("median") or med
        if med:
            procs = ", ".join(f"{p['role']} {p['rss_kib'] / 1024:.1f}" for p in med["processes"])
            total = med["rss_total_mib"]
        start = info.get("startup_s_median")
        note = f" ({info['error'][:80]})" if info.get("error") else ""
        out.append(f"| {name}{note} | {fmt(start, 2)} | {procs} | {fmt(total)} |")
    if results.get("problems"):
        out.append("")
        out.append("## Problems")
        out.append("")
        for problem in results["problems"]:
            out.append(f"- {problem}")
    out.append("")
    return "\n".join(out)


def machine_info():
    cpu = "unknown"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem_total": mem}


def versions(args):
    v = {}
    v["apache"] = run_text([APACHE, "-v"]).splitlines()[0].replace("Server version: ", "")
    v["python"] = run_text(["/usr/bin/python3.11", "--version"])
    v["mod_wsgi (C)"] = run_text(
        ["dpkg-query", "-W", "-f=${Version}", "libapache2-mod-wsgi-py3"])
    v["wrk"] = run_text([WRK, "-v"]).splitlines()[0].split(" Copyright")[0]
    commit = run_text(["git", "-C", REPO, "rev-parse", "--short=12", "HEAD"])
    dirty = run_text(["git", "-C", REPO, "status", "--porcelain", "--", "src", "Cargo.toml",
                      "build.rs", "ffi"])
    v["mod_wsgi-rs"] = commit + (" (with uncommitted changes)" if dirty else "")
    if args.venv:
        py = os.path.join(args.venv, "bin", "python")
        for package in ("gunicorn", "granian", "flask"):
            v[package] = run_text(
                [py, "-c", f"import importlib.metadata as m; print(m.version('{package}'))"])
    return v


# ---------------------------------------------------------------------------------------------
# Main


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of load before each")
    parser.add_argument("--smoke", action="store_true", help="quick check (see above)")
    parser.add_argument("--out", default=os.path.join(BENCH_DIR, "results"))
    parser.add_argument("--module", default=os.path.join(REPO, "target/release/libmod_wsgi.so"))
    parser.add_argument("--venv", help="virtualenv with bench/requirements.txt (not for --smoke)")
    parser.add_argument("--threads", type=int, default=16,
                        help="threads of the daemon group, gunicorn and granian")
    parser.add_argument("--apache-children", type=int, default=2)
    parser.add_argument("--apache-threads", type=int, default=64)
    parser.add_argument("--targets", help="comma-separated subset of: " + ", ".join(TARGETS))
    parser.add_argument("--scenarios", help="comma-separated subset of scenario names")
    parser.add_argument("--keep", action="store_true", help="keep the servers' folders")
    args = parser.parse_args()
    if args.duration < 1 or args.warmup < 0:
        parser.error("--duration must be at least 1 s (wrk takes whole seconds)")
    if args.smoke:
        args.rounds = 1
        args.duration = 1
        args.warmup = 0
        args.venv = None
    args.module = os.path.abspath(args.module)
    if args.venv:
        args.venv = os.path.abspath(args.venv)
    return args


def main():
    args = parse_args()
    started = datetime.datetime.now()
    if not os.path.isfile(args.module):
        sys.exit(f"bench: module {args.module} not found (cargo build --release)")
    if not os.path.isfile(C_MODULE):
        sys.exit(f"bench: {C_MODULE} not found (./scripts/deps.sh --bench)")
    target_names = list(SMOKE_TARGETS if args.smoke else TARGETS)
    scenarios = [s for s in SCENARIOS if not args.smoke or s["name"] in SMOKE_SCENARIOS]
    if args.targets:
        wanted = args.targets.split(",")
        target_names = [t for t in target_names if t in wanted]
    if args.scenarios:
        wanted = args.scenarios.split(",")
        scenarios = [s for s in scenarios if s["name"] in wanted]
    if args.venv and not os.path.exists(os.path.join(args.venv, "bin", "granian")):
        log("granian is not installed in the venv: leaving it out")
        target_names = [t for t in target_names if t != "granian"]
    if not args.venv:
        dropped = [t for t in target_names if TARGETS[t][0] != "apache"]
        target_names = [t for t in target_names if TARGETS[t][0] == "apache"]
        scenarios = [s for s in scenarios if not s.get("flask")]
        if dropped and not args.smoke:
            log(f"no --venv: leaving out {', '.join(dropped)} and the Flask scenario")
    if not any("static" in s for s in scenarios) and "apache-static" in target_names:
        target_names.remove("apache-static")

    data_dir = prepare_data(sorted({s["payload"] for s in scenarios if "payload" in s}))
    stamp = started.strftime("%Y%m%d-%H%M%S")
    run_dir = os.path.join(BENCH_ROOT, f"run-{stamp}-{os.getpid()}")
    make_world_readable_dir(run_dir)
    app_dir = prepare_app(run_dir, data_dir)

    results = {
        "meta": {
            "started": started.isoformat(timespec="seconds"),
            "command": " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
            "machine": machine_info(),
            "versions": versions(args),
            "settings": {
                "smoke": args.smoke, "rounds": args.rounds, "duration_s": args.duration,
                "warmup_s": args.warmup, "threads": args.threads,
                "apache_children": args.apache_children,
                "apache_threads": args.apache_threads, "module": args.module,
                "venv": args.venv, "upload_bytes": UPLOAD_BYTES,
            },
        },
        "targets": {name: {"description": TARGETS[name][3], "startup_s": []}
                    for name in target_names},
        "scenarios": [
            {"name": s["name"], "what": s["what"], "connections": s["conns"],
             "targets": {t: {"rounds": []} for t in target_names
                         if "static" in s or TARGETS[t][1] != "static"}}
            for s in scenarios
        ],
        "problems": [],
    }
    failed = False
    try:
        for round_no in range(1, args.rounds + 1):
            log(f"round {round_no}/{args.rounds}: starting {len(target_names)} targets")
            targets = {}
            for name in target_names:
                target = Target(name, args, run_dir, app_dir, data_dir, round_no)
                try:
                    target.start()
                except (RuntimeError, OSError) as error:
                    message = f"round {round_no}: {name} did not start: {error}"
                    log(message)
                    results["problems"].append(message)
                    results["targets"][name]["error"] = str(error).splitlines()[0]
                    target.signal_stop()
                    target.finish_stop(time.monotonic() + STOP_GRACE)
                    failed = True
                    continue
                results["targets"][name]["startup_s"].append(target.startup_s)
                problems = sanity_check(
                    target, [s for s in scenarios if "static" in s or target.mode != "static"])
                for problem in problems:
                    message = f"round {round_no}: {name}: wrong answer: {problem}"
                    log(message)
                    results["problems"].append(message)
                    failed = True
                targets[name] = target
                log(f"  {name} on port {target.port}, up in {target.startup_s:.2f} s")
            try:
                for scenario, entry in zip(scenarios, results["scenarios"]):
                    order = [t for t in target_names if t in entry["targets"]]
                    shift = (round_no - 1) % max(1, len(order))
                    order = order[shift:] + order[:shift]
                    for name in order:
                        if name not in targets:
                            entry["targets"][name]["rounds"].append({"error": "not started"})
                            continue
                        try:
                            figures = measure(targets[name], scenario, args)
                        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
                            message = f"round {round_no}: {scenario['name']} {name}: {error}"
                            log(message)
                            results["problems"].append(message)
                            entry["targets"][name]["rounds"].append({"error": str(error)})
                            failed = True
                            continue
                        entry["targets"][name]["rounds"].append(figures)
                        log(f"  {scenario['name']:<11} {name:<13} {figures['req_per_s']:>10.1f} "
                            f"req/s  p99 {fmt(figures['p99_ms'], 2):>8} ms  "
                            f"{figures['mib_s']:>8.1f} MiB/s  errors {figures['errors']}  "
                            f"RSS {figures['rss_total_mib']:.1f} MiB")
            finally:
                for target in targets.values():
                    target.signal_stop()
                deadline = time.monotonic() + STOP_GRACE
                for target in targets.values():
                    target.finish_stop(deadline)
                log(f"round {round_no}: stopped")
    finally:
        if not args.keep and not failed:
            shutil.rmtree(run_dir, ignore_errors=True)

    for name, info in results["targets"].items():
        info["startup_s_median"] = median_of(info["startup_s"])
    for entry in results["scenarios"]:
        for name, target_entry in entry["targets"].items():
            target_entry["median"] = summarise(target_entry["rounds"])
            errors = [r["error"] for r in target_entry["rounds"] if "error" in r]
            if errors:
                target_entry["error"] = errors[0]
    results["goals"] = evaluate_goals(results)
    results["meta"]["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    if failed and os.path.isdir(run_dir):
        results["meta"]["kept_folder"] = run_dir

    os.makedirs(args.out, exist_ok=True)
    markdown = render_markdown(results)
    prefix = "smoke-" if args.smoke else ""
    for name in (f"{prefix}{stamp}", f"{prefix}latest"):
        with open(os.path.join(args.out, name + ".json"), "w") as handle:
            json.dump(results, handle, indent=1)
            handle.write("\n")
        with open(os.path.join(args.out, name + ".md"), "w") as handle:
            handle.write(markdown)
    log(f"results: {os.path.join(args.out, prefix + stamp)}.{{md,json}}")
    print(markdown)
    if args.smoke and failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
