"""The MiniLM step's GEMM shapes in XLA:CPU (jnp.dot under jit) vs torch, min of alternated runs.

    .venv/bin/python experiments/perf/gemm_vs_torch.py

Forward x @ W, dX = dy @ W^T and dW = x^T @ dy at [B*T = 2048] x 384 x 1536 (the MLP) and
384 x 384 (the attention projections), and the batched attention matmuls [B*H, T, Dh]. The
minimum over repeats is the figure least affected by other processes. Each timed call follows a
50 ms pause: torch's OpenMP threads spin for 5-20 ms after each op and slow a JAX call that starts
right after it by up to 35% (15.8 vs 11.7 ms on the first shape).
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

torch.set_num_threads(2)
rs = np.random.RandomState(0)


def case(name, fj, ft, *shapes, flops):
  arrs = [rs.randn(*s).astype(np.float32) for s in shapes]
  ja = [jnp.asarray(a) for a in arrs]
  ta = [torch.from_numpy(a) for a in arrs]
  jf = jax.jit(fj)
  jax.block_until_ready(jf(*ja))
  ft(*ta)
  best = {'jax': 1e9, 'torch': 1e9}
  for _ in range(15):
    time.sleep(0.05)
    t = time.perf_counter()
    jax.block_until_ready(jf(*ja))
    best['jax'] = min(best['jax'], time.perf_counter() - t)
    time.sleep(0.05)
    t = time.perf_counter()
    ft(*ta)
    best['torch'] = min(best['torch'], time.perf_counter() - t)
  print(f'{name:34s} jax {best["jax"]*1e3:7.2f} ms ({flops / best["jax"] / 1e9:5.0f} GFLOP/s)  '
        f'torch {best["torch"]*1e3:7.2f} ms ({flops / best["torch"] / 1e9:5.0f} GFLOP/s)  '
        f'jax/torch time {best["jax"] / best["torch"]:.2f}', flush=True)


M = 2048
for k, n in ((384, 1536), (1536, 384), (384, 384)):
  f = 2 * M * k * n
  case(f'fwd x[{M},{k}] @ W[{k},{n}]', lambda x, w: x @ w, lambda x, w: x @ w, (M, k), (k, n), flops=f)
  case(f'dX dy[{M},{n}] @ W^T', lambda d, w: d @ w.T, lambda d, w: d @ w.T, (M, n), (k, n), flops=f)
  case(f'dW x^T[{k},{M}] @ dy[{M},{n}]', lambda x, d: x.T @ d, lambda x, d: x.T @ d, (M, k), (M, n), flops=f)
B, H, T, D = 32, 12, 64, 32
f = 2 * B * H * T * T * D
case('qk^T [384,64,32]x[384,64,32]', lambda q, k: jnp.einsum('ntd,nsd->nts', q, k),
     lambda q, k: q @ k.transpose(1, 2), (B * H, T, D), (B * H, T, D), flops=f)
case('pv [384,64,64]x[384,64,32]', lambda p, v: jnp.einsum('nts,nsd->ntd', p, v),
     lambda p, v: p @ v, (B * H, T, T), (B * H, T, D), flops=f)
case('qk^T from [B,T,H,D] (einsum)', lambda q, k: jnp.einsum('bthd,bshd->bhts', q, k),
     lambda q, k: q.transpose(1, 2) @ k.permute(0, 2, 3, 1), (B, T, H, D), (B, T, H, D), flops=f)
