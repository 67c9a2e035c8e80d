"""taosr: train, evaluate and serve TaoSR1-style thinking LLM relevance judges.

The package reads as the pipeline; imports run one way, from the core to the command line:

    core         labels, records, prompts, modeling, pretrained, generation, io, runtime, progress
    kb/          the atomic-rule knowledge base and the rule engine
    data/        loading and validating datasets, splits, the synthetic benchmark
    teacher/     chain-of-thought teachers (rules, file, LLM over HTTP or local) and `taosr cot`
    infer/       reading a model: answer-first scoring, prefix-shared scorer, vLLM engine
    train/       the training stages: base model, SFT, pass@N sampling, DPO pairs and DPO, GRPO
    evaluation/  metrics, dev selection, statistics over seeds, the BERT-style baseline, the HTML report
    deploy/      CumPT, calibration, the serving export, batch scoring (one process or Ray), the service
    run/         the run directory and the demo (every stage in order)
    cli/         the `taosr` command

docs/architecture.md maps every stage to its modules, command and files.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("taosr")
except PackageNotFoundError:  # run from a source tree that was not installed
    __version__ = "0+unknown"
