"""Shared machinery of the fake LLM servers: faults, bookkeeping, a bounded threaded server.

A fake answers like an obedient model: it reads the requested rows from the prompt's targets
block (``- 3 × label=Question, category=yes_no``) and writes that many rows, each text unique
and tagged with the response id, so a test can trace every stored or quarantined row back to
the exact answer it came from. Faults are drawn per request from a seeded RNG.

Every answer the server *delivered* (status 200, body fully written, not a deliberate
timeout) is recorded in :attr:`FakeLLMServer.delivered` with the items it contained; requests
that were deliberately left hanging are in :attr:`FakeLLMServer.abandoned`.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_TARGET = re.compile(r"-\s*(\d+)\s*×\s*label=([A-Za-z0-9_]+)(?:,\s*category=([A-Za-z0-9_]+))?")


@dataclass
class Faults:
    """What can go wrong, per request (probabilities) or per key.

    Parameters
    ----------
    latency_s : (low, high)
        Uniform delay before answering.
    p_429, p_500 : float
        Probability of a rate-limit or server error answer.
    retry_delay_s : float or None
        Delay put into 429 answers (``RetryInfo`` / ``Retry-After``); ``None``: no delay given.
    storm : (first, count)
        Requests number ``first .. first+count-1`` (in arrival order) all get 429.
    p_timeout : float
        Probability of sleeping ``hang_s`` before answering (beyond the client's timeout).
    p_malformed : float
        Probability of an answer that is not JSON at all (truncated).
    p_fenced : float
        Probability of JSON wrapped in markdown fences and prose (recoverable).
    p_corrupt_body : float
        Probability of an HTTP 200 whose body is not JSON.
    p_wrong_label, p_bad_row : float
        Per row: a label outside the enum; an empty or far too long text.
    revoked : set of str
        Keys answered with 400 API_KEY_INVALID (Gemini) / 401 (OpenAI).
    rpm_per_key : float or None
        Per-key requests per sliding 60 s window; beyond it: 429 with the exact wait.
    """

    latency_s: tuple[float, float] = (0.0, 0.0)
    p_429: float = 0.0
    p_500: float = 0.0
    retry_delay_s: float | None = 0.2
    storm: tuple[int, int] | None = None
    p_timeout: float = 0.0
    hang_s: float = 3.0
    p_malformed: float = 0.0
    p_fenced: float = 0.0
    p_corrupt_body: float = 0.0
    p_wrong_label: float = 0.0
    p_bad_row: float = 0.0
    revoked: set[str] = field(default_factory=set)
    rpm_per_key: float | None = None
    window_s: float = 60.0
    #: Faults forced on given requests (arrival order from 0), so that a test can rely on
    #: them happening: ``{2: "500", 5: "timeout"}``; kinds as in ``Faults.KINDS``.
    force: dict[int, str] = field(default_factory=dict)

    KINDS = ("429", "500", "timeout", "malformed", "fenced", "corrupt")


@dataclass
class Delivered:
    response_id: str
    key: str
    kind: str  # ok | fenced | malformed
    items: list[dict[str, Any]]


class FakeLLMServer:
    """Base of the fake servers: start with ``with Fake(faults) as srv: srv.base_url``.

    The server binds 127.0.0.1 on a free port and shuts itself down after ``lifetime_s``
    even if a test forgets to stop it.
    """

    def __init__(self, faults: Faults | None = None, *, seed: int = 0,
                 lifetime_s: float = 300.0, echo_secrets: bool = False) -> None:
        self.faults = faults or Faults()
        #: Hostile: every error message echoes the key, the request line (with its query) and
        #: the Authorization header, as some servers do.
        self.echo_secrets = echo_secrets
        self.rng = random.Random(seed)
        self.lifetime_s = lifetime_s
        self.lock = threading.Lock()
        self.seq = 0
        self.delivered: dict[str, Delivered] = {}
        self.abandoned: list[str] = []
        self.calls: list[tuple[float, str, int]] = []  # (time answered, key, status)
        self.arrivals: list[tuple[float, str]] = []  # (time received, key)
        self.cooldowns: list[tuple[str, float, float]] = []  # (key, issued at, delay)
        self.window: dict[str, deque[float]] = defaultdict(deque)
        self.requests_seen: list[dict[str, Any]] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> FakeLLMServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                server._handle(self, body)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # clients that hang up (timeouts, kills) are part of the tests

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})
        self._thread.start()
        self._timer = threading.Timer(self.lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._httpd is not None:
            httpd, self._httpd = self._httpd, None
            httpd.shutdown()
            httpd.server_close()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    # -- to be provided by subclasses --------------------------------------------------

    def key_of(self, handler: BaseHTTPRequestHandler) -> str:
        raise NotImplementedError

    def prompt_of(self, request: dict[str, Any]) -> str:
        raise NotImplementedError

    def labels_of(self, request: dict[str, Any]) -> list[str]:
        raise NotImplementedError

    def success_body(self, response_id: str, answer: str, tokens_in: int,
                     tokens_out: int) -> dict[str, Any]:
        raise NotImplementedError

    def error(self, status: int, kind: str, retry_s: float | None
              ) -> tuple[dict[str, Any], dict[str, str]]:
        raise NotImplementedError

    # -- request handling --------------------------------------------------------------

    def _send(self, handler: BaseHTTPRequestHandler, status: int, payload: bytes,
              headers: dict[str, str] | None = None) -> bool:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json; charset=UTF-8")
            handler.send_header("Content-Length", str(len(payload)))
            for k, v in (headers or {}).items():
                handler.send_header(k, v)
            handler.end_headers()
            handler.wfile.write(payload)
            handler.wfile.flush()
            return True
        except (BrokenPipeError, ConnectionResetError, OSError):
            return False

    def _send_error(self, handler: BaseHTTPRequestHandler, key: str, status: int, kind: str,
                    retry_s: float | None = None) -> None:
        body, headers = self.error(status, kind, retry_s)
        if self.echo_secrets and isinstance(body.get("error"), dict):
            body["error"]["message"] = (
                f"{body['error'].get('message', '')} [you sent key {key} with "
                f"{handler.command} {handler.path}, authorization "
                f"{handler.headers.get('Authorization')}, x-goog-api-key "
                f"{handler.headers.get('x-goog-api-key')}]")
        with self.lock:
            self.calls.append((time.monotonic(), key, status))
            if status == 429 and retry_s is not None:
                self.cooldowns.append((key, time.monotonic(), retry_s))
        self._send(handler, status, json.dumps(body).encode(), headers)

    def _rate_limit(self, key: str, now: float) -> float | None:
        """Seconds the key must wait under the per-key window, or None if it may go."""
        f = self.faults
        if not f.rpm_per_key:
            return None
        q = self.window[key]
        while q and q[0] <= now - f.window_s:
            q.popleft()
        if len(q) >= f.rpm_per_key:
            return max(0.001, q[0] + f.window_s - now)
        q.append(now)
        return None

    def _handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        f = self.faults
        key = self.key_of(handler)
        request = json.loads(body or b"{}")
        with self.lock:
            seq = self.seq
            self.seq += 1
            self.arrivals.append((time.monotonic(), key))
            self.requests_seen.append(request)
            r = self.rng.random
            draw = {name: r() for name in ("lat", *Faults.KINDS)}
            forced = f.force.get(seq)
            if forced is not None:
                assert forced in Faults.KINDS, f"unknown fault kind {forced!r}"
                draw[forced] = -1.0  # below any probability, even 0
            wait = self._rate_limit(key, time.monotonic()) if key not in f.revoked else None
        if key in f.revoked:
            self._send_error(handler, key, *self.revoked_status())
            return
        if wait is not None:
            self._send_error(handler, key, 429, "rate", round(wait, 3))
            return
        in_storm = f.storm is not None and f.storm[0] <= seq < f.storm[0] + f.storm[1]
        if in_storm or draw["429"] < f.p_429:
            self._send_error(handler, key, 429, "rate", f.retry_delay_s)
            return
        lo, hi = f.latency_s
        time.sleep(lo + (hi - lo) * draw["lat"])
        if draw["500"] < f.p_500:
            self._send_error(handler, key, 500, "internal")
            return
        response_id = f"r{seq:06d}"
        if draw["timeout"] < f.p_timeout:
            with self.lock:
                self.abandoned.append(response_id)
                self.calls.append((time.monotonic(), key, 0))
            time.sleep(f.hang_s)
            return  # the client gave up long ago; close without an answer
        if draw["corrupt"] < f.p_corrupt_body:
            with self.lock:
                self.calls.append((time.monotonic(), key, 200))
            self._send(handler, 200, b'{"candidates": [ this is not json')
            return
        items = self._items(request, response_id)
        kind = "ok"
        answer = json.dumps(self.wrap_items(items), ensure_ascii=False)
        if draw["malformed"] < f.p_malformed:
            kind, answer = "malformed", answer[: max(5, len(answer) // 2)]
        elif draw["fenced"] < f.p_fenced:
            kind = "fenced"
            answer = f"好的，下面是数据：\n```json\n{answer}\n```\n希望对你有帮助！"
        payload = self.success_body(response_id, answer, 50 + len(self.prompt_of(request)) // 2,
                                    len(answer) // 2)
        with self.lock:
            self.calls.append((time.monotonic(), key, 200))
        if self._send(handler, 200, json.dumps(payload, ensure_ascii=False).encode()):
            with self.lock:
                self.delivered[response_id] = Delivered(response_id, key, kind, items)

    def revoked_status(self) -> tuple[int, str]:
        return 400, "revoked"

    def text_for(self, response_id: str, i: int, label: str, category: str | None) -> str:
        """The text of row ``i`` of an answer: unique and traceable by default (subclasses
        write realistic or repeating texts)."""
        return f"样本{response_id}-{i:03d} 今天要不要带伞"

    def wrap_items(self, items: list[dict[str, Any]]) -> Any:
        return items

    def _items(self, request: dict[str, Any], response_id: str) -> list[dict[str, Any]]:
        prompt = self.prompt_of(request)
        wanted = [(lab, cat, int(k)) for k, lab, cat in _TARGET.findall(prompt)]
        if not wanted:
            labels = self.labels_of(request) or ["A", "B"]
            wanted = [(labels[i % len(labels)], None, 1) for i in range(5)]
        items = []
        with self.lock:
            draws = [(self.rng.random(), self.rng.random()) for _ in range(sum(w[2] for w in
                                                                              wanted))]
        i = 0
        for label, cat, k in wanted:
            for _ in range(k):
                text = self.text_for(response_id, i, label, cat)
                item: dict[str, Any] = {"text": text, "label": label, "category": cat or "none"}
                wrong, bad = draws[i]
                if wrong < self.faults.p_wrong_label:
                    item["label"] = "Maybe"
                elif bad < self.faults.p_bad_row:
                    item["text"] = "" if i % 2 else text + "长" * 400
                items.append(item)
                i += 1
        return items

    # -- assertions helpers ------------------------------------------------------------

    def requests_by_key(self) -> dict[str, list[tuple[float, int]]]:
        out: dict[str, list[tuple[float, int]]] = defaultdict(list)
        for t, key, status in self.calls:
            out[key].append((t, status))
        return dict(out)
