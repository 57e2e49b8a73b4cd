"""The demo's HTTP mode: JSON POSTs answered by a FrozenModel, an HTML page at GET /, 127.0.0.1 only.

    POST /   {"passage": "...", "question": "..."}            -> {"answer", "probability", "start", "nbest", ...}
    POST /   [{"passage": ..., "question": ...}, ...]          -> [{...}, ...]
(C3 adds "choices"; CHID sends a passage with one #idiom# blank and its candidates as "choices", no question.)

Each connection gets its own thread (at most ``Limits.max_connections``; the kernel's listen queue holds the
next ones), with deadlines for reading the header and the body, so an idle or half-sent connection only holds
its own thread. Concurrent requests featurize and post-process in their threads and share model runs through a
DynamicBatcher (``batching=False``: one request at a time, the baseline of bench/bench_serving.py). A request is
bounded in bytes, questions and windows (413 names the limit); anything malformed gets 400 with
{"error": "..."}; POSTs must be ``application/json`` and the Host header must name this server, so a page on
another site cannot drive the demo through a visitor's browser (DNS rebinding, form posts).
"""
import dataclasses
import html
import http.server
import io
import json
import math
import os
import socket
import socketserver
import sys
import threading
import time

from serving_demo import questions
from serving_demo.batching import Busy, DynamicBatcher
from tf_mrc.errors import UserError

PAGE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static", "page.html")


@dataclasses.dataclass
class Limits:
    """What one request or connection may take."""
    max_body_bytes: int = 1 << 20
    max_items: int = 64             # questions per request
    max_windows: int = 64           # model windows (features) per request
    header_timeout_s: float = 10.0  # from accepting the connection to the end of the header
    body_timeout_s: float = 10.0    # from the end of the header to the end of the body
    max_connections: int = 64       # connections served at once
    max_queued_windows: int = 512   # windows waiting for the model, all requests together
    batch_window_ms: float = 5.0    # how long the batcher waits for more windows after the first


class BadRequest(Exception):
    """A request the demo cannot answer; its message goes back as {"error": ...} with the status."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def _reject_constant(name):
    raise ValueError("%s is not a JSON number" % name)


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number %s is out of range" % text[:40])
    return value


def _check_text(value, where, field):
    """Refuse strings that are not text: a lone surrogate (an unpaired \\ud800 escape) cannot be encoded."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise BadRequest("%s: field %r holds a lone surrogate at character %d: not text" % (where, field, err.start))


def parse_items(body, task, max_items):
    """The request body -> (items, whether it was a list). Raises BadRequest with a one-line message."""
    try:
        # utf-8-sig: a leading byte-order mark (which some Windows clients send) is read as the data files are
        request = json.loads(body.decode("utf-8-sig"), parse_constant=_reject_constant, parse_float=_finite_float)
    except UnicodeDecodeError as err:
        raise BadRequest("body is not UTF-8: %s" % err)
    except RecursionError:
        raise BadRequest("body is not JSON the demo reads: nested too deeply")
    except ValueError as err:
        raise BadRequest("body is not JSON: %s" % err)
    items = request if isinstance(request, list) else [request]
    if not items:
        raise BadRequest("empty list: send {\"passage\": ..., \"question\": ...} or a list of them")
    if len(items) > max_items:
        raise BadRequest("%d questions in one request; at most %d" % (len(items), max_items), 413)
    for index, item in enumerate(items):
        where = "item %d" % index if isinstance(request, list) else "request"
        if not isinstance(item, dict):
            raise BadRequest("%s: expected an object with %s" % (
                where, ", ".join('"%s"' % name for name, _ in questions.required_fields(task))))
        for field, kind in questions.required_fields(task):
            if not isinstance(item.get(field), kind):
                raise BadRequest("%s: field %r missing or not a %s" % (
                    where, field, "string" if kind is str else "list of strings"))
        texts = [("passage", item["passage"]), ("question", item.get("question", ""))]
        for number, choice in enumerate(item.get("choices") or []):
            if not isinstance(choice, str):
                raise BadRequest("%s: field 'choices[%d]' is not a string" % (where, number))
            texts.append(("choices[%d]" % number, choice))
        qid = item.get("id")
        if qid is not None and (isinstance(qid, bool) or not isinstance(qid, (str, int, float))):
            raise BadRequest("%s: field 'id' must be a string or a number" % where)
        if isinstance(qid, str):
            texts.append(("id", qid))
        for field, text in texts:
            _check_text(text, where, field)
        if not item["passage"].strip():
            raise BadRequest("%s: field 'passage' is empty" % where)
    return items, isinstance(request, list)


class _DeadlineReader(io.RawIOBase):
    """Socket reads that end at ``deadline`` (time.monotonic) however slowly the bytes trickle in."""

    def __init__(self, sock, deadline):
        self.sock, self.deadline, self.timed_out = sock, deadline, False

    def readable(self):
        return True

    def readinto(self, buffer):
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.timed_out = True
            raise socket.timeout("read deadline passed")
        self.sock.settimeout(left)
        try:
            return self.sock.recv_into(buffer)
        except socket.timeout:
            self.timed_out = True
            raise


def _json_bytes(body):
    """JSON of ``body`` as UTF-8; never NaN/Infinity (ValueError instead), never an unencodable character."""
    return json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8", "replace")


def _page(model, sample):
    """The HTML page: the form for the task's fields and the script that shows answers."""
    with open(PAGE_FILE, encoding="utf-8") as f:
        template = f.read()
    sample = dict(sample or {})
    config = {"task": model.task.name, "kind": questions.kind_of(model.task),
              "fields": [name for name, _ in questions.required_fields(model.task)]}
    values = {"task": model.sidecar["task"], "layout": model.sidecar["layout"],
              "max_seq_length": str(model.sidecar["max_seq_length"]), "passage": sample.get("passage", ""),
              "question": sample.get("question", ""), "choices": "\n".join(sample.get("choices") or [])}
    for name, value in values.items():
        template = template.replace("{{%s}}" % name, html.escape(value, quote=True))
    # </ inside a script would end it: JSON escapes it as <\/.
    return template.replace("{{config}}", json.dumps(config).replace("</", "<\\/"))


class DemoServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """A thread per connection (bounded), the model behind a DynamicBatcher or a lock."""

    daemon_threads = True
    request_queue_size = 128        # the listen backlog: connections waiting for a free thread

    def __init__(self, model, port, sample, limits, batching, quiet):
        self.model, self.limits, self.quiet = model, limits, quiet
        self.page = _page(model, sample)
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        # One stage of CPU work at a time in this process: a request reading, featurizing or post-processing,
        # or a model run. A model run spreads over every core; Python threads running beside it take cores its
        # kernel threads then wait for, and the requests' own work gains nothing from overlapping it.
        cpu = threading.Lock()
        if batching:
            def run_batch(arrays):
                with cpu:
                    return model.run_batch(arrays)

            def run_unlocked(arrays):  # a request waits for its windows without holding the CPU
                cpu.release()
                try:
                    return self.batcher.run(arrays)
                finally:
                    cpu.acquire()
            self.batcher = DynamicBatcher(run_batch, model.batch_size, limits.batch_window_ms / 1e3,
                                          limits.max_queued_windows)
        else:
            self.batcher, run_unlocked = None, None  # the whole request holds the CPU: one at a time

        def answer(items, check):
            with cpu:
                return model.answer(items, run_unlocked, check)
        self.answer = answer
        super().__init__(("127.0.0.1", port), Handler)
        self.hosts = {"127.0.0.1:%d" % self.server_address[1], "localhost:%d" % self.server_address[1]}

    def process_request(self, request, client_address):
        if not self._slots.acquire(timeout=1.0):
            _send_raw(request, 503, {"error": "server busy: %d connections open, at most %d (--max_connections)"
                                     % (self.limits.max_connections, self.limits.max_connections)})
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def server_close(self):
        super().server_close()
        if self.batcher is not None:
            self.batcher.close()


def _send_raw(sock, status, body):
    """A whole response written straight to the socket (no handler, or the handler lost its parse state)."""
    data = _json_bytes(body)
    head = "HTTP/1.0 %d %s\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\n" \
           "Connection: close\r\n\r\n" % (status, http.server.BaseHTTPRequestHandler.responses[status][0], len(data))
    try:
        sock.settimeout(1.0)
        sock.sendall(head.encode("ascii") + data)
    except OSError:
        pass


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "tf_mrc-serving-demo"

    def setup(self):
        super().setup()
        self._responded = False
        self._reader = _DeadlineReader(self.connection, time.monotonic() + self.server.limits.header_timeout_s)
        self.rfile.close()  # the makefile() reader of StreamRequestHandler: reads go through the deadline
        self.rfile = io.BufferedReader(self._reader)

    def handle(self):
        super().handle()
        if self._reader.timed_out and not self._responded:
            self._responded = True
            _send_raw(self.connection, 408, {"error": "request not received within %g s"
                                             % self.server.limits.header_timeout_s})

    def send_error(self, code, message=None, explain=None):
        """Malformed request lines and headers get the demo's JSON error too, with a status line and headers
        even when the request line was too broken to name an HTTP version."""
        if self.request_version in ("", "HTTP/0.9"):
            self.request_version = "HTTP/1.0"
        self._send(code, {"error": message or self.responses.get(code, ("error",))[0]})

    def _send(self, status, body, content_type="application/json; charset=utf-8"):
        try:
            data = body.encode("utf-8") if isinstance(body, str) else _json_bytes(body)
        except ValueError as err:  # a non-finite score: refuse rather than emit invalid JSON
            status, data = 500, _json_bytes({"error": "the answer cannot be written as JSON: %s" % err})
        self._responded = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        if status == 503:
            self.send_header("Retry-After", "1")
        self.end_headers()
        self.wfile.write(data)

    def _check_host(self):
        """Only this server's own name: a page elsewhere (DNS rebinding, a cross-site form) is refused."""
        host, origin = self.headers.get("Host"), self.headers.get("Origin")
        if host not in self.server.hosts:
            raise BadRequest("Host header %r is not this server (%s)" % (host, " or ".join(sorted(
                self.server.hosts))), 403)
        if origin is not None and origin not in {"http://" + name for name in self.server.hosts}:
            raise BadRequest("requests from %r are refused: the demo answers its own page only" % origin, 403)

    def do_GET(self):
        try:
            self._check_host()
            if self.path not in ("/", "/index.html"):
                raise BadRequest("not found: GET / for the page, POST / with JSON to ask", 404)
        except BadRequest as err:
            self._send(err.status, {"error": str(err)})
            return
        self._send(200, self.server.page, "text/html; charset=utf-8")

    def do_POST(self):
        try:
            self._send(200, self._answer())
        except BadRequest as err:
            self._send(err.status, {"error": str(err)})
        except Busy as err:
            self._send(503, {"error": "server busy: %s" % err})
        except Exception as err:  # a reply whatever happens; the traceback goes to the log
            self.log_error("internal error: %r", err)
            self._send(500, {"error": "internal error: %s: %s" % (type(err).__name__, err)})

    def _answer(self):
        limits, model = self.server.limits, self.server.model
        if self.path not in ("/", "/answer"):
            raise BadRequest("not found: POST / or /answer", 404)
        self._check_host()
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise BadRequest("Content-Type %r: the demo takes application/json" % content_type, 415)
        if self.headers.get("Transfer-Encoding"):
            raise BadRequest("send the body with a Content-Length header, not Transfer-Encoding", 411)
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise BadRequest("Content-Length header required", 411)
        if length < 0 or length > limits.max_body_bytes:
            raise BadRequest("body of %d bytes; at most %d (max_body_bytes)" % (length, limits.max_body_bytes), 413)
        self._reader.deadline = time.monotonic() + limits.body_timeout_s
        try:
            body = self.rfile.read(length)
        except socket.timeout:
            raise BadRequest("body not received within %g s" % limits.body_timeout_s, 408)
        if len(body) < length:
            raise BadRequest("body ended after %d of %d bytes" % (len(body), length))
        items, as_list = parse_items(body, model.task, limits.max_items)
        self._check_tokens(items)
        try:
            results = self.server.answer(items, self._check_windows)
        except UserError as err:  # e.g. the task's reader rejecting a record
            raise BadRequest(str(err))
        return results if as_list else results[0]

    def _check_tokens(self, items):
        """Before featurizing: passages longer than ``max_windows`` whole windows can never fit."""
        limits, model = self.server.limits, self.server.model
        budget = limits.max_windows * model.settings.max_seq_length
        tokens = 0
        for item in items:
            tokens += len(model.tokenizer.encode(item["passage"])[0])
            if tokens > budget:
                raise BadRequest("the passages hold more than %d tokens, more than %d windows of %d tokens cover "
                                 "(max_windows %d per request)" % (budget, limits.max_windows,
                                                                   model.settings.max_seq_length,
                                                                   limits.max_windows), 413)

    def _check_windows(self, featurized):
        limits = self.server.limits
        if len(featurized.arrays) > limits.max_windows:
            raise BadRequest("the request needs %d model windows; at most %d per request (max_windows)"
                             % (len(featurized.arrays), limits.max_windows), 413)

    def log_message(self, format, *args):
        if not self.server.quiet:
            sys.stderr.write("%s - %s\n" % (self.address_string(), format % args))


def make_server(model, port, sample=None, quiet=False, limits=None, batching=True):
    """A DemoServer on 127.0.0.1:``port`` (0: any free port) answering with ``model``; ``sample``: the request
    item the page starts with ({"passage", "question"[, "choices"]})."""
    return DemoServer(model, port, sample, limits or Limits(), batching, quiet)
