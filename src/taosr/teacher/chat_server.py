"""A small OpenAI-compatible chat server, so that `taosr cot` can run against a local teacher.

`create_chat_app(backend)` serves `POST /v1/chat/completions` (non-streaming, one choice) and
`GET /v1/models`. Backends:

* `RuleBackend`: deterministic and model-free. It reads the pair that `build_teacher_prompt` embeds
  in the user message and answers with the rule-based teacher's five steps, one per line. It is the
  offline stand-in for a teacher LLM (synthetic benchmark, tests).
* `TransformersBackend`: a local HF causal LM; greedy at temperature 0, seeded sampling above.

`serve_chat` runs it with uvicorn on 127.0.0.1 by default; `BackgroundServer` runs it in a thread
on a free port (scripts and tests).
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ..generation import generate_texts
from ..modeling import load_model
from .llm import chat_prompt_text
from .prompt import extract_pair
from .reasoning import RuleTeacher


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int


class ChatBackend(Protocol):
    name: str

    def complete(self, messages: list[dict], temperature: float, max_tokens: int, seed: int | None) -> Completion: ...


def _words(text: str) -> int:
    return len(text.split())


class RuleBackend:
    """Answers a teacher prompt with `RuleTeacher`'s reasoning for the embedded pair, one step a line.

    Like an obedient LLM it cites the rules it applied, in brackets at the end of the attribute step.
    """

    name = "taosr-rules"
    _STEP_BREAKS = (". item: ", ". category: ", ". attributes: ", ". judgement: ")

    def __init__(self, teacher: RuleTeacher | None = None):
        self.teacher = teacher or RuleTeacher()

    def complete(self, messages: list[dict], temperature: float = 0.0, max_tokens: int = 512,
                 seed: int | None = None) -> Completion:
        prompt_words = sum(_words(str(m.get("content", ""))) for m in messages)
        record = extract_pair(messages)
        if record is None:
            text = "I cannot find a (query, item) pair in a ```json block of the prompt."
        else:
            reasoning = self.teacher.reason(record)
            if reasoning is None:
                text = f"The query {record.query!r} is outside the rule grammar; I cannot judge it."
            else:
                text = reasoning.text.replace(". judgement: ", f" [{', '.join(reasoning.rule_ids)}]. judgement: ", 1)
                for brk in self._STEP_BREAKS:
                    text = text.replace(brk, brk.replace(". ", ".\n", 1), 1)
        return Completion(text, prompt_words, _words(text))


class TransformersBackend:
    """A local HF causal LM behind the chat endpoint. One generation at a time (a lock)."""

    def __init__(self, model_dir: str | Path, max_new_tokens: int = 256, model=None, tokenizer=None):
        if model is None or tokenizer is None:
            model, tokenizer = load_model(model_dir, device="auto")
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens
        self.name = Path(str(model_dir)).name or "local"
        self._lock = threading.Lock()

    def complete(self, messages: list[dict], temperature: float = 0.0, max_tokens: int = 256,
                 seed: int | None = None) -> Completion:
        ids = self.tokenizer(chat_prompt_text(self.tokenizer, messages), add_special_tokens=False)["input_ids"]
        n_new = max(1, min(max_tokens or self.max_new_tokens, self.max_new_tokens))
        sample = temperature is not None and temperature > 0
        with self._lock:
            text = generate_texts(self.model, self.tokenizer, [ids], max_new_tokens=n_new, batch_size=1,
                                  do_sample=sample, temperature=temperature if sample else 1.0,
                                  seed=seed if seed is not None else 0, desc="chat")[0][0]
        n_out = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return Completion(text, len(ids), n_out)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[ChatMessage] = Field(..., min_length=1)
    temperature: float | None = Field(0.0, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    n: int = Field(1, ge=1, le=1, description="Only one choice is supported.")
    stream: bool = False


def _text(content: str | list[dict[str, Any]] | None) -> str:
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content or ""


def create_chat_app(backend: ChatBackend, api_key: str | None = None) -> FastAPI:
    """OpenAI-compatible app over `backend`. `app.state.requests` counts completion requests served."""
    app = FastAPI(title="taosr chat", docs_url=None, redoc_url=None)
    app.state.requests = 0
    app.state.backend = backend
    lock = threading.Lock()

    def _auth(request: Request) -> None:
        if api_key is not None and request.headers.get("authorization") != f"Bearer {api_key}":
            raise HTTPException(status_code=401, detail="invalid or missing API key")

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        return JSONResponse(status_code=exc.status_code,
                            content={"error": {"message": str(exc.detail), "type": "invalid_request_error"}})

    @app.get("/v1/models")
    def models(request: Request) -> dict:
        _auth(request)
        return {"object": "list", "data": [{"id": backend.name, "object": "model", "owned_by": "taosr"}]}

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest, request: Request):  # sync: runs in the threadpool, generation blocks
        _auth(request)
        if req.stream:
            raise HTTPException(status_code=400, detail="streaming is not supported")
        with lock:
            app.state.requests += 1
        messages = [{"role": m.role, "content": _text(m.content)} for m in req.messages]
        max_tokens = req.max_completion_tokens or req.max_tokens or 512
        try:
            out = backend.complete(messages, req.temperature or 0.0, max_tokens, req.seed)
        except Exception as e:  # noqa: BLE001 -- one bad request must not kill the server
            return JSONResponse(status_code=500, content={"error": {"message": f"{type(e).__name__}: {e}",
                                                                    "type": "server_error"}})
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
            "model": req.model or backend.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": out.text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens,
                      "total_tokens": out.prompt_tokens + out.completion_tokens},
        }

    return app


def serve_chat(backend: ChatBackend, host: str = "127.0.0.1", port: int = 8001, api_key: str | None = None) -> None:
    import uvicorn

    uvicorn.run(create_chat_app(backend, api_key=api_key), host=host, port=port, log_level="warning")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BackgroundServer:
    """`with BackgroundServer(app) as base_url: ...` -- a real uvicorn server in a daemon thread."""

    def __init__(self, app, host: str = "127.0.0.1", port: int | None = None, start_timeout_s: float = 10.0):
        import uvicorn

        self.app, self.host, self.port = app, host, port or free_port(host)
        self.start_timeout_s = start_timeout_s
        config = uvicorn.Config(app, host=host, port=self.port, log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"chat server did not start on {self.base_url}")
            time.sleep(0.02)
        return self.base_url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
