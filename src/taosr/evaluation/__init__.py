"""Measuring the judges: `evaluate` (metrics and tables, `taosr eval`), `devselect` (dev-best step of a stage),
`stats` (bootstrap over queries and seeds), `baseline` (the BERT-style row), `report` (`taosr report`)."""
