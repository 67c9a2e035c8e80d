"""Prompt layout and response formats (the three output orders).

A prompt is three segments, tokenized separately and concatenated, so that the instruction prefix
and the query prefix have the same token ids in training, scoring and prefix-shared serving:

    [instructions] [query: ...\\n] [item: ...\\n]  ->  response

Responses, by output order (label tokens and tags are single tokens):
    answer_only   <answer><mismatch></answer>
    think_first   <think>five steps</think><answer><mismatch></answer>
    answer_first  <answer><mismatch></answer><think>five steps</think>     (post-CoT)
"""

from __future__ import annotations

import html
import re
from typing import Literal

from pydantic import BaseModel, Field

from .labels import ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, format_answer
from .records import Record

OutputOrder = Literal["answer_only", "think_first", "answer_first"]
ORDERS: tuple[str, ...] = ("answer_only", "think_first", "answer_first")


class PromptConfig(BaseModel):
    """How a (query, item) pair is written into the prompt."""

    instructions: str = Field(
        "judge relevance: excellent, related, mismatch or irrelevant.\n",
        description="Shared instruction prefix (put retrieved rules here for large models). Must end in a newline.",
    )
    max_description_chars: int = Field(300, description="Item descriptions are cut to this many characters.")


_TAG_RE = re.compile(r"<[^>]+>")


def _clean(text: str) -> str:
    return " ".join(html.unescape(_TAG_RE.sub(" ", text)).split())


def query_segment(record: Record) -> str:
    return f"query: {_clean(record.query)}\n"


def item_segment(record: Record, cfg: PromptConfig) -> str:
    title = _clean(record.title)
    low = title.lower()
    details = []
    if record.category:
        details.append(f"category {record.category}")
    if record.brand and record.brand.lower() not in low:
        details.append(f"brand {record.brand}")
    for k, v in sorted(record.attributes.items()):
        if v.lower() not in low:
            details.append(f"{k} {v}")
    if record.price is not None:
        details.append(f"price {record.price:g}")
    text = f"item: {title}\n"
    if details:
        text += "details: " + ", ".join(details) + "\n"
    if record.description and cfg.max_description_chars > 0:
        text += f"about: {_clean(record.description)[: cfg.max_description_chars]}\n"
    return text


def response_text(level: int, reasoning: str | None, order: str) -> str:
    """The target response for one pair. think orders need the reasoning text."""
    answer = format_answer(level)
    if order == "answer_only":
        return answer
    if reasoning is None:
        raise ValueError(f"output order {order!r} needs reasoning text")
    think = f"{THINK_OPEN}{reasoning}{THINK_CLOSE}"
    if order == "think_first":
        return think + answer
    if order == "answer_first":
        return answer + think
    raise ValueError(f"unknown output order {order!r}; expected one of {ORDERS}")


def encode_prompt(tokenizer, record: Record, cfg: PromptConfig) -> list[int]:
    """Token ids of the prompt, built segment by segment."""
    return encode_segments(tokenizer, [cfg.instructions, query_segment(record), item_segment(record, cfg)])


def encode_segments(tokenizer, segments: list[str]) -> list[int]:
    ids: list[int] = []
    for seg in segments:
        ids += tokenizer(seg, add_special_tokens=False)["input_ids"]
    return ids


def answer_prefix_ids(tokenizer) -> list[int]:
    """Ids appended to a prompt so that the next token is the label (answer-first scoring)."""
    return tokenizer(ANSWER_OPEN, add_special_tokens=False)["input_ids"]


def encode_example(tokenizer, record: Record, reasoning: str | None, order: str, cfg: PromptConfig) -> dict:
    """`input_ids` + `completion_mask` (1 on response tokens) for SFT; loss is on the response only."""
    prompt = encode_prompt(tokenizer, record, cfg)
    completion = tokenizer(response_text(record.label, reasoning, order), add_special_tokens=False)["input_ids"]
    completion = completion + [tokenizer.eos_token_id]
    return {"input_ids": prompt + completion, "completion_mask": [0] * len(prompt) + [1] * len(completion)}
