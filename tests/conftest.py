"""Shared test settings.

`schedc check`'s result cache (schedc.cli.result_cache) is off for the suite: tests that run the
checker (in this process or in subprocesses, which inherit the environment) must see it run, not
an entry another test left. tests/test_check_cache.py turns it on, in a folder of its own.
"""

import os

os.environ["SCHEDC_NO_CACHE"] = "1"
