"""Multi-head attention shared by the text families: GQA, rotary positions, a functional KV cache.

One implementation serves BERT (bidirectional, Devlin et al. 2019), GPT-2 (causal, Radford et al.
2019), Llama/Qwen2/Mistral (causal, rotary embeddings of Su et al. 2021, grouped-query attention
of Ainslie et al. 2023, Mistral's sliding window) and GPT-NeoX/Pythia (partial rotary).
Projections are separate q/k/v/o Dense layers (GPT-2's fused c_attn and GPT-NeoX's
query_key_value are split at import). The softmax runs in float32 whatever the compute dtype.

Key/query slots: without a cache, the T inputs occupy slots 0..T-1 and attend to each other. With
a cache (dict k, v: [B, S, Hkv, Dh]) the inputs are written to slots cache_index..cache_index+T-1
and attend to all S cached slots; `key_mask` [B, S] says which slots hold real tokens and, when
causal, a query only sees slots up to its own.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from w2s.errors import UserError
from w2s.models import lora as lora_lib

INIT = nn.initializers.normal(0.02)  # BERT / GPT-2 / Llama all use N(0, 0.02)


def as_dtype(name) -> jnp.dtype:
  """'float32' / 'bfloat16' (config strings) -> jnp dtype."""
  try:
    return jnp.dtype(name)
  except TypeError as e:
    raise UserError(f'unknown dtype {name!r}; use "float32" or "bfloat16"') from e


def rope_frequencies(head_dim: int, theta: float, scaling: dict | None = None) -> np.ndarray:
  """Inverse frequencies [Dh/2] of rotary embeddings; `scaling` = Llama 3.1's rope_type 'llama3'."""
  inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
  if not scaling:
    return inv.astype(np.float32)
  factor, lo, hi = scaling['factor'], scaling['low_freq_factor'], scaling['high_freq_factor']
  old = scaling['original_max_position_embeddings']
  wavelen = 2 * math.pi / inv
  scaled = np.where(wavelen > old / lo, inv / factor, inv)
  smooth = (old / wavelen - lo) / (hi - lo)
  smoothed = (1 - smooth) * scaled / factor + smooth * scaled
  medium = (wavelen >= old / hi) & (wavelen <= old / lo)
  return np.where(medium, smoothed, scaled).astype(np.float32)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
  """Rotates x [B, T, H, Dh] by positions [B, T] (the rotate-half layout of Hugging Face Llama).

  With fewer than Dh/2 frequencies only the first 2 * len(inv_freq) dims of each head rotate and
  the rest pass unchanged (GPT-NeoX / Pythia's partial rotary, `rotary_pct`)."""
  rot = 2 * len(inv_freq)
  if rot < x.shape[-1]:
    return jnp.concatenate([apply_rope(x[..., :rot], positions, inv_freq), x[..., rot:]], axis=-1)
  angles = positions[..., None].astype(jnp.float32) * jnp.asarray(inv_freq)  # [B, T, Dh/2]
  angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return (x.astype(jnp.float32) * cos + rotated.astype(jnp.float32) * sin).astype(x.dtype)


class RMSNorm(nn.Module):
  """x / rms(x) * scale, statistics in float32 (Zhang & Sennrich 2019; as Hugging Face Llama)."""
  eps: float = 1e-6
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    scale = self.param('scale', nn.initializers.ones, (x.shape[-1],), jnp.float32)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (scale * y.astype(self.dtype)).astype(self.dtype)


def attention_mask(key_mask, q_slots, causal: bool, window: int | None = None):
  """[B, 1, T, S] bool: key slot s is real and (if causal) s <= the query's slot; with a sliding
  `window` (Mistral; Beltagy et al. 2020) also s > the query's slot - window, so each query sees
  itself and the window - 1 slots before it. Real tokens sit in consecutive slots (right padding,
  or the left-aligned prompt + new tokens of decoding), so slot distance is token distance."""
  mask = key_mask[:, None, None, :].astype(bool)
  k_slots = jnp.arange(key_mask.shape[1])
  if causal:
    mask = mask & (k_slots[None, :] <= q_slots[:, None])[None, None]
  if window is not None:
    mask = mask & (k_slots[None, :] > q_slots[:, None] - window)[None, None]
  return mask


class Attention(nn.Module):
  """Dot-product attention with H query and Hkv key/value heads (H % Hkv == 0).

  Attributes:
    num_heads, num_kv_heads, head_dim: H, Hkv, Dh.
    causal: decoder (True) or encoder (False) masking.
    qkv_bias, out_bias: biases of the projections (GPT-2/BERT both, Qwen2 qkv only, Llama none).
    inv_freq: rotary inverse frequencies [Dh/2] (as a tuple, so the module stays hashable), or None;
      fewer than Dh/2 rotate only the first dims of each head (partial rotary, see apply_rope).
    sliding_window: each query sees at most this many slots, itself included (Mistral), or None.
    dropout: on attention probabilities.
    lora: LoRA options (w2s.models.lora) adapting q/k/v/o when 'attention' is a target, or None.
  """
  num_heads: int
  num_kv_heads: int
  head_dim: int
  causal: bool
  qkv_bias: bool = True
  out_bias: bool = True
  inv_freq: tuple[float, ...] | None = None
  sliding_window: int | None = None
  dropout: float = 0.0
  deterministic: bool = True
  dtype: jnp.dtype = jnp.float32
  out_init: nn.initializers.Initializer = INIT
  lora: lora_lib.LoraConfig | None = None

  @nn.compact
  def __call__(self, x, *, key_mask, positions=None, cache=None, cache_index=0):
    """x [B, T, D], key_mask [B, S] (S = T without cache) -> (y [B, T, D], new cache or None)."""
    b, t, d = x.shape
    h, hkv, dh = self.num_heads, self.num_kv_heads, self.head_dim
    dense = lambda n, bias, name, init=INIT: lora_lib.dense(
        n, use_bias=bias, dtype=self.dtype, kernel_init=init, name=name, lora=self.lora,
        target='attention', deterministic=self.deterministic)
    q = dense(h * dh, self.qkv_bias, 'q')(x).reshape(b, t, h, dh)
    k = dense(hkv * dh, self.qkv_bias, 'k')(x).reshape(b, t, hkv, dh)
    v = dense(hkv * dh, self.qkv_bias, 'v')(x).reshape(b, t, hkv, dh)
    if self.inv_freq is not None:
      inv = np.asarray(self.inv_freq, np.float32)
      q, k = apply_rope(q, positions, inv), apply_rope(k, positions, inv)
    q_slots = cache_index + jnp.arange(t)
    if cache is not None:
      k = jax.lax.dynamic_update_slice_in_dim(cache['k'], k.astype(cache['k'].dtype), cache_index, 1)
      v = jax.lax.dynamic_update_slice_in_dim(cache['v'], v.astype(cache['v'].dtype), cache_index, 1)
      cache = {'k': k, 'v': v}
    # The mask as an additive bias and the matmuls on head-major operands [B, Hkv, (G,) T|S, Dh]:
    # XLA:CPU then fuses mask and softmax into fewer passes over [B, H, T, S] than a `where` on
    # einsums of the [B, T, H, Dh] projections (experiments/perf/attention_variants.py: 0.43x
    # the bytes forward, 0.74x forward + backward at MiniLM's [32, 64]).
    bias = jnp.where(attention_mask(key_mask, q_slots, self.causal, self.sliding_window), 0.0,
                     jnp.finfo(jnp.float32).min)[:, :, None]  # [B, 1, 1, T, S]
    scale = 1 / math.sqrt(dh)
    if q.dtype == jnp.float32:  # scaling q saves a pass in the backward; bf16 q would round it
      q, scale = q * scale, 1.0
    qh = jnp.transpose(q, (0, 2, 1, 3)).reshape(b, hkv, h // hkv, t, dh)
    kh = jnp.swapaxes(k.astype(q.dtype), 1, 2)  # [B, Hkv, S, Dh]
    logits = jnp.einsum('bkgtd,bksd->bkgts', qh, kh).astype(jnp.float32)
    logits = (logits * scale if scale != 1.0 else logits) + bias
    probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype).reshape(b, h, t, -1)
    probs = nn.Dropout(self.dropout)(probs, deterministic=self.deterministic)
    probs = probs.reshape(b, hkv, h // hkv, t, -1)
    y = jnp.einsum('bkgts,bksd->bkgtd', probs, jnp.swapaxes(v.astype(self.dtype), 1, 2))
    y = jnp.transpose(y.reshape(b, h, t, dh), (0, 2, 1, 3)).reshape(b, t, h * dh)
    return dense(d, self.out_bias, 'o', self.out_init)(y), cache
