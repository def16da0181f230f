"""LLM labeling through any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, Ollama, transformers serve).

Requests run on a bounded thread pool sharing one ``httpx.Client``; each has a timeout and is retried with
exponential backoff on transport errors, timeouts, HTTP 429 and 5xx and unreadable bodies. A request that
still fails yields ``None`` and the sentence goes to the rules fallback; the run never stops on it.

Answers are constrained where the server allows: with ``response_format="json_schema"`` (the default) each
request carries :data:`~monai_vecl.labeling.prompt.LABEL_JSON_SCHEMA` and the prompt asks for JSON; vLLM,
llama.cpp server and Ollama decode under it, so every answer parses. A server that rejects the field
(HTTP 400/422 naming it) is asked again without it, and no longer sent it; a server that silently ignores it
(``transformers serve`` 5.23) answers free text, which the parser, the repair prompt and the fallback handle.
``extra_body`` is merged into every request, e.g. ``{"grammar": LABEL_GBNF}`` for llama.cpp server or
``{"structured_outputs": {"regex": LABEL_REGEX}}`` for vLLM with ``response_format="none"``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from monai_vecl.labeling.llm import Conversation, LLMLabeler
from monai_vecl.labeling.prompt import LABEL_JSON_SCHEMA
from monai_vecl.labeling.rules import RulesLabeler
from monai_vecl.labeling.screen import MAX_LABEL_CHARS

RESPONSE_FORMATS = ("json_schema", "none")

_RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class OpenAILabeler(LLMLabeler):
    """Args:
        base_url: endpoint root, e.g. ``http://127.0.0.1:8000/v1`` (``/chat/completions`` is appended).
        model: model name sent in each request (part of the cache identity).
        api_key_env: name of the environment variable holding the API key, if the server needs one.
        concurrency: requests in flight at most.
        timeout: seconds per request.
        retries: extra attempts after the first one.
        backoff: first retry delay in seconds, doubled per attempt.
        max_tokens: answer length limit (default 64 for JSON answers, 24 for codes).
        response_format: ``json_schema`` (constrain answers to the label schema) or ``none`` (plain codes).
        extra_body: fields merged into every request body (server-specific constraints, options).
        fallback: labeler for answers that stay invalid and for failed requests.
        max_chars: labeling cap.
    """

    backend = "openai"

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, concurrency: int = 4,
                 timeout: float = 60.0, retries: int = 3, backoff: float = 1.0, max_tokens: int | None = None,
                 response_format: str = "json_schema", extra_body: Mapping[str, Any] | None = None,
                 fallback: RulesLabeler | None = None, max_chars: int = MAX_LABEL_CHARS) -> None:
        if response_format not in RESPONSE_FORMATS:
            raise ValueError(f"response_format must be one of {RESPONSE_FORMATS}, got {response_format!r}")
        super().__init__(fallback, "json" if response_format == "json_schema" else "codes", max_chars)
        if concurrency < 1 or retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError("need concurrency >= 1, retries >= 0, timeout > 0, backoff >= 0")
        headers = {}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ValueError(f"environment variable {api_key_env} (API key) is not set")
            headers["Authorization"] = f"Bearer {key}"
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.concurrency = concurrency
        self.retries = retries
        self.backoff = backoff
        self.max_tokens = max_tokens or (64 if response_format == "json_schema" else 24)
        self.response_format = response_format
        self.extra_body = dict(extra_body or {})
        self.schema_supported: bool | None = None if response_format == "json_schema" else False
        self.schema_rejections = 0
        self.failed_requests = 0
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=timeout, headers=headers,
                                    limits=httpx.Limits(max_connections=concurrency))

    @property
    def identity(self) -> str:
        return f"openai/{self.model}/{self.prompt_identity}"

    def complete(self, conversations: Sequence[Conversation]) -> list[str | None]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._request, conversations))

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def _body(self, messages: Conversation) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": 0,
                                "max_tokens": self.max_tokens}
        if self.schema_supported is not False and self.response_format == "json_schema":
            body["response_format"] = LABEL_JSON_SCHEMA
        body.update(self.extra_body)
        return body

    def _post(self, body: dict) -> httpx.Response | None:
        """One POST of ``body``; None when the transport failed (retried like a 5xx)."""
        try:
            return self._client.post(self.url, json=body)
        except httpx.HTTPError:
            return None

    def _schema_rejected(self, body: dict, response: httpx.Response) -> bool:
        """True when the server refused the JSON-schema ``response_format``; it is then left out from now on."""
        if not (response.status_code in (400, 422) and "response_format" in body
                and "response_format" in response.text):
            return False
        with self._lock:
            self.schema_supported = False
            self.schema_rejections += 1
        return True

    def _request(self, messages: Conversation) -> str | None:
        body = self._body(messages)
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            response = self._post(body)
            if response is not None and self._schema_rejected(body, response):
                body = self._body(messages)  # asked again at once, without the schema: not a failed attempt
                response = self._post(body)
            if response is None or response.status_code in _RETRY_STATUS:
                continue
            if response.status_code != 200:
                break  # a client error will not change on retry
            try:
                content = response.json()["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                continue
            if isinstance(content, str):
                return content
        self.failed_requests += 1
        return None
