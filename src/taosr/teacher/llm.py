"""LLM teachers for Stage 1: an LLM, prompted with retrieved atomic rules, explains the gold label.

TaoSR1 has a strong LLM (DeepSeek-R1) write five-step reasoning that must end in the known label.
Every LLM teacher keeps `Teacher.reason(record) -> Reasoning | None` and adds
`outcome(record) -> Outcome` (status ok / inconsistent / failed, with the reason) for `taosr.teacher.cot`:

* `LLMTeacher`: the loop they share. A reasoning whose conclusion (`labels.conclusion_of`) differs
  from the gold level is rejected and asked again (attempt 1, 2, ... with temperature > 0), up to
  `max_attempts` in all. The prompt and the checks on an answer are in `taosr.teacher.prompt`.
* `LocalTeacher` (here): a local transformers model (chat template when the tokenizer has one).
* `OpenAITeacher` (`taosr.teacher.http`): any OpenAI-compatible chat-completions server.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..generation import generate_texts
from ..kb.rules import Rule
from ..modeling import load_model
from ..records import Record
from .prompt import Outcome, build_teacher_prompt, check
from .reasoning import Reasoning
from .retrieval import RuleRetriever


class LLMTeacher:
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


def chat_prompt_text(tokenizer, messages: list[dict]) -> str:
    """The chat template's rendering when the tokenizer has one, else `role: content` blocks."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "".join(f"{m['role']}:\n{m['content']}\n\n" for m in messages) + "assistant:\n"


class LocalTeacher(LLMTeacher):
    """Teacher on a local HF causal LM (`taosr.modeling.load_model` + `taosr.generation.generate_texts`)."""

    def __init__(self, model_dir: str | Path, retriever: RuleRetriever | None = None, k: int = 3,
                 max_attempts: int = 2, max_new_tokens: int = 256, retry_temperature: float = 0.7,
                 batch_size: int = 8, seed: int = 0, model=None, tokenizer=None):
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
