"""Deployment: `cumpt` (levels from probabilities), `calibrate` (beta on dev, `taosr calibrate`), `schema` (the
`taosr_serving.json` export), `scorer` (the scorer every deployment sets up), `batch_score` and `ray_score`
(`taosr score`), `serve` with `serve_api` and `serve_worker` (`taosr serve`)."""
