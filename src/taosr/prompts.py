"""Prompt layout and response formats (the three output orders).

A prompt is three segments, tokenized separately and concatenated, so that the instruction prefix
and the query prefix have the same token ids in training, scoring and prefix-shared serving:

    [instructions] [query: ...\\n] [item: ...\\n] [suffix]  ->  response

(the suffix is empty in the plain layout; in an instruct model's chat layout it ends the user turn.)

Length budgets (`PromptConfig.max_query_tokens`, `max_item_tokens`, `max_prompt_tokens`) are applied
by one rule, in `encode_query` / `encode_items` / `encode_prompt`, which training, evaluation, batch
scoring, the service and vLLM all use:

1. Characters first (a memory guard that needs no tokenizer, so `query_segment` / `item_segment`
   apply it too): every field is cut to ``CHARS_PER_TOKEN * budget`` characters and so is the
   assembled segment, so a 10 MB title costs a few kilobytes.
2. Then tokens: the query segment keeps its first ``max_query_tokens`` ids, the item segment its
   first ``min(max_item_tokens, max_prompt_tokens - instructions - query)`` ids. A cut segment keeps
   its closing newline (the last ids are the newline's), so the prompt keeps its layout. Nothing is
   cut from the instructions; the `<answer>` suffix of answer-first scoring comes on top.

Prompts within the budgets (all of the synthetic benchmark's) are not changed by the rule.

Responses, by output order (label tokens and tags are single tokens):
    answer_only   <answer><mismatch></answer>
    think_first   <think>five steps</think><answer><mismatch></answer>
    answer_first  <answer><mismatch></answer><think>five steps</think>     (post-CoT)
"""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field

from .io import write_text
from .labels import ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, format_answer
from .records import Record
from .settings import StrictConfig, read_json_model

log = logging.getLogger(__name__)
OutputOrder = Literal["answer_only", "think_first", "answer_first"]
ORDERS: tuple[str, ...] = ("answer_only", "think_first", "answer_first")


class PromptConfig(StrictConfig):
    """How a (query, item) pair is written into the prompt."""

    instructions: str = Field(
        "judge relevance: excellent, related, mismatch or irrelevant.\n",
        description="Shared instruction prefix (put retrieved rules here for large models). Must end in a newline.",
    )
    prompt_suffix: str = Field(
        "", description="Text after the item segment, before the response. For an instruct model's chat template, "
        "`instructions` opens the user turn and this closes it and opens the assistant's; `chat_prompt_config` "
        "fills both from a tokenizer. Empty: the plain layout.")
    max_description_chars: int = Field(300, ge=0, description="Item descriptions are cut to this many characters.")
    max_query_tokens: int = Field(48, ge=4, description="Query segment budget in tokens; longer queries keep their "
                                  "first tokens (see the module doc for the rule).")
    max_item_tokens: int = Field(288, ge=8, description="Item segment budget in tokens (title, details, description); "
                                 "longer items keep their first tokens.")
    max_prompt_tokens: int = Field(384, ge=16,
                                   description="Whole prompt budget (instructions + query + item) in tokens; "
                                   "the item is cut further to fit it. With the response it should fit the model's "
                                   "positions (512 for the fresh model: 384 leaves 128 for the response).")


PROMPT_FILE = "taosr_prompt.json"  # the prompt layout a model folder was trained with


def write_prompt(cfg: PromptConfig, model_dir: str | Path, order: str | None = None) -> None:
    """Store `cfg` with a model, so that every later stage and the service build the same prompts; `order`, the
    output order the model was trained in, is stored beside the layout (key "order", read by `model_order`)."""
    data = cfg.model_dump(mode="json") | ({"order": order} if order else {})
    write_text(Path(model_dir) / PROMPT_FILE, json.dumps(data, indent=1))


def model_order(model_dir: str | Path | None) -> str | None:
    """The output order stored with a model folder by `write_prompt`, or None."""
    path = Path(model_dir) / PROMPT_FILE if model_dir else None
    if path is None or not path.is_file():
        return None
    try:
        order = json.loads(path.read_text(encoding="utf-8")).get("order")
    except (ValueError, AttributeError):
        return None
    return order if order in ORDERS else None


def model_prompt(model_dir: str | Path | None, default: PromptConfig | None = None) -> PromptConfig:
    """The prompt layout stored with a model folder; `default` (the plain layout) for a folder without one, with a
    warning (a model taosr trained always has one; pretrained weights have none). A damaged file is an
    `InputError`."""
    path = Path(model_dir) / PROMPT_FILE if model_dir else None
    if path is None or not path.is_file():
        if path is not None and path.parent.is_dir():
            log.warning("%s has no %s: using %s prompt layout (a model trained by taosr always has one)",
                        model_dir, PROMPT_FILE, "the given" if default else "the default plain")
        return default or PromptConfig()
    return read_json_model(PromptConfig, path, "prompt layout", "restore the file or train the model again",
                           besides=("order",))


CHARS_PER_TOKEN = 16  # step 1 of the rule: characters kept per token of budget, before tokenizing


_DEFAULT = PromptConfig()
_TAG_RE = re.compile(r"<[^>]+>")


def plain_text(text: str) -> str:
    """Text without HTML tags and entities, on one line with single spaces."""
    return " ".join(html.unescape(_TAG_RE.sub(" ", text)).split())


def _cut(text: str, limit: int) -> str:
    """Step 1 of the rule: at most `limit` characters, the segment's final newline kept."""
    return text if len(text) <= limit else text[: limit - 1].rstrip("\n") + "\n"


def query_segment(record: Record, cfg: PromptConfig | None = None) -> str:
    limit = CHARS_PER_TOKEN * (cfg or _DEFAULT).max_query_tokens
    return _cut(f"query: {plain_text(record.query[:limit])}\n", limit)


def item_segment(record: Record, cfg: PromptConfig) -> str:
    limit = CHARS_PER_TOKEN * cfg.max_item_tokens
    title = plain_text(record.title[:limit])
    low = title.lower()
    details = []
    if record.category:
        details.append(f"category {record.category[:limit]}")
    if record.brand and record.brand.lower() not in low:
        details.append(f"brand {record.brand[:limit]}")
    size = 0
    for k, v in sorted(record.attributes.items()):
        if size > limit:
            break
        if v.lower() not in low:
            details.append(f"{k[:limit]} {v[:limit]}")
            size += len(details[-1]) + 2
    if record.price is not None:
        details.append(f"price {record.price:g}")
    text = f"item: {title}\n"
    if details:
        text += "details: " + ", ".join(details) + "\n"
    if record.description and cfg.max_description_chars > 0:
        text += f"about: {plain_text(record.description[:limit])[: cfg.max_description_chars]}\n"
    return _cut(text, limit)


def _fit(ids: list[int], budget: int, newline: list[int]) -> list[int]:
    """Step 2 of the rule: the first `budget` ids, ending with the newline's ids when cut."""
    if len(ids) <= budget:
        return ids
    return ids[: max(budget - len(newline), 0)] + newline[:budget]


def _newline(tokenizer) -> list[int]:
    return tokenizer("\n", add_special_tokens=False)["input_ids"]


def encode_query(tokenizer, record: Record, cfg: PromptConfig) -> list[int]:
    """Token ids of the query segment, within `max_query_tokens`."""
    ids = tokenizer(query_segment(record, cfg), add_special_tokens=False)["input_ids"]
    return _fit(ids, cfg.max_query_tokens, _newline(tokenizer))


def item_budget(cfg: PromptConfig, used: int) -> int:
    """Tokens the item segment may take when instructions + query take `used` tokens."""
    budget = min(cfg.max_item_tokens, cfg.max_prompt_tokens - used)
    if budget < 8:
        raise ValueError(f"instructions and query take {used} tokens of max_prompt_tokens={cfg.max_prompt_tokens}, "
                         "leaving under 8 for the item: raise max_prompt_tokens")
    return budget


def encode_items(tokenizer, records: Sequence[Record], cfg: PromptConfig, used: Sequence[int]) -> list[list[int]]:
    """Token ids of each record's item segment (one batched tokenizer call); `used[i]`: tokens before item i."""
    if not records:
        return []
    nl = _newline(tokenizer)
    ids = tokenizer([item_segment(r, cfg) for r in records], add_special_tokens=False)["input_ids"]
    tail = tokenizer(cfg.prompt_suffix, add_special_tokens=False)["input_ids"] if cfg.prompt_suffix else []
    return [_fit(x, item_budget(cfg, u + len(tail)), nl) + tail for x, u in zip(ids, used)]


def encode_groups(tokenizer, groups: Sequence[Sequence[Record]], cfg: PromptConfig,
                  instructions: int) -> tuple[list[list[int]], list[list[list[int]]]]:
    """Per group of records sharing one query: the query's ids and each item's ids, within the budgets."""
    queries = [encode_query(tokenizer, g[0], cfg) if g else [] for g in groups]
    flat = [r for g in groups for r in g]
    used = [instructions + len(q) for q, g in zip(queries, groups) for _ in g]
    items = iter(encode_items(tokenizer, flat, cfg, used))
    return queries, [[next(items) for _ in g] for g in groups]


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


def prompt_text(record: Record, cfg: PromptConfig) -> str:
    """The prompt as text: instructions, query segment, item segment, suffix (what TRL's DPO and GRPO trainers
    tokenize)."""
    return cfg.instructions + query_segment(record, cfg) + item_segment(record, cfg) + cfg.prompt_suffix


def chat_prompt_config(tokenizer, cfg: PromptConfig) -> PromptConfig:
    """`cfg` laid out in the tokenizer's chat template: the instructions, query and item are the user's message,
    the response is the assistant's. The template's text before the message goes in front of the instructions
    (so the instructions' cache is still shared), its text after the message becomes `prompt_suffix`."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template: keep the plain layout")
    mark = "\x00MESSAGE\x00"
    text = tokenizer.apply_chat_template([{"role": "user", "content": mark}], tokenize=False,
                                         add_generation_prompt=True)
    head, found, tail = text.partition(mark)
    if not found:
        raise ValueError("the chat template does not show the user's message verbatim")
    return cfg.model_copy(update={"instructions": head + cfg.instructions, "prompt_suffix": tail})


def encode_prompt(tokenizer, record: Record, cfg: PromptConfig) -> list[int]:
    """Token ids of the prompt, built segment by segment, within the budgets (see the module doc)."""
    instr = encode_segments(tokenizer, [cfg.instructions])
    query = encode_query(tokenizer, record, cfg)
    return instr + query + encode_items(tokenizer, [record], cfg, [len(instr) + len(query)])[0]


def encode_segments(tokenizer, segments: list[str]) -> list[int]:
    ids: list[int] = []
    for seg in segments:
        ids += tokenizer(seg, add_special_tokens=False)["input_ids"]
    return ids


def answer_span_length(tokenizer) -> int:
    """Tokens of an answer span, <answer>LABEL</answer>: what a label-only rollout or sample generates."""
    return len(tokenizer(format_answer(4), add_special_tokens=False)["input_ids"])


def answer_prefix_ids(tokenizer) -> list[int]:
    """Ids appended to a prompt so that the next token is the label (answer-first scoring)."""
    return tokenizer(ANSWER_OPEN, add_special_tokens=False)["input_ids"]


def encode_example(tokenizer, record: Record, reasoning: str | None, order: str, cfg: PromptConfig) -> dict:
    """`input_ids` + `completion_mask` (1 on response tokens) for SFT; loss is on the response only."""
    prompt = encode_prompt(tokenizer, record, cfg)
    completion = tokenizer(response_text(record.label, reasoning, order), add_special_tokens=False)["input_ids"]
    completion = completion + [tokenizer.eos_token_id]
    return {"input_ids": prompt + completion, "completion_mask": [0] * len(prompt) + [1] * len(completion)}
