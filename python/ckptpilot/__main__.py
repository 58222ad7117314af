"""``python -m ckptpilot ARGS``: the command line."""

from ._cli import main

main()
