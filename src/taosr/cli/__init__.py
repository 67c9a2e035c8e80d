"""The `taosr` command line: one command per stage (`taosr --help`); `python -m taosr.cli` runs it too."""

from .main import app, main

__all__ = ["app", "main"]
