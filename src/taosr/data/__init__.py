"""Datasets: load any layout into `Record`s (every row a record or a reject), split by query, and generate
the synthetic benchmark. `loaders.load_records` is the entry point; `taosr data inspect | split`, `taosr synth`."""
