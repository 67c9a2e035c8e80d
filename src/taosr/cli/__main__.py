"""`python -m taosr.cli ...` (and `accelerate launch -m taosr.cli ...`): the `taosr` command."""

from .main import main

main()
