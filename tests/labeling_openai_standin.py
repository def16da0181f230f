"""A tiny OpenAI-compatible chat server on 127.0.0.1 for fault injection in the labeling tests.

The real-server tests (tests/test_labeling_server.py) run ``transformers serve`` with a packaged model; this
stand-in exists only to produce the faults a real server cannot be made to produce on demand. It answers
with the rules labeler's labels (as ``{"labels": [...]}`` when the request carries a ``response_format``,
as codes otherwise), and misbehaves on purpose when the sentence contains a marker:
``MALFORMED`` (prose, twice), ``REPAIRABLE`` (prose, then a valid answer to the repair prompt),
``FAIL`` (HTTP 500 always), ``FLAKY`` (HTTP 503 on the first try), ``GARBAGE`` (a body that is not JSON),
``SLOW`` (answers after the client's timeout), ``OUTSIDE`` (codes outside the taxonomy, every time).
With ``reject_schema=True`` it answers HTTP 400 to any request that carries a ``response_format``, as
servers without structured output do.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from monai_vecl.labeling.rules import RulesLabeler


class StandIn:
    """Start with ``with StandIn(delay=...) as server:``; ``server.url`` is the ``/v1`` root."""

    def __init__(self, delay: float = 0.0, slow_seconds: float = 2.0, reject_schema: bool = False) -> None:
        self.delay = delay
        self.slow_seconds = slow_seconds
        self.reject_schema = reject_schema
        self.requests: Counter[str] = Counter()
        self.sentences: list[str] = []
        self.with_schema = 0
        self.schema_rejected = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._rules = RulesLabeler()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> StandIn:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, body: dict) -> tuple[int, bytes]:
        messages = body["messages"]
        sentence = re.search(r"Sentence: (.*)\nAnswer:", messages[1]["content"]).group(1)
        repair = len(messages) > 2
        schema = "response_format" in body
        with self._lock:
            if schema and self.reject_schema:
                self.schema_rejected += 1
                return 400, b'{"error": {"message": "unsupported parameter: response_format"}}'
            self.with_schema += schema
            self.requests[sentence] += 1
            self.sentences.append(sentence)
            attempt = self.requests[sentence]
        if "FAIL" in sentence or ("FLAKY" in sentence and attempt == 1):
            return 503 if "FLAKY" in sentence else 500, b'{"error": "down"}'
        if "GARBAGE" in sentence:
            return 200, b"<html>not json"
        if "SLOW" in sentence:
            time.sleep(self.slow_seconds)
        if "MALFORMED" in sentence or ("REPAIRABLE" in sentence and not repair):
            content = "The sentence talks about the lungs."
        elif "REPAIRABLE" in sentence:
            content = '{"labels": ["2+"]}' if schema else "2+"
        elif "OUTSIDE" in sentence:
            content = '{"labels": ["1+", "99+", "26"]}' if schema else "1+, 99+, 26"
        elif schema:
            content = json.dumps({"labels": list(self._rules.labels_of(sentence))})
        else:
            content = ", ".join(self._rules.labels_of(sentence))
        return 200, json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}).encode()

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                with standin._lock:
                    standin.in_flight += 1
                    standin.max_in_flight = max(standin.max_in_flight, standin.in_flight)
                try:
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    if self.path != "/v1/chat/completions":
                        status, payload = 404, b"{}"
                    else:
                        time.sleep(standin.delay)
                        status, payload = standin.answer(body)
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)
                finally:
                    with standin._lock:
                        standin.in_flight -= 1

            def log_message(self, *args) -> None:
                pass

        return Handler
