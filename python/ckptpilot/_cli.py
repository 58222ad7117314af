"""The ``ckptpilot`` console script: the command line, run in this process by the extension module."""

import signal
import sys

from ._ckptpilot import _cli


def main() -> None:
    # Ctrl-C ends the command as it ends the native binary (Python's handler would wait for Rust).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    # A closed stdout ends quietly, as in the binary: Python ignores SIGPIPE, Rust reports EPIPE.
    sys.exit(_cli(["ckptpilot", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
