"""The demo's HTML page in a real browser: headless Chromium (Debian's package, installed by
scripts/browser_deps.sh) loads the page from ``python -m serving_demo --serve``, a passage and question are
submitted, and the answer appears highlighted in the passage with the n-best list (CJRC: the answer-type
probabilities; C3: every choice's probability). Chromium is driven through its DevTools protocol over a pipe: no
Python package needed.
``TF_MRC_SCREENSHOT=path.png`` also saves the span page's screenshot there (the README's picture).
"""
import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time

import pytest

from conftest import DEMO_SAMPLES, ROOT, random_pb

BROWSERS = ("chromium", "chromium-browser")
DEADLINE_S = 60


def find_browser():
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium here (%s): bash scripts/browser_deps.sh installs Debian's chromium where apt-get "
                "runs as root" % "/".join(BROWSERS))


def _moved_up(fd):
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return moved


class Chromium:
    """Headless Chromium speaking the DevTools protocol on fds 3 (commands in) and 4 (replies out),
    messages separated by NUL bytes; one page target attached in flat mode."""

    def __init__(self, binary, profile, log):
        command_read, self._command_write = os.pipe()
        self._reply_read, reply_write = os.pipe()
        # Above fd 9, so that neither end handed over is itself fd 3 or 4 when the shell moves them there.
        command_read, reply_write = [_moved_up(fd) for fd in (command_read, reply_write)]
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--no-default-browser-check", "--remote-debugging-pipe", "--user-data-dir=" + str(profile),
                 "--lang=zh-CN", "about:blank"]
        # bash (dash takes single-digit fds only) puts the pipes on the fds the protocol expects, then becomes
        # Chromium.
        self.process = subprocess.Popen(
            ["bash", "-c", 'exec "$0" "$@" 3<&%d 4>&%d' % (command_read, reply_write), binary] + flags,
            pass_fds=(command_read, reply_write), stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
        os.close(command_read)
        os.close(reply_write)
        self._buffer, self._next_id, self.session = b"", 0, None
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

    def call(self, method, params=None, timeout=DEADLINE_S):
        """Send one command (to the page once attached) and return its result."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._command_write, json.dumps(message).encode("utf-8") + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._reply_read], [], [], left)[0]:
                    raise AssertionError("Chromium gave no reply to %s within %d s" % (method, timeout))
                chunk = os.read(self._reply_read, 1 << 20)
                if not chunk:
                    raise AssertionError("Chromium closed the DevTools pipe during %s (exit %s)" % (
                        method, self.process.poll()))
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw.decode("utf-8"))
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise AssertionError("%s failed: %s" % (method, reply["error"]))
                return reply["result"]

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise AssertionError("page script failed: %s" % result["exceptionDetails"])
        return result["result"].get("value")

    def wait_for(self, expression, what, timeout=DEADLINE_S):
        """Poll ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError("%s did not happen within %d s (page error: %r)" % (
            what, timeout, self.evaluate("document.getElementById('error').textContent")))

    def close(self):
        for fd in (self._command_write, self._reply_read):
            os.close(fd)
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def serve(pb):
    """``python -m serving_demo --pb PB --serve 0``: (process, page URL from its first line)."""
    process = subprocess.Popen([sys.executable, "-m", "serving_demo", "--pb", pb, "--serve", "0"], cwd=str(ROOT),
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    match = re.search(r"http://127\.0\.0\.1:\d+/", process.stdout.readline())
    assert match, "the demo server did not print its address"
    return process, match.group()


@pytest.fixture
def browser(tmp_path):
    chromium = Chromium(find_browser(), tmp_path / "profile", str(tmp_path / "chromium.log"))
    chromium.call("Emulation.setDeviceMetricsOverride", {"width": 900, "height": 1000, "deviceScaleFactor": 1,
                                                         "mobile": False})
    yield chromium
    chromium.close()


def open_page(browser, url):
    browser.call("Page.navigate", {"url": url})
    browser.wait_for("document.readyState === 'complete' && !!document.getElementById('ask')", "the page loading")


def fill_and_ask(browser, fields):
    for field, value in fields.items():
        browser.evaluate("document.getElementById(%s).value = %s" % (json.dumps(field), json.dumps(value)))
    browser.evaluate("document.getElementById('ask').click()")


def screenshot(browser, path):
    """The page down to the end of its content, as PNG bytes (also written to ``path``)."""
    height = browser.evaluate("Math.ceil(document.body.getBoundingClientRect().bottom) + 16")
    data = browser.call("Page.captureScreenshot", {"format": "png", "clip": {
        "x": 0, "y": 0, "width": 900, "height": height, "scale": 1}})["data"]
    png = base64.b64decode(data)
    path.write_bytes(png)
    return png


def test_span_answer_is_highlighted_with_its_nbest(browser, tiny_demo, tmp_path):
    paragraph = json.loads(DEMO_SAMPLES.read_text(encoding="utf-8"))["data"][1]["paragraphs"][0]
    qa = paragraph["qas"][1]
    expected = tiny_demo["predictions"][qa["id"]]
    process, url = serve(tiny_demo["pb"])
    try:
        open_page(browser, url)
        fill_and_ask(browser, {"passage": paragraph["context"], "question": qa["question"]})
        marked = browser.wait_for("(document.getElementById('answer-mark') || {}).textContent",
                                  "the highlighted answer")
        view = browser.evaluate("document.getElementById('passage-view').textContent")
        before = browser.evaluate("document.getElementById('answer-mark').previousSibling.textContent")
        nbest = browser.evaluate("Array.from(document.querySelectorAll('#nbest tr')).slice(1).map("
                                 "r => Array.from(r.cells).map(c => c.textContent))")
        summary = browser.evaluate("document.getElementById('summary').textContent")
        png = screenshot(browser, tmp_path / "page.png")
        if os.environ.get("TF_MRC_SCREENSHOT"):
            with open(os.environ["TF_MRC_SCREENSHOT"], "wb") as f:
                f.write(png)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert marked == expected and view == paragraph["context"]
    assert paragraph["context"].startswith(before + expected)
    assert 1 < len(nbest) <= 5 and nbest[0][1] == expected
    assert all(re.fullmatch(r"\d+\.\d%", row[2]) for row in nbest)
    assert summary.startswith("Answer: " + expected)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_c3_page_lists_every_choice_probability(browser, tmp_path):
    process, url = serve(random_pb(tmp_path, "c3"))
    choices = ["两点", "三点", "四点"]
    try:
        open_page(browser, url)
        assert browser.evaluate("document.getElementById('choices-field').hidden") is False
        fill_and_ask(browser, {"passage": "男：会议改到三点了。\n女：好的。", "question": "几点开会？",
                               "choices": "\n".join(choices)})
        rows = browser.wait_for("Array.from(document.querySelectorAll('#nbest tr')).slice(1).map("
                                "r => Array.from(r.cells).map(c => c.textContent))", "the choice table")
        best = browser.evaluate("document.querySelector('#nbest tr.best').cells[1].textContent")
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert [row[1] for row in rows] == choices
    percents = [float(row[2].rstrip("%")) for row in rows]
    assert abs(sum(percents) - 100) <= 0.2
    assert best == choices[percents.index(max(percents))]


def test_cjrc_page_shows_the_answer_type_probabilities(browser, tmp_path):
    process, url = serve(random_pb(tmp_path, "cjrc"))
    try:
        open_page(browser, url)
        fill_and_ask(browser, {"passage": "原告张某与被告李某签订借款合同，约定借款十万元。被告到期未还款。",
                               "question": "被告是否还款？"})
        browser.wait_for("!document.getElementById('classes-box').hidden", "the answer-type table")
        rows = browser.evaluate("Array.from(document.querySelectorAll('#classes tr')).slice(1).map("
                                "r => Array.from(r.cells).map(c => c.textContent))")
        best = browser.evaluate("document.querySelector('#classes tr.best').cells[0].textContent")
        summary = browser.evaluate("document.getElementById('summary').textContent")
        marked = browser.evaluate("document.getElementById('answer-mark') !== null")
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert sorted(row[0] for row in rows) == ["no", "span", "unknown", "yes"]
    percents = {row[0]: float(row[1].rstrip("%")) for row in rows}
    assert abs(sum(percents.values()) - 100) <= 0.2 and best == max(percents, key=percents.get)
    expected = {"yes": "YES", "no": "NO", "unknown": "(no answer)"}.get(best)
    assert marked == (best == "span")
    if expected is not None:
        assert summary.startswith("Answer: " + expected)
