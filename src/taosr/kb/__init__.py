"""The knowledge base: atomic relevance rules (`rules.yaml`) and the rule engine that judges a pair with them.

Shared by the synthetic benchmark (`taosr.data.synth`: gold labels come from these rules) and the
teachers (`taosr.teacher`: reasoning verbalised from, or prompted with, the same rules).
"""
