"""LLM labeling through any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, Ollama, ...).

Requests run on a bounded thread pool sharing one ``httpx.Client``; each has a timeout and is retried with
exponential backoff on transport errors, timeouts, HTTP 429 and 5xx and unreadable bodies. A request that
still fails yields ``None`` and the sentence goes to the rules fallback; the run never stops on it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx

from monai_vecl.labeling.llm import Conversation, LLMLabeler
from monai_vecl.labeling.prompt import PROMPT_VERSION
from monai_vecl.labeling.rules import RulesLabeler

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
        max_tokens: answer length limit.
        fallback: labeler for answers that stay invalid and for failed requests.
    """

    backend = "openai"

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, concurrency: int = 4,
                 timeout: float = 60.0, retries: int = 3, backoff: float = 1.0, max_tokens: int = 24,
                 fallback: RulesLabeler | None = None) -> None:
        super().__init__(fallback)
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
        self.max_tokens = max_tokens
        self.failed_requests = 0
        self._client = httpx.Client(timeout=timeout, headers=headers,
                                    limits=httpx.Limits(max_connections=concurrency))

    @property
    def identity(self) -> str:
        return f"openai/{self.model}/{PROMPT_VERSION}"

    def complete(self, conversations: Sequence[Conversation]) -> list[str | None]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._request, conversations))

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def _request(self, messages: Conversation) -> str | None:
        body = {"model": self.model, "messages": messages, "temperature": 0, "max_tokens": self.max_tokens}
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self._client.post(self.url, json=body)
            except httpx.HTTPError:
                continue
            if response.status_code in _RETRY_STATUS:
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
