"""Loaded first by every Python child process a test starts with `tests.helpers.child_env()` (it puts
this directory on PYTHONPATH): moves the child's clock to the test's clock before anything else runs.

CRM_TEST_CLOCK is "<the test's now, epoch seconds> <time.monotonic() at that moment>". The monotonic clock
is one for the whole machine, so a child (and its own children: run.py's worker and scheduler) starts at
that instant plus the monotonic time gone since, and ticks on: every process reads the test's clock.
"""

import os

_anchor = os.environ.get("CRM_TEST_CLOCK")
if _anchor:
    import time

    import time_machine

    _instant, _monotonic = map(float, _anchor.split())
    time_machine.travel(_instant + time.monotonic() - _monotonic, tick=True).start()
    time.time()  # a ticking travel starts ticking at its first reading: now, not when the app first asks
