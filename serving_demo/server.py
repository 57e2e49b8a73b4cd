"""The demo's HTTP mode: JSON POSTs answered by a FrozenModel, a minimal HTML page at GET /, localhost only.

    POST /   {"passage": "...", "question": "..."}            -> {"answer", "score", "probability", ...}
    POST /   [{"passage": ..., "question": ...}, ...]          -> [{...}, ...]
Malformed requests get status 400 and {"error": "..."}.
"""
import html
import http.server
import json

from tf_mrc.errors import UserError

MAX_BODY_BYTES = 1 << 20
MAX_ITEMS = 64

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>tf_mrc serving demo</title>
<style>body{font-family:sans-serif;max-width:48em;margin:2em auto}textarea,input{width:100%%;font-size:1em}
#out{margin-top:1em;padding:.5em;background:#f4f4f4;white-space:pre-wrap}</style></head>
<body><h2>tf_mrc serving demo</h2><p>task %(task)s, layout %(layout)s, max_seq_length %(max_seq_length)d</p>
<label>Passage<textarea id="passage" rows="8">%(passage)s</textarea></label>
<label>Question<input id="question" value="%(question)s"></label>
<p><button onclick="ask()">Answer</button></p><div id="out"></div>
<script>
async function ask() {
  const body = JSON.stringify({passage: document.getElementById("passage").value,
                               question: document.getElementById("question").value});
  const response = await fetch("/", {method: "POST", headers: {"Content-Type": "application/json"}, body: body});
  const result = await response.json();
  document.getElementById("out").textContent = response.ok
    ? result.answer + "\\n(score " + result.score + ", probability " + result.probability + ", " +
      result.latency_ms + " ms, " + result.windows + " window(s))"
    : "error: " + result.error;
}
</script></body></html>
"""


class BadRequest(Exception):
    """A request the demo cannot answer; its message goes back as {"error": ...} with the status."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def parse_items(body):
    """The request body -> (items, whether it was a list). Raises BadRequest with a one-line message."""
    try:
        request = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise BadRequest("body is not JSON: %s" % err)
    items = request if isinstance(request, list) else [request]
    if not items:
        raise BadRequest("empty list: send {\"passage\": ..., \"question\": ...} or a list of them")
    if len(items) > MAX_ITEMS:
        raise BadRequest("%d questions in one request; at most %d" % (len(items), MAX_ITEMS))
    for index, item in enumerate(items):
        where = "item %d" % index if isinstance(request, list) else "request"
        if not isinstance(item, dict):
            raise BadRequest("%s: expected an object with \"passage\" and \"question\"" % where)
        for field in ("passage", "question"):
            if not isinstance(item.get(field), str):
                raise BadRequest("%s: field %r missing or not a string" % (where, field))
        if not item["passage"].strip():
            raise BadRequest("%s: field 'passage' is empty" % where)
    return items, isinstance(request, list)


def make_server(model, port, sample=None, quiet=False):
    """An HTTPServer on 127.0.0.1:``port`` (0: any free port) answering with ``model``; ``sample``: the
    (passage, question) the page starts with."""
    passage, question = sample or ("", "")
    page = PAGE % {"task": html.escape(model.sidecar["task"]), "layout": html.escape(model.sidecar["layout"]),
                   "max_seq_length": model.sidecar["max_seq_length"], "passage": html.escape(passage),
                   "question": html.escape(question, quote=True)}

    class Handler(http.server.BaseHTTPRequestHandler):
        def _send(self, status, body, content_type="application/json; charset=utf-8"):
            data = body.encode("utf-8") if isinstance(body, str) else json.dumps(body, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path in ("/", "/index.html"):
                self._send(200, page, "text/html; charset=utf-8")
            else:
                self._send(404, {"error": "not found: GET / for the page, POST / with JSON to ask"})

        def do_POST(self):
            try:
                if self.path not in ("/", "/answer"):
                    raise BadRequest("not found: POST / or /answer", 404)
                try:
                    length = int(self.headers.get("Content-Length", ""))
                except ValueError:
                    raise BadRequest("Content-Length header required", 411)
                if length < 0 or length > MAX_BODY_BYTES:
                    raise BadRequest("body of %d bytes; at most %d" % (length, MAX_BODY_BYTES), 413)
                items, as_list = parse_items(self.rfile.read(length))
                try:
                    results = model.answer(items)
                except UserError as err:  # e.g. the task's reader rejecting a record
                    raise BadRequest(str(err))
            except BadRequest as err:
                self._send(err.status, {"error": str(err)})
                return
            self._send(200, results if as_list else results[0])

        def log_message(self, format, *args):
            if not quiet:
                super().log_message(format, *args)

    return http.server.HTTPServer(("127.0.0.1", port), Handler)
