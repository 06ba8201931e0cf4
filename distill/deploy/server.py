"""The prediction server: an ASGI app (FastAPI, served by uvicorn) around one :class:`Predictor`.

``POST /predict`` takes ``{"texts": [str, ...]}`` and answers a JSON list with one record per
text, in order, exactly as ``distill.predict`` writes them (``{"text", "entities": [{"start",
"end", "type", "score"}]}``). ``GET /health`` says whether the model is loaded and the server is
taking requests; ``GET /metrics`` is Prometheus text (requests by status, latency, texts per
model call as the histogram ``distill_batch_size``, queue depth).

Concurrent requests are micro-batched: the :class:`Batcher` takes every request queued while the
model was busy (and waits at most ``max_wait_ms``, default 0, after the first for others), up to
``max_batch`` texts, and runs them as one :meth:`Predictor.predict` call in its single model thread (so the model is never run twice at
once, and the event loop keeps accepting requests meanwhile). A request over ``max_bytes`` is
refused with 413 before its body is parsed; every other bad request gets a 4xx JSON
``{"error": "<what is wrong>"}``. On SIGTERM uvicorn stops accepting connections, the requests
in flight finish (the batcher keeps running until the app shuts down), and the process exits 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from distill.deploy.predict import Predictor, record
from distill.errors import ConfigError

log = logging.getLogger("distill")

MAX_BYTES = 1_000_000  # the default request limit (1 MB)


@dataclass
class Settings:
    max_batch: int = 32        # texts per model call (a single larger request runs alone)
    max_wait_ms: float = 0.0   # how long the first queued request waits for company
    batch_size: int = 32       # windows per forward pass inside a model call
    max_bytes: int = MAX_BYTES
    max_texts: int = 1024      # texts per request

    def __post_init__(self):
        for name in ("max_batch", "batch_size", "max_bytes", "max_texts"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be at least 1")
        if float(self.max_wait_ms) < 0:
            raise ConfigError(f"max_wait_ms={self.max_wait_ms}: must be >= 0")


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def parse_request(body: bytes, max_texts: int) -> list[str]:
    """The texts of a ``/predict`` body, or :class:`BadRequest` naming what is wrong."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise BadRequest(400, f"body is not UTF-8 (byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise BadRequest(400, f"invalid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    if not isinstance(payload, dict):
        raise BadRequest(422, f'expected a JSON object {{"texts": [...]}}, found {type(payload).__name__}')
    unknown = sorted(set(payload) - {"texts"})
    if unknown:
        raise BadRequest(422, f"unknown field(s) {', '.join(map(repr, unknown))}; "
                              'the body is {"texts": [str, ...]}')
    if "texts" not in payload:
        raise BadRequest(422, 'missing field "texts" (a list of strings)')
    texts = payload["texts"]
    if not isinstance(texts, list):
        raise BadRequest(422, f'"texts" must be a list of strings, found {type(texts).__name__}')
    if len(texts) > max_texts:
        raise BadRequest(413, f'"texts" has {len(texts)} texts; the limit is {max_texts} per request')
    for k, text in enumerate(texts):
        if not isinstance(text, str):
            raise BadRequest(422, f"texts[{k}] must be a string, found {type(text).__name__}")
    return texts


class Metrics:
    """The Prometheus series of one app (its own registry, so several apps can live in a process)."""

    def __init__(self, max_batch: int):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("distill_requests", "HTTP requests to /predict by status code",
                                ["status"], registry=self.registry)
        self.texts = Counter("distill_texts", "texts predicted", registry=self.registry)
        self.latency = Histogram("distill_request_latency_seconds", "/predict latency (seconds)",
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5,
                                          5, 10), registry=self.registry)
        buckets, b = [], 1
        while b < max_batch:
            buckets.append(b)
            b *= 2
        self.batch = Histogram("distill_batch_size", "texts per model call (micro-batched requests)",
                               buckets=buckets + [max_batch], registry=self.registry)
        self.queued = Gauge("distill_queue_texts", "texts waiting for the model", registry=self.registry)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


@dataclass
class _Job:
    texts: list[str]
    future: asyncio.Future = field(repr=False)


class Batcher:
    """Merges concurrent requests into model calls of at most ``max_batch`` texts."""

    def __init__(self, predictor: Predictor, settings: Settings, metrics: Metrics):
        self.predictor, self.settings, self.metrics = predictor, settings, metrics
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="distill-model")
        self.task: asyncio.Task | None = None
        self._carry: _Job | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.pool.shutdown(wait=True)

    async def submit(self, texts: list[str]) -> list[dict]:
        future = asyncio.get_running_loop().create_future()
        self.metrics.queued.inc(len(texts))
        await self.queue.put(_Job(texts, future))
        return await future

    async def _next_batch(self) -> list[_Job]:
        if self._carry is not None:  # the job that did not fit into the last call goes first
            jobs, self._carry = [self._carry], None
        else:
            jobs = [await self.queue.get()]
        size, limit = len(jobs[0].texts), self.settings.max_batch
        deadline = time.monotonic() + self.settings.max_wait_ms / 1000
        while size < limit:
            if self.queue.empty():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            else:
                job = self.queue.get_nowait()
            if size + len(job.texts) > limit:  # keep it for the next call
                self._carry = job
                break
            jobs.append(job)
            size += len(job.texts)
        return jobs

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._next_batch()
            texts = [t for job in jobs for t in job.texts]
            self.metrics.queued.dec(len(texts))
            self.metrics.batch.observe(len(texts))
            try:
                results = await loop.run_in_executor(
                    self.pool, self.predictor.predict, texts, self.settings.batch_size)
            except Exception as err:  # the model failed: every waiting request gets the error
                log.exception("model call failed")
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(err)
                continue
            lo = 0
            for job in jobs:
                records = [record(t, p) for t, p in zip(job.texts, results[lo : lo + len(job.texts)])]
                lo += len(job.texts)
                if not job.future.done():  # a cancelled request (client gone) is skipped
                    job.future.set_result(records)


def listening_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket whose connections send small writes at once (TCP_NODELAY).
    asyncio sets TCP_NODELAY only on sockets whose ``proto`` is TCP, which a socket from
    ``socket.create_server`` (proto 0) is not; without it every response (headers and body are
    two writes) waited for the client's delayed ACK: 44 ms for GET /health on localhost."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def create_app(predictor: Predictor, settings: Settings | None = None, name: str | None = None):
    """The FastAPI app serving ``predictor``."""
    settings = settings or Settings()
    metrics = Metrics(settings.max_batch)
    state = {"batcher": None, "accepting": False}

    @asynccontextmanager
    async def lifespan(app):
        batcher = Batcher(predictor, settings, metrics)
        batcher.start()
        state.update(batcher=batcher, accepting=True)
        try:
            yield
        finally:
            state["accepting"] = False
            await batcher.stop()

    app = FastAPI(title="distill", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.settings, app.state.metrics = settings, metrics

    def error(status: int, message: str) -> JSONResponse:
        metrics.requests.labels(str(status)).inc()
        return JSONResponse({"error": message}, status_code=status)

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.max_bytes:
            raise BadRequest(413, f"request body of {int(declared)} bytes is over the limit of "
                                  f"{settings.max_bytes} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_bytes:
                raise BadRequest(413, f"request body is over the limit of {settings.max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @app.post("/predict")
    async def predict(request: Request):
        start = time.perf_counter()
        if state["batcher"] is None or not state["accepting"]:
            return error(503, "the server is not taking requests (starting or shutting down)")
        try:
            texts = parse_request(await read_body(request), settings.max_texts)
        except BadRequest as bad:
            return error(bad.status, bad.message)
        try:
            records = await state["batcher"].submit(texts) if texts else []
        except Exception as err:  # noqa: BLE001 -- the model's failure becomes a 500, not a crash
            return error(500, f"prediction failed: {type(err).__name__}: {' '.join(str(err).split())}")
        metrics.requests.labels("200").inc()
        metrics.texts.inc(len(texts))
        metrics.latency.observe(time.perf_counter() - start)
        return JSONResponse(records)

    @app.get("/health")
    async def health():
        body = {"status": "ok" if state["accepting"] else "unavailable", "model": name,
                "runtime": predictor.runtime, "labels": predictor.labels}
        return JSONResponse(body, status_code=200 if state["accepting"] else 503)

    @app.get("/metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(404)
    async def not_found(request: Request, exc):
        return JSONResponse({"error": f"no route {request.method} {request.url.path} "
                                      "(routes: POST /predict, GET /health, GET /metrics)"},
                            status_code=404)

    @app.exception_handler(405)
    async def wrong_method(request: Request, exc):
        return JSONResponse({"error": f"{request.method} is not allowed on {request.url.path}"},
                            status_code=405)

    return app


# ----------------------------------------------------------------------------- the command

def run(cfg) -> None:
    """Load the model (a failure is the one-line error of every CLI), then serve until SIGTERM
    or Ctrl+C; both drain the requests in flight and return normally (exit status 0)."""
    import signal

    import torch
    import uvicorn

    from distill.deploy.runners import is_onnx_folder
    from distill.io.load import resolve

    if not cfg.get("ckpt"):
        raise ConfigError("ckpt: required, e.g. ckpt=outputs/teacher/<run> or an export folder")
    settings = Settings(int(cfg.max_batch), float(cfg.max_wait_ms), int(cfg.batch_size),
                        int(cfg.max_bytes), int(cfg.max_texts))
    port = cfg.get("port")
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"port={port!r}: expected an integer 0..65535")
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    runtime = cfg.get("runtime") or ("onnx" if is_onnx_folder(resolve(cfg.ckpt)) else "torch")
    predictor = Predictor.from_path(cfg.ckpt, runtime, cfg.get("threads"), cfg.get("threshold"),
                                    cfg.get("flat"), cfg.get("device"))
    predictor.predict(["warm up"], settings.batch_size)  # the first call pays one-off costs
    app = create_app(predictor, settings, name=str(cfg.ckpt))
    config = uvicorn.Config(app, host=str(cfg.host), port=port, log_config=None,
                            access_log=bool(cfg.get("access_log")), lifespan="on",
                            timeout_graceful_shutdown=float(cfg.drain_s))
    server = uvicorn.Server(config)
    try:  # bound here so that a taken port is the usual one-line error
        sock = listening_socket(str(cfg.host), port)
    except OSError as err:
        raise ConfigError(f"host={cfg.host} port={port}: cannot listen there ({err.strerror or err})") from None
    # uvicorn re-raises the signal that stopped it once it has drained; a handler that does
    # nothing turns that into a normal return, so a drained shutdown exits 0
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    log.info("serving %s (%s, %d labels) on http://%s:%d", cfg.ckpt, runtime,
             len(predictor.labels), cfg.host, port)
    try:
        server.run(sockets=[sock])
    except SystemExit as exit_:  # uvicorn exits when the app cannot start
        raise ConfigError(f"the server could not start (uvicorn exit status {exit_.code})") from None
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopped")
