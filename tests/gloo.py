"""What the 2-process gloo tests share."""

import os
import sys


def leave_without_teardown():
    """End a gloo worker whose checks passed. A process that has finished can still abort (SIGABRT, "terminate
    called without an active exception") in the interpreter's teardown, where gloo's threads may still hold tensors
    (pytorch PR 179291; docs/stack.md, "torchrun and gloo"): about 1 run in 10 of the workers. An unexpected error
    never gets here: it fails the test as before."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
