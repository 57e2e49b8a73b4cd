"""The serving demo over HTTP (loopback only; every test bounded in requests and time).

Answers, batched or one request at a time, equal what --do_predict wrote for the same questions; every malformed,
oversized or foreign request gets a JSON reply with the right status; an idle or half-sent connection holds only
its own thread (and gets 408 at its deadline) while 50 concurrent clients are answered.
"""
import http.client
import json
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import DEMO_SAMPLES, ROOT, random_pb
from serving_demo.batching import Busy, DynamicBatcher
from serving_demo.model import FrozenModel
from serving_demo.server import Limits, make_server

LIMITS = Limits(header_timeout_s=1.5, body_timeout_s=1.5, max_windows=8, max_items=16, batch_window_ms=20)


def sample_questions():
    """[(item, qid)] for every question of the demo's samples (one passage spans several windows)."""
    data = json.loads(DEMO_SAMPLES.read_text(encoding="utf-8"))
    return [({"passage": p["context"], "question": qa["question"], "id": qa["id"]}, qa["id"])
            for article in data["data"] for p in article["paragraphs"] for qa in p["qas"]]


def start(model, batching=True, limits=LIMITS):
    server = make_server(model, 0, quiet=True, limits=limits, batching=batching)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def stop(server, thread):
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def tiny_model(tiny_demo):
    return FrozenModel(tiny_demo["pb"], batch_size=8)


@pytest.fixture(scope="module")
def servers(tiny_model):
    started = {name: start(tiny_model, batching) for name, batching in (("batched", True), ("one_at_a_time", False))}
    yield {name: server for name, (server, _) in started.items()}
    for server, thread in started.values():
        stop(server, thread)


def raw_request(port, body=b"", method="POST", path="/", headers=None):
    """The bytes of one HTTP request: Host, Content-Type and Content-Length filled in unless ``headers`` says
    otherwise (None drops a header)."""
    fields = {"Host": "127.0.0.1:%d" % port, "Content-Type": "application/json", "Content-Length": str(len(body))}
    fields.update(headers or {})
    head = "%s %s HTTP/1.1\r\n%s\r\n" % (method, path, "".join("%s: %s\r\n" % (k, v) for k, v in fields.items()
                                                              if v is not None))
    return head.encode("latin-1") + body


def exchange(port, data, timeout=30):
    """Send ``data``, return (status, body bytes): the server must reply before closing."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read()


def post(port, item, **headers):
    """POST ``item`` as JSON -> (status, parsed reply): every reply must be valid JSON."""
    status, body = exchange(port, raw_request(port, json.dumps(item, ensure_ascii=False).encode("utf-8"),
                                              headers=headers))
    return status, json.loads(body.decode("utf-8"))


def concurrently(calls):
    """Run the callables at once (each in its thread, released together); their results in order."""
    results = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def work(index):
        barrier.wait()
        try:
            results[index] = calls[index]()
        except Exception as err:  # the test reports it with the others
            results[index] = err

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


@pytest.mark.parametrize("name", ["batched", "one_at_a_time"])
def test_concurrent_answers_equal_do_predict(servers, tiny_demo, tiny_model, name):
    port = servers[name].server_address[1]
    asked = sample_questions() * 3
    replies = concurrently([lambda item=item: post(port, item) for item, _ in asked])
    alone = {qid: tiny_model.answer([item])[0] for item, qid in sample_questions()}
    for (item, qid), reply in zip(asked, replies):
        status, result = reply
        assert status == 200, result
        assert result["id"] == qid and result["answer"] == tiny_demo["predictions"][qid]
        assert result["start"] == alone[qid]["start"] and result["windows"] == alone[qid]["windows"]
        assert abs(result["probability"] - alone[qid]["probability"]) <= 1e-5
        assert item["passage"][result["start"]:result["start"] + len(result["answer"])] == result["answer"]
        assert [c["text"] for c in result["nbest"]] == [c["text"] for c in alone[qid]["nbest"]]
    items = [item for item, _ in sample_questions()][:4]
    status, results = post(port, items)
    assert status == 200 and [r["answer"] for r in results] == [tiny_demo["predictions"][i["id"]] for i in items]


def test_dynamic_batcher_groups_waiting_windows_and_splits_requests():
    """Windows queued while the model is busy run together, max_batch at a time, a request split across runs;
    each request gets its own outputs in order; a full queue answers Busy at once."""
    entered, release, sizes = threading.Event(), threading.Event(), []

    def run_batch(arrays):
        sizes.append(len(arrays))
        if len(sizes) == 1:
            entered.set()
            release.wait(30)
        return [{"twice": 2 * a["x"]} for a in arrays]

    batcher = DynamicBatcher(run_batch, max_batch=4, window_s=0.0, max_queued=6)
    jobs = {"a": [{"x": 1}], "b": [{"x": 10}, {"x": 11}, {"x": 12}], "c": [{"x": 20}, {"x": 21}, {"x": 22}]}
    results = {}

    def submit(name):
        thread = threading.Thread(target=lambda: results.__setitem__(name, batcher.run(jobs[name])), daemon=True)
        thread.start()
        return thread

    threads = [submit("a")]
    assert entered.wait(30)
    for name, queued in (("b", 3), ("c", 6)):
        threads.append(submit(name))
        deadline = time.monotonic() + 30
        while batcher._queued < queued and time.monotonic() < deadline:
            time.sleep(0.005)
    with pytest.raises(Busy, match="at most 6"):
        batcher.run([{"x": 0}])
    release.set()
    for thread in threads:
        thread.join(30)
    batcher.close()
    assert sizes == [1, 4, 2]
    assert results == {name: [{"twice": 2 * a["x"]} for a in arrays] for name, arrays in jobs.items()}


def _fault_cases(port, long_passage):
    """(what, request bytes, expected status, fragment of the error)."""
    ok = {"passage": "杭州是浙江省的省会。", "question": "杭州是哪个省的省会？"}
    as_json = lambda item: json.dumps(item, ensure_ascii=False).encode("utf-8")  # noqa: E731
    return [
        ("body over max_body_bytes", raw_request(port, headers={"Content-Length": str(LIMITS.max_body_bytes + 1)}),
         413, "at most %d" % LIMITS.max_body_bytes),
        ("more windows than max_windows", raw_request(port, as_json(dict(ok, passage=long_passage * 3))), 413,
         "at most 8 per request"),
        ("more tokens than max_windows windows hold", raw_request(port, as_json(dict(ok, passage="杭" * 1100))),
         413, "max_windows 8"),
        ("more questions than max_items", raw_request(port, as_json([ok] * 17)), 413, "at most 16"),
        ("not JSON", raw_request(port, b"{not json"), 400, "not JSON"),
        ("not UTF-8", raw_request(port, b'{"passage": "\xff\xfe", "question": "q"}'), 400, "UTF-8"),
        ("lone surrogate", raw_request(port, b'{"passage": "ab\\ud800", "question": "q"}'), 400, "surrogate"),
        ("100,000-deep JSON", raw_request(port, b"[" * 100000 + b"]" * 100000), 400, "nested"),
        ("NaN id", raw_request(port, b'{"passage": "x", "question": "q", "id": NaN}'), 400, "NaN"),
        ("Infinity id", raw_request(port, b'{"passage": "x", "question": "q", "id": -Infinity}'), 400, "Infinity"),
        ("overflowing number", raw_request(port, b'{"passage": "x", "question": "q", "id": 1e999}'), 400,
         "out of range"),
        ("object id", raw_request(port, as_json(dict(ok, id={"a": 1}))), 400, "'id'"),
        ("missing question", raw_request(port, as_json({"passage": "x"})), 400, "'question'"),
        ("empty passage", raw_request(port, as_json(dict(ok, passage=" \n"))), 400, "empty"),
        ("empty list", raw_request(port, b"[]"), 400, "empty list"),
        ("wrong content type", raw_request(port, as_json(ok), headers={"Content-Type": "text/plain"}), 415,
         "application/json"),
        ("form post", raw_request(port, b"passage=x", headers={
            "Content-Type": "application/x-www-form-urlencoded"}), 415, "application/json"),
        ("no Content-Length", raw_request(port, headers={"Content-Length": None}), 411, "Content-Length"),
        ("chunked body", raw_request(port, headers={"Content-Length": None, "Transfer-Encoding": "chunked"}), 411,
         "Content-Length"),
        ("another host (DNS rebinding)", raw_request(port, as_json(ok), headers={"Host": "evil.example:%d" % port}),
         403, "not this server"),
        ("no Host", raw_request(port, as_json(ok), headers={"Host": None}), 403, "not this server"),
        ("another site's page", raw_request(port, as_json(ok), headers={"Origin": "http://evil.example"}), 403,
         "refused"),
        ("page from another host", raw_request(port, method="GET", headers={"Host": "evil.example"}), 403,
         "not this server"),
        ("unknown path", raw_request(port, as_json(ok), path="/admin"), 404, "not found"),
        ("unsupported method", raw_request(port, method="PUT"), 501, "Unsupported method"),
        ("garbage request line", b"HELLO\r\n\r\n", 400, "Bad request"),
    ]


def test_load_and_faults(servers, tiny_demo, capsys):
    """50 concurrent valid clients, every fault case and three stalled connections at once: the valid ones are
    answered correctly, each fault gets its status and a one-line JSON error, the stalled ones 408."""
    server = servers["batched"]
    port = server.server_address[1]
    questions = sample_questions()
    long_passage = max((item["passage"] for item, _ in questions), key=len)
    stalled = []
    for partial in (b"", b"POST / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Le" % port,
                    raw_request(port, b'{"passage": "', headers={"Content-Length": "200"})):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(partial)
        stalled.append(sock)

    def timed_post(item):
        started = time.perf_counter()
        status, result = post(port, item)
        return status, result, time.perf_counter() - started

    valid = [questions[i % len(questions)] for i in range(50)]
    faults = _fault_cases(port, long_passage)
    replies = concurrently([lambda item=item: timed_post(item) for item, _ in valid] +
                           [lambda data=data: exchange(port, data) for _, data, _, _ in faults])
    latencies = []
    for (item, qid), reply in zip(valid, replies):
        assert not isinstance(reply, Exception), reply
        status, result, seconds = reply
        assert status == 200 and result["answer"] == tiny_demo["predictions"][qid], (status, result)
        latencies.append(seconds)
    for (what, _, expected, fragment), reply in zip(faults, replies[len(valid):]):
        assert not isinstance(reply, Exception), (what, reply)
        status, body = reply
        error = json.loads(body.decode("utf-8"))["error"]
        assert status == expected and fragment in error and "\n" not in error, (what, status, error)
    for sock in stalled:
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 408 and "within" in json.loads(response.read())["error"]
        sock.close()
    status, result = post(port, valid[0][0])
    assert status == 200
    p50, p99 = np.percentile(latencies, [50, 99])
    with capsys.disabled():
        print("\n[serving load] 50 concurrent valid requests beside %d faults and 3 stalled connections: all "
              "answered; latency p50 %.0f ms, p99 %.0f ms, max %.0f ms; model runs by size %s"
              % (len(faults), 1e3 * p50, 1e3 * p99, 1e3 * max(latencies), dict(server.batcher.batch_sizes)))


def test_non_finite_scores_get_a_json_error_not_invalid_json(tiny_demo):
    """A graph that returns NaN logits (broken weights): the reply is a 500 whose body is valid JSON."""
    model = FrozenModel(tiny_demo["pb"])
    real_run_batch = model.run_batch
    model.run_batch = lambda arrays: [{name: np.full_like(value, np.nan) for name, value in output.items()}
                                      for output in real_run_batch(arrays)]
    server, thread = start(model)
    try:
        item, _ = sample_questions()[0]
        status, body = exchange(server.server_address[1], raw_request(server.server_address[1], json.dumps(
            item).encode("utf-8")))
    finally:
        stop(server, thread)
    error = json.loads(body.decode("utf-8"), parse_constant=lambda name: pytest.fail("%s in the reply" % name))
    assert status == 500 and "cannot be written as JSON" in error["error"]


def test_connections_beyond_max_connections_get_503(tiny_model):
    server, thread = start(tiny_model, limits=Limits(max_connections=1, header_timeout_s=30))
    port = server.server_address[1]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as idle:
            idle.sendall(b"POST / HTTP/1.1\r\n")  # holds the only connection slot
            status, body = exchange(port, raw_request(port, b"{}"))
        assert status == 503 and "at most 1" in json.loads(body.decode("utf-8"))["error"]
    finally:
        stop(server, thread)


def test_page_and_its_configuration(servers):
    port = servers["batched"].server_address[1]
    status, page = exchange(port, raw_request(port, method="GET"))
    page = page.decode("utf-8")
    assert status == 200 and 'id="passage"' in page and 'id="ask"' in page
    config = json.loads(page.split("const CONFIG = ")[1].split(";\n")[0])
    assert config == {"task": "cmrc2018", "kind": "span", "fields": ["passage", "question"]}


@pytest.fixture(scope="module", params=["c3", "chid"])
def choice_model(request, tmp_path_factory):
    return FrozenModel(random_pb(tmp_path_factory.mktemp(request.param), request.param))


def test_choice_tasks_report_every_choice_probability(choice_model, tmp_path):
    """C3 and CHID through the server: the choice probabilities are the softmax of the graph's logits for the
    task's own features of a file written by hand in the task's format."""
    task = choice_model.task
    passage = "男：今天下午的会议改到三点了。\n女：好的。" if task.name == "c3" else "他做事总是#idiom#，从不返工。"
    choices = ["两点", "三点", "四点"] if task.name == "c3" else ["一丝不苟", "敷衍了事", "全力以赴", "精益求精"]
    reference = tmp_path / "reference.json"
    if task.name == "c3":
        reference.write_text(json.dumps([[[passage], [{"question": "几点开会？", "choice": choices}], "d1"]],
                                        ensure_ascii=False), encoding="utf-8")
    else:
        reference.write_text(json.dumps({"id": 1, "content": passage, "candidates": choices}, ensure_ascii=False),
                             encoding="utf-8")
    examples = task.read_examples(str(reference), is_training=False)
    logits = choice_model.run(task.featurize(examples, choice_model.tokenizer, choice_model.settings,
                                             is_training=False).arrays)[0]["choice_logits"][:len(choices)]
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert expected.max() - expected.min() > 0.01  # the weights tell the choices apart
    server, thread = start(choice_model)
    try:
        item = {"passage": passage, "choices": choices}
        if task.name == "c3":
            item["question"] = "几点开会？"
        status, result = post(server.server_address[1], item)
        assert status == 200, result
        assert [c["text"] for c in result["choices"]] == choices
        np.testing.assert_allclose([c["probability"] for c in result["choices"]], expected, atol=1e-6)
        best = int(np.argmax(expected))
        assert result["answer"] == (best if task.name == "chid" else choices[best])
        assert abs(result["probability"] - expected[best]) <= 1e-6
        status, result = post(server.server_address[1], dict(item, choices="三点"))
        assert status == 400 and "'choices'" in result["error"]
    finally:
        stop(server, thread)


def test_cjrc_reports_class_probabilities_and_reads_every_question(tmp_path):
    """CJRC: the reply's span / yes / no / unknown probabilities are the softmax of the class logits of the
    window holding the best span (the task's own rule); a model trained with split_ratio still reads every
    question of a request."""
    model = FrozenModel(random_pb(tmp_path, "cjrc", task_options={"split_ratio": 0.5}))
    passage = "原告张某与被告李某签订借款合同，约定借款十万元，期限一年。被告到期未还款。"
    items = [{"passage": passage, "question": question} for question in ("借款多少钱？", "被告是否还款？")]
    server, thread = start(model)
    try:
        status, results = post(server.server_address[1], items)
    finally:
        stop(server, thread)
    assert status == 200 and len(results) == 2, results
    for item, result in zip(items, results):
        examples = model.task.read_examples(_squad_file(tmp_path, item), is_training=False)
        featurized = model.task.featurize(examples, model.tokenizer, model.settings, is_training=False)
        outputs = model.run(featurized.arrays)
        spans = model.task.span_candidates(examples, featurized.sidecar, outputs, model.settings)["q"]
        logits = outputs[spans[0]["window"]]["class_logits"]
        expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        assert set(result["classes"]) == {"span", "yes", "no", "unknown"}
        np.testing.assert_allclose([result["classes"][name] for name in ("span", "yes", "no", "unknown")],
                                   expected, atol=1e-6)
        assert result["class"] == ("span", "yes", "no", "unknown")[int(np.argmax(expected))]
        assert [c["text"] for c in result["nbest"]] == [c["text"] for c in spans[:5]]


def _squad_file(directory, item):
    path = directory / "reference.json"
    path.write_text(json.dumps({"data": [{"domain": "civil", "paragraphs": [{"context": item["passage"], "qas": [
        {"id": "q", "question": item["question"], "answers": []}]}]}]}, ensure_ascii=False), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("flag", ["--batch_size", "--max_windows", "--max_connections"])
def test_cli_refuses_non_positive_limits_in_one_line(tiny_demo, flag):
    result = subprocess.run([sys.executable, "-m", "serving_demo", "--pb", tiny_demo["pb"], "--serve", "0", flag,
                             "0"], capture_output=True, text=True, cwd=str(ROOT), timeout=60)
    assert result.returncode == 2 and result.stderr.strip() == "error: %s must be at least 1, got 0" % flag


def test_a_byte_order_mark_before_the_json_is_read_as_the_data_files_are():
    """Some Windows clients send UTF-8 with a BOM; the file readers accept it, so the server does too."""
    from serving_demo.server import parse_items
    from tf_mrc.tasks import get_task
    body = json.dumps({"passage": "杭州是浙江省的省会。", "question": "杭州是哪个省的省会？"}, ensure_ascii=False).encode()
    task = get_task("cmrc2018")
    assert parse_items(b"\xef\xbb\xbf" + body, task, 16) == parse_items(body, task, 16)
