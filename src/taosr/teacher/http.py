"""`OpenAITeacher`: the LLM teacher over any OpenAI-compatible `POST {base_url}/v1/chat/completions`.

A hosted API, vLLM, or `taosr.teacher.chat_server`. `timeout_s` is a deadline for each whole request
(a server that trickles bytes is abandoned at it, not only one that stays silent). Timeouts,
connection errors, 429 and 5xx are retried a bounded number of times with exponential backoff, or
after the server's Retry-After (tenacity); a SQLite cache keyed by (model, messages, temperature,
max_tokens, attempt) means a rerun never pays for a request twice; a thread pool runs `concurrency`
requests at a time. The consistency loop around the requests is `taosr.teacher.llm.LLMTeacher`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .llm import LLMTeacher
from .retrieval import RuleRetriever


class ResponseCache:
    """SQLite key -> answer text; thread-safe; only successful answers are stored."""

    def __init__(self, path: Path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, text TEXT NOT NULL, created REAL)")
        self._db.commit()
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT text FROM answers WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, text: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?)", (key, text, time.time()))
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()


def cache_key(model: str, messages: list[dict], temperature: float, max_tokens: int, attempt: int) -> str:
    blob = json.dumps({"model": model, "messages": messages, "temperature": temperature,
                       "max_tokens": max_tokens, "attempt": attempt}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


MAX_ANSWER_BYTES = 4_000_000  # a chat answer larger than this is an error, not read on
RETRY_STATUS = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))


class OpenAITeacher(LLMTeacher):
    """Teacher over an OpenAI-compatible chat-completions endpoint (see the module docstring)."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, concurrency: int = 4,
                 timeout_s: float = 30.0, max_retries: int = 3, backoff_s: float = 0.5, cache_path: Path | None = None,
                 retriever: RuleRetriever | None = None, k: int = 3, max_attempts: int = 2,
                 temperature: float = 0.0, retry_temperature: float = 0.7, max_tokens: int = 512,
                 max_backoff_s: float = 8.0):
        self._init_common(retriever, k, max_attempts)
        base = base_url.rstrip("/")
        self.url = (base[:-3] if base.endswith("/v1") else base) + "/v1/chat/completions"
        self.model, self.name = model, f"openai:{model}"
        self.concurrency, self.timeout_s = max(1, concurrency), timeout_s
        self.max_retries, self.backoff_s, self.max_backoff_s = max(0, max_retries), backoff_s, max_backoff_s
        self.temperature, self.retry_temperature, self.max_tokens = temperature, retry_temperature, max_tokens
        self.cache = ResponseCache(cache_path) if cache_path is not None else None
        import httpx  # the `serve` extra; imported here so that `taosr.cot` works without it

        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s), headers=headers,
                                    limits=httpx.Limits(max_connections=self.concurrency))
        self._requests = ThreadPoolExecutor(max_workers=2 * self.concurrency, thread_name_prefix="teacher-http")

    def _send(self, body: dict):
        """One request with `timeout_s` as a deadline for the whole answer (not per read): the caller stops
        waiting at the deadline, and the request's thread stops reading at its first chunk past it."""
        deadline = time.monotonic() + self.timeout_s
        future = self._requests.submit(_read_until, self._client, self.url, body, deadline)
        try:
            return future.result(timeout=self.timeout_s)
        except TimeoutError:
            future.cancel()
            raise

    def close(self) -> None:
        self._requests.shutdown(wait=False, cancel_futures=True)
        self._client.close()
        if self.cache is not None:
            self.cache.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _ask(self, messages: list[dict], attempt: int) -> tuple[str | None, str | None]:
        temperature = self.temperature if attempt == 0 else max(self.retry_temperature, 1e-3)
        key = cache_key(self.model, messages, temperature, self.max_tokens, attempt)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self._count("cache_hits")
            return hit, None
        body = {"model": self.model, "messages": messages, "temperature": temperature,
                "max_tokens": self.max_tokens, "seed": attempt, "n": 1}
        text, err = self._post(body)
        if text is not None and self.cache is not None:
            self.cache.put(key, text)
        return text, err

    def _post(self, body: dict) -> tuple[str | None, str | None]:
        """(answer text, None) or (None, why): retryable failures are retried by tenacity, up to `max_retries`."""
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

        backoff = wait_exponential(multiplier=self.backoff_s, max=self.max_backoff_s)

        def wait(state) -> float:  # the server's Retry-After when it sent one, else exponential backoff
            after = getattr(state.outcome.exception(), "retry_after", None)
            return min(self.max_backoff_s, after) if after is not None else backoff(state)

        def count_retry(state) -> None:
            if state.attempt_number > 1:
                self._count("retries")

        retrying = Retrying(stop=stop_after_attempt(self.max_retries + 1), wait=wait, before=count_retry,
                            retry=retry_if_exception_type(RetryableError), reraise=True)
        try:
            return retrying(self._try, body)
        except RetryableError as e:
            return None, f"{e} (gave up after {self.max_retries + 1} tries)"

    def _try(self, body: dict) -> tuple[str | None, str | None]:
        """One request: the answer, a final failure, or `RetryableError` (timeout, connection error, 429, 5xx)."""
        import httpx

        self._count("requests")
        try:
            resp = self._send(body)
        except (httpx.TimeoutException, TimeoutError) as e:
            self._count("http_errors")
            raise RetryableError(f"timeout: no complete answer within {self.timeout_s:g}s ({type(e).__name__})") from e
        except httpx.TransportError as e:
            self._count("http_errors")
            raise RetryableError(f"connection error: {type(e).__name__}: {e}") from e
        if resp.status_code == 200:
            try:
                return _content(json.loads(resp.content)), None
            except (ValueError, KeyError, IndexError, TypeError) as e:
                self._count("http_errors")
                return None, f"malformed response: {type(e).__name__}: {e}"
        self._count("http_errors")
        err = f"http {resp.status_code}: {resp.text[:200]}"
        if resp.status_code not in RETRY_STATUS:
            return None, err
        raise RetryableError(err, _retry_after(resp))


class RetryableError(Exception):
    """A failed request worth sending again; `retry_after`: the seconds the server asked to wait, if any."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _Answer:
    status_code: int
    headers: object  # httpx.Headers (case-insensitive)
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


def _read_until(client, url: str, body: dict, deadline: float) -> _Answer:
    """POST and read the whole answer, giving up (TimeoutError) at the first chunk past `deadline`."""
    import httpx

    with client.stream("POST", url, json=body) as resp:
        data = bytearray()
        for chunk in resp.iter_bytes():
            data += chunk
            if time.monotonic() > deadline:
                raise TimeoutError("deadline passed while reading the answer")
            if len(data) > MAX_ANSWER_BYTES:
                raise httpx.TransportError(f"answer over {MAX_ANSWER_BYTES} bytes")
        return _Answer(resp.status_code, resp.headers, bytes(data))


def _retry_after(resp) -> float | None:
    try:
        return max(0.0, float(resp.headers.get("retry-after", "")))
    except ValueError:
        return None


def _content(payload: dict) -> str:
    content = payload["choices"][0]["message"]["content"]
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise TypeError("message.content is not text")
    return content


