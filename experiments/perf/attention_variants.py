"""Attention core variants at MiniLM's [B=32, T=64, H=12, Dh=32]: forward + backward (grads of q, k,
v), min over alternated repeats. No projections: only what differs between the variants.

    .venv/bin/python experiments/perf/attention_variants.py [--seq 64]
"""
import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

NEG = jnp.finfo(jnp.float32).min


def current(q, k, v, key_mask):  # w2s/models/attention.py before this study (H == Hkv)
  b, t, h, dh = q.shape
  mask = key_mask[:, None, None, :].astype(bool)
  qg = q.reshape(b, t, h, 1, dh)
  logits = jnp.einsum('btkgd,bskd->bkgts', qg, k).astype(jnp.float32)
  logits = logits.reshape(b, h, t, -1) / math.sqrt(dh)
  logits = jnp.where(mask, logits, NEG)
  probs = jax.nn.softmax(logits, axis=-1)
  probs = probs.reshape(b, h, 1, t, -1)
  return jnp.einsum('bkgts,bskd->btkgd', probs, v).reshape(b, t, h * dh)


def dpa(q, k, v, key_mask):
  b, t, h, dh = q.shape
  mask = key_mask[:, None, None, :].astype(bool)
  return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation='xla').reshape(b, t, h * dh)


def bias_scaled(q, k, v, key_mask):  # scale q, additive mask bias, 4-d einsums
  b, t, h, dh = q.shape
  bias = jnp.where(key_mask[:, None, None, :].astype(bool), 0.0, NEG)
  logits = jnp.einsum('bthd,bshd->bhts', q * (1 / math.sqrt(dh)), k) + bias
  probs = jax.nn.softmax(logits, axis=-1)
  return jnp.einsum('bhts,bshd->bthd', probs, v).reshape(b, t, h * dh)


def head_major(q, k, v, key_mask):  # explicit [B, H, T, Dh] transposes, batched matmuls
  b, t, h, dh = q.shape
  qh, kh, vh = (jnp.swapaxes(x, 1, 2) for x in (q * (1 / math.sqrt(dh)), k, v))
  logits = jnp.einsum('bhtd,bhsd->bhts', qh, kh)
  logits = jnp.where(key_mask[:, None, None, :].astype(bool), logits, NEG)
  probs = jax.nn.softmax(logits, axis=-1)
  y = jnp.einsum('bhts,bhsd->bhtd', probs, vh)
  return jnp.swapaxes(y, 1, 2).reshape(b, t, h * dh)


def head_major_bias(q, k, v, key_mask):  # attention.py now (float32): additive bias, q scaled
  b, t, h, dh = q.shape
  qh, kh, vh = (jnp.swapaxes(x, 1, 2) for x in (q * (1 / math.sqrt(dh)), k, v))
  bias = jnp.where(key_mask[:, None, None, :].astype(bool), 0.0, NEG)
  logits = jnp.einsum('bhtd,bhsd->bhts', qh, kh) + bias
  probs = jax.nn.softmax(logits, axis=-1)
  y = jnp.einsum('bhts,bhsd->bhtd', probs, vh)
  return jnp.swapaxes(y, 1, 2).reshape(b, t, h * dh)


def scale_after(q, k, v, key_mask):  # attention.py's bf16 path: scale the float32 logits
  b, t, h, dh = q.shape
  bias = jnp.where(key_mask[:, None, None, :].astype(bool), 0.0, NEG)
  qh, kh, vh = (jnp.swapaxes(x, 1, 2) for x in (q, k, v))
  logits = jnp.einsum('bhtd,bhsd->bhts', qh, kh).astype(jnp.float32) / math.sqrt(dh) + bias
  probs = jax.nn.softmax(logits, axis=-1)
  y = jnp.einsum('bhts,bhsd->bhtd', probs, vh)
  return jnp.swapaxes(y, 1, 2).reshape(b, t, h * dh)


def kT(q, k, v, key_mask):  # k transposed once to [B, H, Dh, S]: both matmuls in NN form
  b, t, h, dh = q.shape
  qh = jnp.transpose(q * (1 / math.sqrt(dh)), (0, 2, 1, 3))
  kt = jnp.transpose(k, (0, 2, 3, 1))
  vh = jnp.transpose(v, (0, 2, 1, 3))
  logits = jnp.matmul(qh, kt)
  logits = jnp.where(key_mask[:, None, None, :].astype(bool), logits, NEG)
  probs = jax.nn.softmax(logits, axis=-1)
  return jnp.transpose(jnp.matmul(probs, vh), (0, 2, 1, 3)).reshape(b, t, h * dh)


def post_norm(q, k, v, key_mask):  # normalise after PV (divide [B,T,H,Dh], not [B,H,T,S])
  b, t, h, dh = q.shape
  bias = jnp.where(key_mask[:, None, None, :].astype(bool), 0.0, NEG)
  logits = jnp.einsum('bthd,bshd->bhts', q * (1 / math.sqrt(dh)), k) + bias
  m = jax.lax.stop_gradient(jnp.max(logits, -1, keepdims=True))
  e = jnp.exp(logits - m)
  y = jnp.einsum('bhts,bshd->bthd', e, v) / jnp.swapaxes(jnp.sum(e, -1), 1, 2)[..., None]
  return y.reshape(b, t, h * dh)


VARIANTS = dict(current=current, dpa=dpa, bias_scaled=bias_scaled, head_major=head_major,
                head_major_bias=head_major_bias, scale_after=scale_after, kT=kT,
                post_norm=post_norm)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--seq', type=int, default=64)
  ap.add_argument('--repeats', type=int, default=20)
  a = ap.parse_args()
  b, t, h, dh = 32, a.seq, 12, 32
  rs = np.random.RandomState(0)
  q, k, v, g = (jnp.asarray(rs.randn(b, t, h, dh).astype(np.float32)) for _ in range(4))
  lengths = rs.randint(t // 4, t + 1, b)
  key_mask = jnp.asarray((np.arange(t)[None] < lengths[:, None]).astype(np.int32))
  fns, ref = {}, None
  for name, f in VARIANTS.items():
    def loss(q, k, v, f=f):
      return jnp.sum(f(q, k, v, key_mask) * g.reshape(b, t, h * dh))
    fwd = jax.jit(lambda q, k, v, f=f: f(q, k, v, key_mask))
    bwd = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    out = (fwd(q, k, v), bwd(q, k, v))
    if ref is None:
      ref = out
    err = max(float(jnp.max(jnp.abs(x - y)) / jnp.max(jnp.abs(y)))
              for x, y in zip(jax.tree.leaves(out), jax.tree.leaves(ref)))
    stats = []
    for fn in (fwd, bwd):
      c = fn.lower(q, k, v).compile()
      cost = c.cost_analysis()
      cost = cost[0] if isinstance(cost, list) else cost
      entry = c.as_text().split('ENTRY')[1]
      stats.append((cost.get('bytes accessed', 0) / 1e6, entry.count(' = ') - entry.count('parameter(')))
    fns[name] = (fwd, bwd, err, stats)
  best = {n: [1e9, 1e9] for n in fns}
  for _ in range(a.repeats):
    for n, (fwd, bwd, _, _) in fns.items():
      for i, fn in enumerate((fwd, bwd)):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(q, k, v))
        best[n][i] = min(best[n][i], time.perf_counter() - t0)
  for n, (f_s, b_s) in best.items():
    (fb, fo), (bb, bo) = fns[n][3]
    print(f'{n:15s} fwd {f_s * 1e3:6.2f} ms {fb:6.1f} MB {fo:3d} ops | fwd+bwd {b_s * 1e3:6.2f} ms '
          f'{bb:6.1f} MB {bo:3d} ops | rel err {fns[n][2]:.1e}')


if __name__ == '__main__':
  main()
