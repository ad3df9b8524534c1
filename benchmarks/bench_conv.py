"""Why simlab's conv1d is a matrix product of patches, not ``lax.conv_general_dilated``.

Times one gradient step of a small 1-D conv layer (batch 128, length 20, 16 -> 32 channels,
kernel 5, stride 2) inside a ``lax.scan`` and outside it, for both implementations.

    python benchmarks/bench_conv.py
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from simlab.ops.linear import conv1d

STEPS = 300


def xla_conv(stride):
    def op(x, kernel):
        return jax.lax.conv_general_dilated(x, kernel, (stride,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"))

    return op


def per_step_ms(op, inside_scan: bool) -> float:
    x = jax.random.normal(jax.random.key(0), (128, 20, 16))
    kernel = jax.random.normal(jax.random.key(1), (5, 16, 32))
    grad = jax.grad(lambda k, x: jnp.sum(jnp.sin(op(x, k))), argnums=(0, 1))

    def step(carry, _):
        k, x = carry
        dk, dx = grad(k, x)
        return (k - 1e-6 * dk, x - 1e-6 * dx), None

    if inside_scan:
        run = jax.jit(lambda c: jax.lax.scan(step, c, None, length=STEPS)[0])
        jax.block_until_ready(run((kernel, x)))
        started = time.perf_counter()
        jax.block_until_ready(run((kernel, x)))
    else:
        one = jax.jit(lambda c: step(c, None)[0])
        carry = jax.block_until_ready(one((kernel, x)))
        started = time.perf_counter()
        for _ in range(STEPS):
            carry = one(carry)
        jax.block_until_ready(carry)
    return (time.perf_counter() - started) / STEPS * 1e3


def main() -> None:
    print(f"backend {jax.default_backend()}; ms per gradient step")
    print(f"{'implementation':<28s} {'in scan':>8s} {'python loop':>12s}")
    for name, op in (("lax.conv_general_dilated", xla_conv(2)), ("simlab patches @ kernel", conv1d(2))):
        print(f"{name:<28s} {per_step_ms(op, True):8.3f} {per_step_ms(op, False):12.3f}")


if __name__ == "__main__":
    main()
