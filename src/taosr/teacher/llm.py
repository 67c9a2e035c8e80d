"""LLM teachers for Stage 1: an LLM, prompted with retrieved atomic rules, explains the gold label.

TaoSR1 has a strong LLM (DeepSeek-R1) write five-step reasoning that must end in the known label.
Both teachers here keep `Teacher.reason(record) -> Reasoning | None` and add
`outcome(record) -> Outcome` (status ok / inconsistent / failed, with the reason) for `taosr.cot`:

* `OpenAITeacher`: any OpenAI-compatible `POST {base_url}/v1/chat/completions` (a hosted API, vLLM,
  or `taosr.chat_server`). `timeout_s` is a deadline for each whole request (a server that trickles
  bytes is abandoned at it, not only one that stays silent). Bounded retries with exponential backoff on timeouts, connection errors,
  429 and 5xx; a SQLite cache keyed by (model, messages, temperature, max_tokens, attempt) so that a
  rerun never pays for a request twice; a thread pool of `concurrency` requests.
* `LocalTeacher`: a local transformers model (chat template when the tokenizer has one).

A reasoning whose conclusion (`conclusion_of`) differs from the gold level is rejected and asked
again (attempt 1, 2, ... with temperature > 0), up to `max_attempts` in all. The prompt and the
checks on an answer are in `taosr.teacher_prompt` (re-exported here).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .records import Record
from .retrieval import RuleRetriever
from .rules import Rule
from .teacher import Reasoning
from .teacher_prompt import Outcome, build_teacher_prompt, check

log = logging.getLogger(__name__)

class _Consistency:
    """Shared loop: retrieve rules, ask up to `max_attempts` times, keep the first consistent answer.

    `stats`: requests (HTTP requests / generations), cache_hits, retries (HTTP retries), http_errors,
    inconsistent (answers rejected, one per attempt), and per pair: accepted (ok), rejected (gave up
    as inconsistent) and failed (no answer: errors, no gold label).
    """

    name = "teacher"
    max_attempts = 2
    concurrency = 1

    def _init_common(self, retriever: RuleRetriever | None, k: int, max_attempts: int) -> None:
        self.retriever, self.k, self.max_attempts = retriever, k, max(1, max_attempts)
        self.stats = {key: 0 for key in ("requests", "cache_hits", "retries", "http_errors",
                                         "inconsistent", "accepted", "rejected", "failed")}
        self._lock = threading.Lock()

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def _rules(self, record: Record) -> list[Rule]:
        if self.retriever is None:
            with self._lock:
                if self.retriever is None:
                    self.retriever = RuleRetriever()
        return self.retriever.rules_for(record, self.k)

    def _known(self) -> set[str] | None:
        return set(self.retriever.kb.rules) if self.retriever is not None else None

    def prompt(self, record: Record) -> tuple[list[dict], tuple[str, ...]]:
        rules = self._rules(record)
        return build_teacher_prompt(record, rules, record.label), tuple(r.id for r in rules)

    def _ask(self, messages: list[dict], attempt: int) -> tuple[str | None, str | None]:
        """(answer, None) or (None, why it failed). Subclasses implement."""
        raise NotImplementedError

    def outcome(self, record: Record) -> Outcome:
        if record.label is None:
            self._count("failed")
            return Outcome("failed", reason="no gold label")
        messages, rule_ids = self.prompt(record)
        text, why = None, None
        for attempt in range(self.max_attempts):
            try:
                text, err = self._ask(messages, attempt)
            except Exception as e:  # noqa: BLE001 -- recorded as a failed pair with its reason, never lost
                text, err = None, f"{type(e).__name__}: {e}"
            if text is None:
                self._count("failed")
                return Outcome("failed", reason=err, attempts=attempt + 1, rule_ids=rule_ids)
            reasoning, why = check(text, record.label, rule_ids, self._known())
            if reasoning is not None:
                self._count("accepted")
                return Outcome("ok", reasoning, text=text, attempts=attempt + 1, rule_ids=rule_ids)
            self._count("inconsistent")
        self._count("rejected")
        return Outcome("inconsistent", reason=f"{why} (after {self.max_attempts} attempts)", text=text,
                       attempts=self.max_attempts, rule_ids=rule_ids)

    def outcome_many(self, records: list[Record]) -> list[Outcome]:
        if self.concurrency <= 1 or len(records) <= 1:
            return [self.outcome(r) for r in records]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self.outcome, records))

    def reason(self, record: Record) -> Reasoning | None:
        return self.outcome(record).reasoning

    def reason_many(self, records: list[Record]) -> list[Reasoning | None]:
        return [o.reasoning for o in self.outcome_many(records)]


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


class OpenAITeacher(_Consistency):
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
        import httpx

        err = "no request made"
        for i in range(self.max_retries + 1):
            if i:
                self._count("retries")
            self._count("requests")
            wait = None
            try:
                resp = self._send(body)
            except (httpx.TimeoutException, TimeoutError) as e:
                err = f"timeout: no complete answer within {self.timeout_s:g}s ({type(e).__name__})"
            except httpx.TransportError as e:
                err = f"connection error: {type(e).__name__}: {e}"
            else:
                if resp.status_code == 200:
                    try:
                        return _content(json.loads(resp.content)), None
                    except (ValueError, KeyError, IndexError, TypeError) as e:
                        self._count("http_errors")
                        return None, f"malformed response: {type(e).__name__}: {e}"
                err = f"http {resp.status_code}: {resp.text[:200]}"
                if resp.status_code not in RETRY_STATUS:
                    self._count("http_errors")
                    return None, err
                wait = _retry_after(resp)
            self._count("http_errors")
            if i < self.max_retries:
                delay = min(self.max_backoff_s, self.backoff_s * (2 ** i))
                time.sleep(min(self.max_backoff_s, wait) if wait is not None else delay)
        return None, f"{err} (gave up after {self.max_retries + 1} tries)"


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


def chat_prompt_text(tokenizer, messages: list[dict]) -> str:
    """The chat template's rendering when the tokenizer has one, else `role: content` blocks."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "".join(f"{m['role']}:\n{m['content']}\n\n" for m in messages) + "assistant:\n"


class LocalTeacher(_Consistency):
    """Teacher on a local HF causal LM (`taosr.modeling.load_model` + `taosr.scoring.generate_texts`)."""

    def __init__(self, model_dir: str | Path, retriever: RuleRetriever | None = None, k: int = 3,
                 max_attempts: int = 2, max_new_tokens: int = 256, retry_temperature: float = 0.7,
                 batch_size: int = 8, seed: int = 0, model=None, tokenizer=None):
        from .modeling import load_model

        self._init_common(retriever, k, max_attempts)
        if model is None or tokenizer is None:
            model, tokenizer = load_model(model_dir, device="auto")
        self.model, self.tokenizer = model, tokenizer
        self.name = f"local:{Path(str(model_dir)).name}"
        self.max_new_tokens, self.retry_temperature = max_new_tokens, retry_temperature
        self.batch_size, self.seed = batch_size, seed

    def _ids(self, messages: list[dict]) -> list[int]:
        return self.tokenizer(chat_prompt_text(self.tokenizer, messages), add_special_tokens=False)["input_ids"]

    def _generate(self, prompts: list[list[int]], attempt: int) -> list[str]:
        from .scoring import generate_texts

        self._count("requests", len(prompts))
        outs = generate_texts(self.model, self.tokenizer, prompts, max_new_tokens=self.max_new_tokens,
                              batch_size=self.batch_size, do_sample=attempt > 0,
                              temperature=self.retry_temperature, seed=self.seed + attempt, desc="teacher")
        return [o[0] if o else "" for o in outs]

    def _ask(self, messages: list[dict], attempt: int) -> tuple[str | None, str | None]:
        return self._generate([self._ids(messages)], attempt)[0], None

    def outcome_many(self, records: list[Record]) -> list[Outcome]:
        """Batched: every attempt generates for all still-unresolved labelled pairs at once."""
        out: list[Outcome | None] = [None] * len(records)
        todo, prompts = [], {}
        for i, r in enumerate(records):
            if r.label is None:
                self._count("failed")
                out[i] = Outcome("failed", reason="no gold label")
            else:
                messages, rule_ids = self.prompt(r)
                prompts[i] = (self._ids(messages), rule_ids)
                todo.append(i)
        last: dict[int, tuple[str, str]] = {}
        for attempt in range(self.max_attempts):
            if not todo:
                break
            texts = self._generate([prompts[i][0] for i in todo], attempt)
            still = []
            for i, text in zip(todo, texts):
                reasoning, why = check(text, records[i].label, prompts[i][1], self._known())
                if reasoning is not None:
                    self._count("accepted")
                    out[i] = Outcome("ok", reasoning, text=text, attempts=attempt + 1, rule_ids=prompts[i][1])
                else:
                    self._count("inconsistent")
                    last[i] = (text, why)
                    still.append(i)
            todo = still
        for i in todo:
            self._count("rejected")
            text, why = last[i]
            out[i] = Outcome("inconsistent", reason=f"{why} (after {self.max_attempts} attempts)", text=text,
                             attempts=self.max_attempts, rule_ids=prompts[i][1])
        return out
