"""A whole run: `rundir` (the run directory and its config), `demo` (every stage in order, `taosr demo`), and
`presets` (the demo's budgets, read from taosr/configs/demo/*.yaml)."""
