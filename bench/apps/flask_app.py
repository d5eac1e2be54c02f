"""The Flask application of the benchmark's ``flask-json`` scenario (``/flask/json``)."""

from flask import Flask, jsonify

app = Flask(__name__)


@app.route("/json")
def json_endpoint():
    return jsonify(message="Hello, World!", items=list(range(10)), ok=True)
