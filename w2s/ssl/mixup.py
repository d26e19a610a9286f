"""Input-level pieces of MixMatch, ReMixMatch and VAT: float inputs, sharpening, MixUp, ramp-up.

A shared piece, not an algorithm (it has no `loss`, so the registry does not list it).

  sharpen(p, T)  = p^(1/T) / sum_c p_c^(1/T)                       (Berthelot et al. 2019, eq. 7)
  lambda ~ Beta(alpha, alpha),  lambda' = max(lambda, 1 - lambda)  (ibid., eqs. 8-9)
  mix(a)_i       = lambda' a_i + (1 - lambda') a_perm(i)           (inputs and targets alike)
  ramp(t)        = clip(t / (warmup * total_steps), 0, 1)          (USB's unsup_warm_up)

One lambda' per step for the whole batch, as USB's `mixup_one_target` (the MixMatch authors' code
draws one per row). `perm` pairs every real row with a real row only (padding rows are paired
among themselves), so padding never reaches a real row; its draw is per row of each segment
(labelled batch, each unlabelled view), so appending padding rows to a segment leaves the pairing
of the real rows unchanged.

Inputs are dicts of arrays [N, ...] (the model's input fields). Mixing and adversarial
perturbations need float fields (pixels, features); integer fields (token ids) are a UserError.
"""
import jax
import jax.numpy as jnp

from w2s.errors import UserError


def float_inputs(inputs: dict, algo: str) -> dict:
  """`inputs` unchanged when every field is floating point; else a one-line UserError."""
  for key, value in sorted(inputs.items()):
    if not jnp.issubdtype(jnp.result_type(value), jnp.floating):
      raise UserError(f'ssl algorithm {algo!r} mixes or perturbs the model inputs, but input field '
                      f'{key!r} is {jnp.result_type(value)} (token ids?); use a model on float '
                      'inputs (pixels, or cached features: a features model) or a logit-level '
                      'algorithm (fixmatch, uda, softmatch, ...)')
  return inputs


def concat(parts: list[dict], algo: str) -> dict:
  """Row-wise concatenation of input dicts with the same fields [N_i, ...] -> [sum N_i, ...]."""
  keys = sorted(parts[0])
  for p in parts[1:]:
    if sorted(p) != keys:
      raise UserError(f'ssl algorithm {algo!r} mixes labelled and unlabelled inputs, but their '
                      f'fields differ ({keys} vs {sorted(p)}); give both splits the same inputs')
  return {k: jnp.concatenate([p[k] for p in parts], axis=0) for k in keys}


def sharpen(p: jax.Array, T: float) -> jax.Array:
  """p^(1/T) / sum_c p_c^(1/T) for probabilities p [N, C] (float32)."""
  s = jnp.asarray(p, jnp.float32) ** (1.0 / T)
  return s / jnp.sum(s, axis=-1, keepdims=True)


def ramp(step, total_steps: int, warmup: float) -> jax.Array:
  """clip(step / (warmup * total_steps), 0, 1) (scalar float32); 1 when warmup <= 0."""
  if warmup <= 0:
    return jnp.ones((), jnp.float32)
  return jnp.clip(jnp.asarray(step, jnp.float32) / (warmup * total_steps), 0.0, 1.0)


def row_keys(rng: jax.Array, n: int) -> jax.Array:
  """[n] keys fold_in(rng, i): row i's draw does not depend on how many rows follow it."""
  return jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(n))


def partner(rng: jax.Array, masks: list[jax.Array]) -> jax.Array:
  """perm [N] int32 over the concatenated segments (N = sum of the masks' lengths): a uniformly
  random pairing of the real rows among themselves; padding rows get padding rows."""
  keys = jnp.concatenate([
      jax.vmap(jax.random.uniform)(row_keys(jax.random.fold_in(rng, s), m.shape[0]))
      for s, m in enumerate(masks)])
  real = jnp.concatenate([m > 0 for m in masks])
  by_key = jnp.argsort(jnp.where(real, keys, jnp.inf), stable=True)  # real rows, random order
  by_pos = jnp.argsort(~real, stable=True)  # real rows in place order, then padding
  return jnp.zeros(real.shape, jnp.int32).at[by_pos].set(by_key.astype(jnp.int32))


def mix_lambda(rng: jax.Array, alpha: float) -> jax.Array:
  """lambda' = max(lambda, 1 - lambda), lambda ~ Beta(alpha, alpha); 1 when alpha <= 0."""
  if alpha <= 0:
    return jnp.ones((), jnp.float32)
  lam = jax.random.beta(rng, alpha, alpha, dtype=jnp.float32)
  return jnp.maximum(lam, 1.0 - lam)


def draw(rng: jax.Array, masks: list[jax.Array], alpha: float) -> tuple[jax.Array, jax.Array]:
  """(lambda' scalar, perm [N]) of one MixUp step (keys: split(rng) -> lambda, pairing)."""
  k_lam, k_perm = jax.random.split(rng)
  return mix_lambda(k_lam, alpha), partner(k_perm, masks)


def mix(tree, lam: jax.Array, perm: jax.Array):
  """lambda' a + (1 - lambda') a[perm] for every array a [N, ...] of `tree`."""
  def one(a):
    w = lam.astype(a.dtype)
    return w * a + (1 - w) * jnp.take(a, perm, axis=0)
  return jax.tree.map(one, tree)
