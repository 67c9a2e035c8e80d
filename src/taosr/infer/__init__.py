"""Reading a trained judge: answer-first P(level 1..4) (`scoring`), the same with the instruction and query
prefixes shared (`prefix`, over the packed attention of `packed_attention`), and vLLM's engine (`vllm_engine`)."""
