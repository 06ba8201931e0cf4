"""distill.serve: the HTTP API (records as predict writes them), bad requests, micro-batching,
faults and graceful shutdown."""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from cli_util import popen

from distill.deploy.predict import Predictor, record
from distill.deploy.server import Settings, create_app

TEXTS = ["EU rejects German call to boycott British lamb.", "Barack Obama visited Paris.",
         "x", "中国人民大学位于北京。", " ".join(["Peter Blackburn reported from Brussels."] * 30)]


class Served:
    """A uvicorn server for one app in a background thread, on a free port."""

    def __init__(self, app):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None,
                                                    access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def predictor(tiny_teacher_ckpt):
    return Predictor.from_path(tiny_teacher_ckpt)


@pytest.fixture(scope="module")
def served(predictor):
    settings = Settings(max_batch=16, max_wait_ms=300, max_bytes=4000, max_texts=20)
    with Served(create_app(predictor, settings, name="tiny")) as s:
        yield s


def batch_histogram(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics").text
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r'^distill_batch_size_(count|sum) (\S+)$', text, re.MULTILINE)}


def test_predict_returns_the_records_predict_writes(served, predictor):
    response = httpx.post(f"{served.url}/predict", json={"texts": TEXTS}, timeout=60)
    assert response.status_code == 200
    expected = [record(t, p) for t, p in zip(TEXTS, predictor.predict(TEXTS))]
    got = response.json()
    assert [r["text"] for r in got] == TEXTS
    for a, b in zip(got, expected):
        assert [(e["start"], e["end"], e["type"]) for e in a["entities"]] == \
               [(e["start"], e["end"], e["type"]) for e in b["entities"]]
        assert [e["score"] for e in a["entities"]] == pytest.approx(
            [e["score"] for e in b["entities"]], abs=2e-4)
    assert httpx.post(f"{served.url}/predict", json={"texts": []}).json() == []


@pytest.mark.parametrize("body, status, words", [
    (b'{"texts": [', 400, "invalid JSON"),
    (b"\xff\xfe", 400, "UTF-8"),
    (b'["a"]', 422, "JSON object"),
    (b'{}', 422, 'missing field "texts"'),
    (b'{"texts": "a"}', 422, "list of strings"),
    (b'{"texts": ["a", 3]}', 422, "texts[1] must be a string"),
    (b'{"texts": ["a"], "lang": "en"}', 422, "unknown field(s) 'lang'"),
    (json.dumps({"texts": ["a" * 5000]}).encode(), 413, "over the limit of 4000 bytes"),
    (json.dumps({"texts": ["a"] * 21}).encode(), 413, "limit is 20 per request"),
])
def test_bad_requests_get_a_4xx_naming_the_problem(served, body, status, words):
    response = httpx.post(f"{served.url}/predict", content=body,
                          headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_unknown_route_and_method_are_json_errors(served):
    assert httpx.get(f"{served.url}/nope").status_code == 404
    assert "routes: POST /predict" in httpx.get(f"{served.url}/nope").json()["error"]
    response = httpx.get(f"{served.url}/predict")
    assert response.status_code == 405 and "GET" in response.json()["error"]


def test_health_and_metrics(served, predictor):
    health = httpx.get(f"{served.url}/health").json()
    assert health["status"] == "ok" and health["labels"] == predictor.labels
    text = httpx.get(f"{served.url}/metrics").text
    for series in ("distill_requests_total", "distill_request_latency_seconds_bucket",
                   "distill_batch_size_bucket", "distill_queue_texts"):
        assert series in text


def test_concurrent_requests_share_model_calls(served):
    before = batch_histogram(served.url)
    n = 8
    with ThreadPoolExecutor(n) as pool:
        responses = list(pool.map(
            lambda k: httpx.post(f"{served.url}/predict", json={"texts": [TEXTS[k % 4]]}, timeout=60),
            range(n)))
    assert all(r.status_code == 200 for r in responses)
    assert [r.json()[0]["text"] for r in responses] == [TEXTS[k % 4] for k in range(n)]
    after = batch_histogram(served.url)
    calls, texts = after["count"] - before["count"], after["sum"] - before["sum"]
    assert texts == n
    assert calls < n, f"{n} concurrent one-text requests took {calls} model calls (no batching)"


def test_faults_leave_the_server_serving(served):
    # a client that sends half a body and goes away, and one that goes before the answer
    for partial in (True, False):
        body = b'{"texts": ["Barack Obama visited Paris."]}'
        with socket.create_connection(("127.0.0.1", served.port)) as sock:
            head = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
            sock.sendall(head + (body[:10] if partial else body))
    # a burst over the limit
    big = json.dumps({"texts": ["a" * 5000]})
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: httpx.post(f"{served.url}/predict", content=big).status_code,
                              range(24)))
    assert codes == [413] * 24
    response = httpx.post(f"{served.url}/predict", json={"texts": TEXTS[:2]}, timeout=60)
    assert response.status_code == 200 and len(response.json()) == 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_served_socket_answers_without_waiting_for_delayed_acks(predictor):
    """The socket ``distill.serve`` binds sends responses at once (TCP_NODELAY): with
    ``socket.create_server`` each response waited for the client's delayed ACK, 44 ms for
    GET /health on localhost (1.5 ms now)."""
    import statistics

    import uvicorn

    from distill.deploy.server import listening_socket

    sock = listening_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(predictor), log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        with httpx.Client() as client:  # one keep-alive connection, as a real client holds
            url = f"http://127.0.0.1:{sock.getsockname()[1]}/health"
            ms = []
            for _ in range(15):
                t = time.perf_counter()
                assert client.get(url).status_code == 200
                ms.append(1000 * (time.perf_counter() - t))
        assert statistics.median(ms[1:]) < 25, ms
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def test_sigterm_finishes_in_flight_requests_and_exits_0(tiny_teacher_ckpt):
    port = free_port()
    proc = popen("distill.serve", f"ckpt={tiny_teacher_ckpt}", f"port={port}", "max_wait_ms=1500")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "server did not come up"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        with ThreadPoolExecutor(1) as pool:
            # the batcher holds this request for max_wait_ms: it is in flight when SIGTERM comes
            pending = pool.submit(httpx.post, f"{url}/predict", json={"texts": TEXTS[:2]}, timeout=60)
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            response = pending.result()
        assert response.status_code == 200 and [r["text"] for r in response.json()] == TEXTS[:2]
        assert proc.wait(60) == 0, proc.communicate()[1][-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_model_that_fails_to_load_is_a_one_line_error(tmp_path):
    proc = popen("distill.serve", f"ckpt={tmp_path / 'nope'}", f"port={free_port()}")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip().splitlines()[-1].startswith("error: ") and "nope" in err
    assert "Traceback" not in err


def test_load_test_tool_runs_bounded_and_checks_faults(tiny_teacher_ckpt, tmp_path):
    """tools/serve_load.py on the tiny model: few requests, every phase reported, faults answered
    with 4xx, SIGTERM with requests in flight drains and exits 0."""
    import subprocess
    import sys

    from conftest import REPO

    out = tmp_path / "load.json"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "serve_load.py"), "--ckpt",
                           str(tiny_teacher_ckpt), "--requests", "16", "--concurrency", "1", "4",
                           "--max-seconds", "30", "--threads", "1", "--output", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["one_at_a_time"]["requests"] == 16
    for c in ("1", "4", "faults"):
        phase = report["server"][c]
        assert phase["requests"] == 16 and phase["errors"] == 0 and phase["differing_records"] == 0
        assert phase["p50_ms"] <= phase["p99_ms"] and phase["texts_per_model_call"] >= 1
    assert "bad_requests" not in report["server"]["4"]  # the clean phase
    faults = report["server"]["faults"]["bad_requests"]
    assert {b["got"] for b in faults if "expected" in b} == {400, 413, 422}
    assert any(b.get("burst") == 32 and b["got"] == 413 for b in faults)
    assert any(b.get("disconnected_clients") for b in faults)
    assert report["healthy_after_faults"] and report["sigterm"]["all_200"]
    assert report["sigterm"]["exit_code"] == 0 and "ok" in done.stdout
