"""Rich progress bars for long loops and for HF/TRL trainers (their tqdm bars are turned off).

Bars show on a terminal, on the main process only: under `accelerate launch` the other ranks run silently.
Where stderr is not a terminal (a log file, CI), a long step prints a plain line instead, at most every
`PLAIN_EVERY_S` seconds: done / total, elapsed, ETA and, for training, the latest loss. TAOSR_PROGRESS=0
silences both, TAOSR_PROGRESS=1 forces the bars.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .runtime import is_main_process


def _enabled() -> bool:
    """TAOSR_PROGRESS=0 / 1 forces bars off / on; by default they show on a terminal only. Main process only."""
    flag = os.environ.get("TAOSR_PROGRESS")
    wanted = sys.stderr.isatty() if flag is None else flag == "1"
    return wanted and is_main_process()


PLAIN_EVERY_S = 30.0


def _plain() -> bool:
    """Plain progress lines: not a terminal, not silenced, main process."""
    return os.environ.get("TAOSR_PROGRESS") is None and not sys.stderr.isatty() and is_main_process()


class PlainProgress:
    """Prints `desc: done/total (elapsed, eta) info` to stderr, at most every `every` seconds."""

    def __init__(self, desc: str, total: int | None, every: float = PLAIN_EVERY_S):
        self.desc, self.total, self.every, self.done = desc, total, every, 0
        self.start = self.last = time.monotonic()

    def update(self, done: int, info: str = "") -> None:
        self.done, now = done, time.monotonic()
        if now - self.last < self.every:
            return
        self.last, elapsed = now, now - self.start
        eta = (f", eta {_clock(elapsed * (self.total - done) / done)}" if self.total and done else "")
        of = f"/{self.total}" if self.total else ""
        print(f"{self.desc}: {done}{of} ({_clock(elapsed)} elapsed{eta}){' ' + info if info else ''}",
              file=sys.stderr, flush=True)


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(), transient=True,
    )


@contextmanager
def progress_bar(total: int | None, desc: str) -> Iterator[Callable[..., None]]:
    """`with progress_bar(n, "scoring") as advance: ... advance(k, info="...")`. Silent when not a terminal.

    `total=None`: the count is not known up front (an indeterminate bar)."""
    if not _enabled():
        if not _plain():
            yield lambda k=1, info="": None
            return
        plain = PlainProgress(desc, total)
        yield lambda k=1, info="": plain.update(plain.done + k, info)
        return
    with _progress() as p:
        task = p.add_task(desc, total=total, info="")
        yield lambda k=1, info="": p.update(task, advance=k, info=info)


@functools.cache
def rich_progress_callback() -> type:
    """The trainer callback class: one rich bar per training run, with the latest loss (made on first use, so
    that importing this module does not import the trainer stack of transformers)."""
    from transformers import TrainerCallback

    class RichProgressCallback(TrainerCallback):
        def __init__(self, desc: str):
            self.desc, self._p, self._task, self._info, self._plain = desc, None, None, "", None

        def on_train_begin(self, args, state, control, **kw):
            if _enabled():
                self._p = _progress()
                self._p.start()
                self._task = self._p.add_task(self.desc, total=state.max_steps, info="")
            elif _plain():
                self._plain = PlainProgress(self.desc, state.max_steps)

        def on_step_end(self, args, state, control, **kw):
            if self._p:
                self._p.update(self._task, completed=state.global_step, info=self._info)
            elif self._plain:
                self._plain.update(state.global_step, self._info)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self._info = f"loss {logs['loss']:.3f}"

        def on_train_end(self, args, state, control, **kw):
            if self._p:
                self._p.stop()
                self._p = None

    return RichProgressCallback


def quiet_libraries() -> None:
    """Turn off the tqdm bars and per-step log prints of transformers / datasets (ours are rich bars)."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def attach(trainer, desc: str):
    """Swap the trainer's stdout log printer for one rich progress bar."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(rich_progress_callback()(desc))
    return trainer
