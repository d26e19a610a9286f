"""Tokens/s of KV-cache decoding (w2s.models.decoding) vs recomputing the prefix every step.

  python benchmarks/models_decoding.py [--model llama:tiny] [--batch 8] [--prompt 32] [--new 64]
      [--dtype float32|bfloat16]

Both decode greedily from the same right-padded prompts; the cached loop is one jitted
lax.while_loop, the baseline a jitted full forward over a fixed [B, prompt + new] buffer per new
token (quadratic in length). Checks that both produce the same tokens and prints the two rates
(median of --repeats after a compile-and-warm-up run) and their ratio; `main(argv)` returns them.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from w2s import registry  # noqa: E402
from w2s.models import decoding, hf_import  # noqa: E402


def recompute_greedy(model, params, ids, mask, new, forward):
  b, t = ids.shape
  buf = np.zeros((b, t + new), np.int32)
  buf[:, :t] = ids
  lengths = mask.sum(1)
  for _ in range(new):
    valid = (np.arange(t + new)[None] < lengths[:, None]).astype(np.int32)
    logits = np.asarray(forward(params, buf, valid))[np.arange(b), lengths - 1]
    buf[np.arange(b), lengths] = logits.argmax(-1)
    lengths = lengths + 1
  return buf


def main(argv=None) -> dict:
  """Runs both loops; {'kv cache': tok/s, 'recompute': tok/s, 'speedup', 'same_tokens'}."""
  ap = argparse.ArgumentParser()
  ap.add_argument('--model', default='llama:tiny')
  ap.add_argument('--batch', type=int, default=8)
  ap.add_argument('--prompt', type=int, default=32)
  ap.add_argument('--new', type=int, default=64)
  ap.add_argument('--repeats', type=int, default=3)
  ap.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'),
                  help='compute dtype (parameters stay float32)')
  args = ap.parse_args(argv)
  name, size = args.model.split(':')
  model = registry.build('models', dict(name=name, size=size, lm_head=True, dtype=args.dtype),
                         num_classes=2)
  rs = np.random.RandomState(0)
  ids = rs.randint(1, model.backbone.config.vocab_size, (args.batch, args.prompt)).astype(np.int32)
  mask = (np.arange(args.prompt)[None] < rs.randint(args.prompt // 2, args.prompt + 1,
                                                     (args.batch, 1))).astype(np.int32)
  params = hf_import.init_params(model, jax.random.key(0), {'input_ids': ids, 'attention_mask': mask})
  forward = jax.jit(lambda p, i, m: model.apply({'params': p}, i, m, method='lm')[0])

  def cached():
    return jax.block_until_ready(decoding.generate(model, params, ids, mask,
                                                   max_new_tokens=args.new)['tokens'])

  def recompute():
    return recompute_greedy(model, params, ids, mask, args.new, forward)

  rates, same = {}, None
  for label, fn in (('kv cache', cached), ('recompute', recompute)):
    out = fn()
    times = []
    for _ in range(args.repeats):
      t = time.perf_counter()
      fn()
      times.append(time.perf_counter() - t)
    rates[label] = args.batch * args.new / statistics.median(times)
    print(f'{label:10s} {rates[label]:10.1f} tokens/s', flush=True)
    if label == 'kv cache':
      tokens = np.asarray(out)
    else:
      lengths = mask.sum(1)
      same = all((out[r, lengths[r]:lengths[r] + args.new] == tokens[r]).all()
                 for r in range(args.batch))
      print(f'same tokens: {same}; speed-up {rates["kv cache"] / rates["recompute"]:.1f}x')
  return dict(rates, speedup=rates['kv cache'] / rates['recompute'], same_tokens=bool(same))


if __name__ == '__main__':
  main()
