"""``python -m hwnas``: the command line (:func:`hwnas.cli.main`)."""

import os
import sys

from hwnas.cli import main

code = main()
if "LOCAL_RANK" in os.environ:
    # A torchrun rank that is done leaves without the interpreter's teardown: destroying gloo's
    # threads there aborted a finished rank now and then (SIGABRT, "terminate called without an
    # active exception"), which torchrun reports as a failed run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
