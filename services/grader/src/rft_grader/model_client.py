"""Chat-completion calls for score_model / label_model graders.

Any OpenAI-compatible endpoint works (OpenAI, vLLM's `vllm serve`, our rollout model
behind such a server): POST {base_url}/chat/completions. Failures (connection, HTTP
status, timeout, a reply without text, a reply larger than `max_reply_bytes`) raise
ModelCallError, which becomes a per-sample MODEL_CALL error. The reply is read as it
arrives and dropped as soon as it passes the limit; a large one is decoded on a thread.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from rft_grader.limits import offload


class ModelCallError(Exception):
    """The model endpoint did not give a usable answer."""


_RETRY_STATUS = {429, 500, 502, 503, 504}
_ATTEMPTS = 2


class ModelClient:
    """Owned by the app's lifespan: `async with ModelClient(...) as client`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: float,
        max_concurrency: int,
        allow_spec_base_url: bool,
        max_reply_bytes: int = 4 * 1024**2,
    ):
        self.base_url = base_url.rstrip("/")
        self.max_reply_bytes = max_reply_bytes
        self.allow_spec_base_url = allow_spec_base_url
        self._headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout
        self._limit = asyncio.Semaphore(max_concurrency)
        self._http: httpx.AsyncClient | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.base_url) or self.allow_spec_base_url

    @property
    def disabled_reason(self) -> str:
        return "" if self.enabled else "no model endpoint configured (--model-base-url)"

    async def __aenter__(self) -> ModelClient:
        # No default headers: the operator's key goes only to the configured endpoint (chat()).
        self._http = httpx.AsyncClient(timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.aclose()

    def endpoint(self, spec_base_url: str | None) -> str:
        """The base URL a spec's calls go to; raises ModelCallError when none is allowed."""
        if spec_base_url:
            if not self.allow_spec_base_url:
                raise ModelCallError("this server does not allow per-spec base_url (--allow-spec-base-url)")
            return spec_base_url.rstrip("/")
        if not self.base_url:
            raise ModelCallError("no model endpoint configured (--model-base-url)")
        return self.base_url

    async def chat(self, base_url: str, model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
        """The assistant's reply text for one chat-completion request."""
        assert self._http is not None, "ModelClient used outside its context"
        payload = {"model": model, "messages": messages, **params}
        url = f"{base_url}/chat/completions"
        # A spec's own base_url (--allow-spec-base-url) gets no credential of the operator's:
        # it would hand the key to whoever the spec's author points at.
        headers = self._headers if base_url == self.base_url else {}
        last_error = ""
        async with self._limit:
            for attempt in range(_ATTEMPTS):
                try:
                    async with self._http.stream("POST", url, json=payload, headers=headers) as response:
                        body = await self._read(response, url)
                except httpx.HTTPError as exc:
                    last_error = f"{type(exc).__name__} calling {url}: {exc}"
                else:
                    if response.status_code == 200:
                        return await offload(len(body), _reply_text, body)
                    shown = body[:300].decode("utf-8", "replace")
                    last_error = f"{url} answered HTTP {response.status_code}: {shown}"
                    if response.status_code not in _RETRY_STATUS:
                        break
                if attempt + 1 < _ATTEMPTS:
                    await asyncio.sleep(0.2 * (attempt + 1))
        raise ModelCallError(last_error)

    async def _read(self, response: httpx.Response, url: str) -> bytes:
        """The body, or ModelCallError (not retried) once it passes max_reply_bytes."""
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_reply_bytes:
                raise ModelCallError(f"{url} sent more than {self.max_reply_bytes} bytes (model_max_reply_bytes)")
            chunks.append(chunk)
        return b"".join(chunks)


def _reply_text(body: bytes) -> str:
    try:
        content = json.loads(body)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError, RecursionError):
        shown = body[:300].decode("utf-8", "replace")
        raise ModelCallError(f"not a chat-completion answer: {shown}") from None
    if not isinstance(content, str):
        raise ModelCallError("the chat-completion answer has no text content")
    return content
