"""Random augmentations that make the two views of a contrastive subject's examples.

Pure JAX functions of a key and a batch: every example gets its own draws (``split`` of the
key, one per example, then ``vmap``), so the same key gives the same views and the functions
work under ``jit``, ``vmap`` and ``lax.scan``. Settings: :class:`simlab.specs.subjects.
SignalAugmentSpec` and :class:`~simlab.specs.subjects.ImageAugmentSpec`, whose docstrings
say what each augmentation does; shapes never change.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from simlab.specs.subjects import ImageAugmentSpec, SignalAugmentSpec


def shift_signal(x: jax.Array, shift: jax.Array, circular: bool) -> jax.Array:
    """``x`` [length, channels] moved by ``shift`` samples (positive: later), wrapping around
    when ``circular``, else filled with zeros."""
    length = x.shape[0]
    source = jnp.arange(length) - shift
    if circular:
        return x[source % length]
    inside = (source >= 0) & (source < length)
    return jnp.where(inside[:, None], x[jnp.clip(source, 0, length - 1)], 0.0)


def crop_and_resize(x: jax.Array, start: jax.Array, size: jax.Array) -> jax.Array:
    """The window [start, start + size) of ``x`` [length, channels] (fractional bounds
    allowed), stretched back to ``length`` samples by linear interpolation (sample centres
    mapped onto the window)."""
    length = x.shape[0]
    position = start + (jnp.arange(length) + 0.5) * size / length - 0.5
    position = jnp.clip(position, 0.0, length - 1.0)
    below = jnp.floor(position).astype(jnp.int32)
    above = jnp.minimum(below + 1, length - 1)
    weight = (position - below)[:, None]
    return (1.0 - weight) * x[below] + weight * x[above]


def _signal_view(spec: SignalAugmentSpec, key: jax.Array, x: jax.Array) -> jax.Array:
    """One augmented view of one signal [length, channels] (order: see the module above)."""
    length = x.shape[0]
    crop_key, start_key, shift_key, scale_key, noise_key, mask_key = jax.random.split(key, 6)
    if spec.crop < 1.0:
        size = length * jax.random.uniform(crop_key, (), minval=spec.crop, maxval=1.0)
        x = crop_and_resize(x, jax.random.uniform(start_key, ()) * (length - size), size)
    if spec.shift > 0:
        shift = jax.random.randint(shift_key, (), -spec.shift, spec.shift + 1)
        x = shift_signal(x, shift, spec.shift_mode == "circular")
    low, high = spec.scale
    x = x * jax.random.uniform(scale_key, (), minval=low, maxval=high)
    if spec.noise > 0:
        x = x + spec.noise * jax.random.normal(noise_key, x.shape, x.dtype)
    masked = int(round(spec.mask * length))
    if masked > 0:
        start = jax.random.randint(mask_key, (), 0, length - masked + 1)
        block = (jnp.arange(length) >= start) & (jnp.arange(length) < start + masked)
        x = jnp.where(block[:, None], 0.0, x)
    return x


def pad_and_crop(x: jax.Array, padding: int, top: jax.Array, left: jax.Array) -> jax.Array:
    """``x`` [height, width, channels] padded with ``padding`` zero pixels on each side, then
    the original size cut at offset (top, left), each in [0, 2 padding]."""
    height, width, channels = x.shape
    padded = jnp.pad(x, ((padding, padding), (padding, padding), (0, 0)))
    return jax.lax.dynamic_slice(padded, (top, left, 0), (height, width, channels))


def _image_view(spec: ImageAugmentSpec, key: jax.Array, x: jax.Array) -> jax.Array:
    """One augmented view of one image [height, width, channels] (order: see the module above)."""
    crop_key, flip_key, brightness_key, contrast_key, noise_key = jax.random.split(key, 5)
    if spec.crop_padding > 0:
        top, left = jax.random.randint(crop_key, (2,), 0, 2 * spec.crop_padding + 1)
        x = pad_and_crop(x, spec.crop_padding, top, left)
    if spec.flip:
        x = jnp.where(jax.random.bernoulli(flip_key), x[:, ::-1], x)
    if spec.brightness > 0:
        x = x + jax.random.uniform(brightness_key, (), minval=-spec.brightness, maxval=spec.brightness)
    if spec.contrast > 0:
        factor = jax.random.uniform(contrast_key, (), minval=1.0 - spec.contrast, maxval=1.0 + spec.contrast)
        mean = jnp.mean(x)
        x = mean + factor * (x - mean)
    if spec.noise > 0:
        x = x + spec.noise * jax.random.normal(noise_key, x.shape, x.dtype)
    return x


def _per_example(view: Callable) -> Callable[[jax.Array, jax.Array], jax.Array]:
    def augment(key: jax.Array, x: jax.Array) -> jax.Array:
        return jax.vmap(view)(jax.random.split(key, x.shape[0]), x)

    return augment


def augment_signals(spec: SignalAugmentSpec, key: jax.Array, x: jax.Array) -> jax.Array:
    """One augmented view of each signal of a batch [n, length, channels]."""
    return _per_example(lambda k, example: _signal_view(spec, k, example))(key, x)


def augment_images(spec: ImageAugmentSpec, key: jax.Array, x: jax.Array) -> jax.Array:
    """One augmented view of each image of a batch [n, height, width, channels]."""
    return _per_example(lambda k, example: _image_view(spec, k, example))(key, x)


def augmenter(signal: SignalAugmentSpec, image: ImageAugmentSpec, layout: str) -> Callable:
    """``augment(key, x) -> x'`` for a task of ``layout`` ("signal" or "image")."""
    if layout == "signal":
        return lambda key, x: augment_signals(signal, key, x)
    if layout == "image":
        return lambda key, x: augment_images(image, key, x)
    raise ValueError(f"layout must be 'signal' or 'image', got {layout!r}")
