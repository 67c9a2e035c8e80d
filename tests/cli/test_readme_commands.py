"""The README says what the CLI does: every `taosr ...` command in its bash blocks exists, answers `--help`, and
takes every flag the README gives it; the Python example's imports and names exist."""

import re
import shlex
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
