"""``python -m ckptkit ARGS``: the command line."""

from ._cli import main

main()
