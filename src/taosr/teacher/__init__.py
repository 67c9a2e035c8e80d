"""Chain-of-thought teachers: the five-step reasoning that ends in the gold level (TaoSR1's stage-1 data).

`reasoning` (the `Teacher` interface, rule-based and file teachers), `fields` (the field-grounded teacher
for any catalogue, and `auto`), `retrieval` (rules per pair),
`prompt` (the LLM teacher's prompt and answer checks), `llm` (the consistency loop, a local model),
`http` (an OpenAI-compatible server), `cot` (`taosr cot`), `chat_server` (`taosr chat-serve`)."""
