"""A tiny Flask app that shows which Python it runs in, served through mod_wsgi."""

import os
import sys

from flask import Flask, jsonify, url_for
from markupsafe import escape

app = Flask(__name__)


def runtime_info():
    """Facts about the interpreter serving this request."""
    try:
        import mod_wsgi  # only importable when running under mod_wsgi

        mod_wsgi_version = ".".join(str(part) for part in mod_wsgi.version)
        process_group = getattr(mod_wsgi, "process_group", None)
        application_group = getattr(mod_wsgi, "application_group", None)
    except ImportError:
        mod_wsgi_version = None
        process_group = None
        application_group = None
    return {
        "python_version": sys.version.split()[0],
        "python_executable": sys.executable,
        "sys_prefix": sys.prefix,
        "sys_base_prefix": sys.base_prefix,
        "in_virtualenv": sys.prefix != sys.base_prefix,
        "flask_file": sys.modules["flask"].__file__,
        "mod_wsgi_version": mod_wsgi_version,
        "mod_wsgi_process_group": process_group,
        "mod_wsgi_application_group": application_group,
        "pid": os.getpid(),
    }


@app.route("/")
def index():
    info = runtime_info()
    rows = "\n".join(
        f"    <tr><th>{escape(key)}</th><td>{escape(str(value))}</td></tr>"
        for key, value in info.items()
    )
    return f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>mod_wsgi-rs example</title></head>
<body>
  <h1>Hello from Flask under mod_wsgi</h1>
  <p>Python {escape(info["python_version"])}, sys.prefix {escape(info["sys_prefix"])},
     mod_wsgi {escape(info["mod_wsgi_version"] or "not importable")}.</p>
  <table>
{rows}
  </table>
  <p>The same data as JSON: <a href="{escape(url_for("as_json"))}">/json</a></p>
</body>
</html>
"""


@app.route("/json")
def as_json():
    return jsonify(runtime_info())
