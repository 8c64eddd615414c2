"""Shared test settings.

`schedc check`'s result cache (schedc.cli.result_cache) is off for the suite: tests that run the
checker (in this process or in subprocesses, which inherit the environment) must see it run, not
an entry another test left. tests/test_check_cache.py turns it on, in a folder of its own.
"""

import os

os.environ["SCHEDC_NO_CACHE"] = "1"
# Subprocesses that run in another folder (tmp_path) must import the schedc under test: a relative
# PYTHONPATH entry (`PYTHONPATH=src`, a worktree's sources) would otherwise resolve from there.
if os.environ.get("PYTHONPATH"):
    os.environ["PYTHONPATH"] = os.pathsep.join(os.path.abspath(entry or os.curdir) for entry in os.environ["PYTHONPATH"].split(os.pathsep))


def interrupted_on_call(loss, call: int):
    """`loss`, made to raise KeyboardInterrupt (a Ctrl-C) on its `call`-th evaluation: a run killed
    mid-way, for the tests that resume one. The host callback reads the model's bias `m["b"]`."""
    import jax  # here, not at the top: conftest is loaded by the JAX-free tests too

    calls = [0]

    def interrupt(_):
        calls[0] += 1
        if calls[0] == call:
            raise KeyboardInterrupt

    def fragile(m, *data):
        jax.debug.callback(interrupt, m["b"])
        return loss(m, *data)

    return fragile


def on_host_devices(script: str, devices: int = 8, timeout: int = 600):
    """Run `script` (Python source printing one JSON line last) in a fresh interpreter with
    `devices` host CPU devices (the count is fixed when JAX starts); its JSON, decoded."""
    import json
    import subprocess
    import sys

    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
