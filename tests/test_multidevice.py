"""Data (and parameters) sharded over 8 host devices with `jax.sharding` give one device's losses;
batched fits spread over the devices give the one-device batched fit.

Runs in a subprocess: the device count is fixed when JAX starts
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import on_host_devices

SCRIPT = r'''
import json, jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import schedc

assert len(jax.devices()) == 8, jax.devices()
TEXT = """phase 40 lr 0.05 < free w >
phase 30 lr cosine(0.05 -> 0.005) optimizer sgd(momentum=0.9) < free w, b; stop when loss_change < 1e-9 over 5 after 10 >"""
X = jax.random.normal(jax.random.key(0), (512, 16))
Y = X @ jnp.arange(16.0) / 16 + 0.3


def model():
    return {"w": jnp.zeros(16), "b": jnp.zeros(())}


def loss(m, x, y):
    return jnp.mean((x @ m["w"] + m["b"] - y) ** 2)


program = schedc.compile(TEXT, model())
one = program.run(loss, X, Y, quiet=True)
mesh = Mesh(np.array(jax.devices()), ("data",))
rows = NamedSharding(mesh, P("data"))
data_parallel = program.run(loss, jax.device_put(X, rows), jax.device_put(Y, rows), quiet=True)
sharded = jax.device_put(model(), {"w": NamedSharding(mesh, P("data")), "b": NamedSharding(mesh, P())})
both = schedc.compile(TEXT, sharded).run(loss, jax.device_put(X, rows), jax.device_put(Y, rows), quiet=True)
# 16 independent fits, two per device
XB = jax.random.normal(jax.random.key(1), (16, 64, 16))
YB = XB @ jnp.arange(16.0) / 16
fits = NamedSharding(mesh, P("data"))
batched_one = program.run_batched(loss, XB, YB)
batched_spread = program.run_batched(loss, jax.device_put(XB, fits), jax.device_put(YB, fits))
print(json.dumps({
    "batched_one": [np.nan_to_num(h, nan=-1.0).tolist() for h in batched_one.phase_losses],
    "batched_spread": [np.nan_to_num(h, nan=-1.0).tolist() for h in batched_spread.phase_losses],
    "batched_spread_devices": len(batched_spread.model["w"].sharding.device_set),
    "one": [h.tolist() for h in one.phase_losses],
    "data_parallel": [h.tolist() for h in data_parallel.phase_losses],
    "both": [h.tolist() for h in both.phase_losses],
    "data_parallel_devices": len(data_parallel.model["w"].sharding.device_set),
    "both_w_spec": str(both.model["w"].sharding.spec),
}))
'''


@pytest.fixture(scope="module")
def sharded_run():
    return on_host_devices(SCRIPT, timeout=240)


def test_sharded_data_and_parameters_give_the_single_device_losses(sharded_run):
    out = sharded_run
    assert out["data_parallel_devices"] == 8  # the fit ran over the whole mesh
    assert out["both_w_spec"] in ("P('data',)", "PartitionSpec('data',)")  # and kept the parameter's sharding
    for name in ("data_parallel", "both"):
        assert [len(h) for h in out[name]] == [len(h) for h in out["one"]]  # same stop decisions
        for mine, ref in zip(out[name], out["one"]):
            np.testing.assert_allclose(mine, ref, rtol=1e-5)  # reductions are ordered differently


def test_batched_fits_spread_over_devices(sharded_run):
    out = sharded_run
    assert out["batched_spread_devices"] == 8
    for mine, ref in zip(out["batched_spread"], out["batched_one"]):
        np.testing.assert_allclose(mine, ref, rtol=1e-6)  # each fit runs whole on one device
