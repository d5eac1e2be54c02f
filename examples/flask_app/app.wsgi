# WSGI script for the example Flask app, loaded by `WSGIScriptAlias / .../app/app.wsgi`.
#
# mod_wsgi looks for a callable named `application` in this file. The directory holding
# this file is NOT on sys.path under mod_wsgi, so it is added here before importing the
# `hello` package that sits next to it.
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from hello import app as application  # noqa: E402
