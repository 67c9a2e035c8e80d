"""The README says what the CLI does: every `taosr ...` command in its bash blocks exists, answers `--help`, and
takes every flag the README gives it; the Python example's imports and names exist.

And the README's "Your own data, stage by stage" runs on real Amazon ESCI pairs: split -> cot -> post-CoT sft ->
sample -> dpo -> sample -> grpo -> eval -> calibrate -> score -> serve -> report, every command exiting 0 without a
traceback, with the default teacher and tiny budgets (a 1-layer fresh model on 40 pairs). The commands are the
README's own, with its paths pointed at a temporary folder and tiny budgets appended; the data are read from
../shared/data/real (skipped where that folder is absent).
"""

import csv
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from taosr.cli import app

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands() -> list[list[str]]:
    """Each `taosr` command line of the README's bash blocks, comments and line continuations removed."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("taosr "):
                commands.append(shlex.split(line)[1:])
    return commands


def command_of(args: list[str]) -> tuple[list[str], object]:
    """The (sub)command path of `args` and its click command (a group has `commands`)."""
    cmd, path = typer.main.get_command(app), []
    while hasattr(cmd, "commands") and args[len(path):] and args[len(path)] in cmd.commands:
        cmd = cmd.commands[args[len(path)]]
        path.append(cmd.name)
    return path, cmd


COMMANDS = readme_commands()


def test_the_readme_walks_every_stage():
    names = [" ".join(command_of(a)[0]) for a in COMMANDS]
    for stage in ("data split", "cot", "sft", "sample", "dpo", "grpo", "eval", "calibrate", "score", "serve", "report"):
        assert stage in names, f"README has no `taosr {stage}` command"


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(a[:2]) for a in COMMANDS])
def test_readme_command_exists_and_takes_its_flags(args):
    path, cmd = command_of(args)
    assert path and not hasattr(cmd, "commands"), f"`taosr {' '.join(args)}`: no such command"
    r = CliRunner().invoke(app, [*path, "--help"])
    assert r.exit_code == 0, r.output
    known = {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}
    used = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    assert used <= known, f"`taosr {' '.join(args)}`: unknown flag(s) {sorted(used - known)}"


def test_readme_python_example_names_exist():
    text = README.read_text(encoding="utf-8")
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    imports = "\n".join(ln for ln in block.splitlines() if ln.startswith(("from ", "import ")))
    scope: dict = {}
    exec(imports, scope)  # noqa: S102 -- the README's own import lines
    serving = scope["load_serving_config"](Path("no-such-model-folder"))  # defaults without a calibrated model
    assert hasattr(serving, "prompt") and callable(serving.levels)


REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real" / "underspec_esci_200.csv"
TINY_MODEL = ["--model-hidden-size", "64", "--model-num-layers", "1", "--model-num-heads", "2", "--model-num-kv-heads",
              "1", "--model-intermediate-size", "128", "--model-vocab-size", "1000"]
TINY = {  # appended to the README's command (a repeated flag takes the last value)
    # a higher rate and a label-weighted loss, so that 40 steps teach the tiny model `<answer><label></answer>`
    "sft": ["--max-steps", "40", "--batch-size", "4", "--learning-rate", "1e-2", "--label-weight", "3", *TINY_MODEL],
    "sample": ["--max-new-tokens", "12", "--n", "4"],
    "dpo": ["--max-steps", "2", "--batch-size", "4"],
    # 40 real pairs hold one Complement: class balancing would keep 4 prompts, and a 40-step model's samples leave
    # the difficulty filter little (both refusals are tested in test_stage_guards.py)
    "grpo": ["--max-steps", "2", "--num-generations", "8", "--prompts-per-step", "2", "--no-offline-filter",
             "--no-balance-classes"],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def localized(args: list[str], tmp: Path, pairs: Path) -> list[str]:
    """A README command with its paths in `tmp`, the real sample as pairs.csv, no pretrained --model for sft."""
    out = []
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if args[0] == "sft" and a == "--model":
            skip = True  # a fresh tiny model instead of smollm2-135m
            continue
        a = a.replace("pairs.csv", str(pairs))
        out.append(str(tmp / a) if a.startswith(("data/", "runs/")) else a)
    return out + TINY.get(args[0], [])


def serve_and_ask(args: list[str], tmp: Path) -> dict:
    """Run `taosr serve`, POST one request to /v1/relevance, stop it with Ctrl-C; returns the answer."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "taosr.cli", *args, "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp)
    try:
        body = json.dumps({"query": "mama koala diapers", "items": [{"title": "Mama Koala cloth diapers"},
                                                                    {"title": "USB cable", "brand": "Anker"}]})
        for _ in range(120):
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/relevance", body.encode(),
                                             {"content-type": "application/json"})
                with urllib.request.urlopen(req, timeout=30) as r:
                    answer = json.loads(r.read())
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.5)
        else:
            raise AssertionError("the service did not answer in 60 s")
    finally:
        proc.send_signal(2)  # Ctrl-C: uvicorn shuts down cleanly
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in out, out
    return answer


@pytest.mark.slow  # about 2 minutes on 2 shared CPU cores
@pytest.mark.skipif(not REAL.is_file(), reason=f"real data {REAL} is absent (see shared/data/real/README.md)")
def test_readme_path_on_real_esci_pairs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with REAL.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))[:40]
    pairs = tmp_path / "pairs.csv"
    with pairs.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    runner, ran = CliRunner(), []
    for args in readme_commands():
        args = localized(args, tmp_path, pairs)
        if args[0] == "serve":
            answer = serve_and_ask(args, tmp_path)
            assert [r["id"] for r in answer["results"]] == ["0", "1"]
            assert all(abs(sum(r["probs"].values()) - 1) < 1e-4 and r["level"] in (1, 2, 3, 4)
                       for r in answer["results"])
        else:
            r = runner.invoke(app, args)
            assert r.exit_code == 0 and r.exception is None, f"taosr {' '.join(args)}:\n{r.output}"
            assert "Traceback" not in r.output
        ran.append(args[0] if args[0] != "data" else f"data {args[1]}")
    assert ran == ["data inspect", "data split", "cot", "sft", "sample", "dpo", "sample", "grpo", "eval", "calibrate",
                   "score", "serve", "report"]
    cot = [json.loads(line) for line in (tmp_path / "data/me/cot.jsonl").read_text().splitlines()]
    train = (tmp_path / "data/me/train.jsonl").read_text().splitlines()
    assert sum(r["status"] == "ok" for r in cot) >= 0.9 * len(train)  # reasoning for >= 90% of the pairs
    model = tmp_path / "runs/me/grpo/model"
    assert json.loads((model / "taosr_prompt.json").read_text())["order"] == "answer_first"
    card = (model / "README.md").read_text()
    assert "| stage | grpo (answer_first) |" in card and "## Evaluation" in card and "Served rule:" in card
    page = (tmp_path / "runs/me/report.html").read_text()
    evaluation = json.loads((tmp_path / "runs/me/grpo/eval-test.json").read_text())
    assert "<td class=l>grpo (test)</td>" in page and f"<td>{100 * evaluation['macro_f1']:.2f}</td>" in page
    assert "grpo: served" in page and "sft-samples" in page
