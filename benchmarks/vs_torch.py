"""w2s (JAX/Flax) against the PyTorch + Hugging Face reference, side by side in one process.

    python benchmarks/vs_torch.py [--only step,extract,decode] [--models minilm,gpt2]
        [--batch 32] [--seq 64|128] [--blocks 5] [--steps 3] [--dropout 0.0] [--rt 0]
        [--threads N] [--torch_adam default|foreach|fused] [--malloc glibc|tuned] [--bf16]
        [--device cpu|cuda] [--smoke]

Models, with the same weights on both sides:
  minilm  all-MiniLM-L6-v2 as shipped with w2s: `bert` with pretrained='minilm' vs transformers
          `BertModel.from_pretrained` of the same directory (without the unused pooler); both with
          classifier.py's head, a zero-initialised linear layer without bias on mean-pooled real
          tokens;
  gpt2    GPT-2 small's config, random weights: a transformers `GPT2LMHeadModel` drawn with seed 0
          and saved to a temporary directory, which `gpt2` imports (pretrained=<dir>); the head
          reads the last real token.
Workloads, each the median of per-block throughput over --blocks blocks alternating between the
sides (ours, torch, ours, torch, ...; after compilation and a warm-up, both excluded and printed):
  step     one fine-tuning update (forward, backward, Adam at --lr, cross-entropy on one-hot
           labels) at [batch, seq]: ours is `train.train_step` with `optim.make_optimizer`'s Adam,
           jitted with the state donated as `train.fit` does; torch: model.train(), the loss,
           backward, torch.optim.Adam (same betas, eps, lr);
  extract  frozen pooled features (forward only, eval mode) at [batch, seq]; with --rt N also over
           the first N real Rotten Tomatoes snippets (minilm): ours `features.extract` (length-
           sorted buckets) vs torch padded to --rt_len ('torch'), to each batch's longest in data
           order ('torch_dynamic', HF's DataCollatorWithPadding), and on our buckets ('torch_sorted');
  decode   greedy decoding with a KV cache (gpt2): ours `decoding.generate`, torch `generate()`;
           tokens/s counts batch x new tokens, the prompt's forward included.
Before timing, the pooled features of both sides on a right-padded batch are compared (max abs
difference printed, asserted below 1e-4 of the largest feature in fp32, 3e-2 in bf16), as are the
Rotten Tomatoes features and the greedy tokens (share printed: random weights have near-ties).
Torch uses --threads intra-op threads; JAX's XLA:CPU its own pool of all cores (for one thread
start the process with XLA_FLAGS='--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1'). On a loaded machine torch's OpenMP threads suffer far more than
XLA's pool: compare at --threads 1 too. The load average is printed at the start and end, LOADED
when the 1-minute figure exceeds the cores.
--malloc tuned sets glibc's malloc for the whole process (both sides) as `host_malloc.enable()`:
one arena, no mmap chunks, no trimming, so XLA's per-call temp buffer (713 MB for the minilm step)
and torch's large tensors reuse heap pages instead of being mapped, faulted in and unmapped on
every call; the default 'glibc' leaves glibc's defaults. Minor page faults and system CPU seconds
per call are printed with each side's figures.
"""
import argparse
import bz2
import contextlib
import copy
import csv
import dataclasses
import datetime
import functools
import io
import os
import resource
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # host_malloc, when loaded by path

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

import host_malloc  # noqa: E402
from w2s import assets, optim, registry, train  # noqa: E402
from w2s.models import decoding, features, hf_import  # noqa: E402

MODELS = ('minilm', 'gpt2')
WORKLOADS = ('step', 'extract', 'decode')
ADAM = {'default': {}, 'foreach': {'foreach': True}, 'fused': {'fused': True}}
TOTAL_STEPS = 1000  # the schedule's horizon (constant learning rate: only a static argument)


def parse(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument('--only', default=','.join(WORKLOADS), help='workloads, comma-separated')
  ap.add_argument('--models', default=','.join(MODELS))
  ap.add_argument('--batch', type=int, default=32)
  ap.add_argument('--seq', type=int, default=64, help='tokens per example (64 or 128)')
  ap.add_argument('--blocks', type=int, default=5, help='alternating timed blocks per side')
  ap.add_argument('--steps', type=int, default=3, help='calls per block (step, extract)')
  ap.add_argument('--lr', type=float, default=5e-5, help="Adam's; the release's GPT-2 default")
  ap.add_argument('--dropout', type=float, default=0.0, help='both sides (the release trains at 0)')
  ap.add_argument('--layers', type=int, default=0, help='0: full depth (minilm 6, gpt2 12)')
  ap.add_argument('--rt', type=int, default=None,
                  help='Rotten Tomatoes snippets to extract (default 0: off; 16 with --smoke)')
  ap.add_argument('--rt_len', type=int, default=128, help='their tokenizer max_length')
  ap.add_argument('--decode_batch', type=int, default=8)
  ap.add_argument('--prompt', type=int, default=32, help='prompt tokens (decode)')
  ap.add_argument('--new', type=int, default=32, help='new tokens (decode)')
  ap.add_argument('--threads', type=int, default=os.cpu_count() or 1, help='torch intra-op threads')
  ap.add_argument('--torch_adam', default='default', choices=sorted(ADAM),
                  help="torch.optim.Adam's implementation (default: what the release runs)")
  ap.add_argument('--malloc', default='glibc', choices=('glibc', 'tuned'),
                  help="glibc's defaults, or host_malloc.enable() for the whole process")
  ap.add_argument('--bf16', action='store_true', help='bf16 compute both sides (autocast / dtype)')
  ap.add_argument('--device', default='cpu', help="torch's device (cpu, cuda); JAX its default")
  ap.add_argument('--tf32', action='store_true',
                  help='GPU fp32 matmuls in TF32 on both sides (default: full fp32 on both)')
  ap.add_argument('--smoke', action='store_true', help='tiny sizes, under a minute')
  args = ap.parse_args(argv)
  if args.smoke:
    args.batch, args.seq, args.blocks, args.steps, args.layers = 4, 16, 2, 1, 1
    args.decode_batch, args.prompt, args.new, args.rt_len = 2, 8, 4, 64
  args.rt = (16 if args.smoke else 0) if args.rt is None else args.rt
  args.only, args.models = args.only.split(','), args.models.split(',')
  bad = sorted(set(args.only) - set(WORKLOADS)) + sorted(set(args.models) - set(MODELS))
  if bad:
    ap.error(f'unknown {bad}; workloads: {",".join(WORKLOADS)}; models: {",".join(MODELS)}')
  return args


class TorchClassifier(torch.nn.Module):
  """classifier.py's model in torch: a zero linear head without bias on pooled hidden states."""

  def __init__(self, backbone, pooling: str, num_classes: int = 2):
    super().__init__()
    self.backbone, self.pooling = backbone, pooling
    self.head = torch.nn.Linear(backbone.config.hidden_size, num_classes, bias=False)
    torch.nn.init.zeros_(self.head.weight)

  def features(self, ids, mask):
    """[B, T] -> [B, D] float32: mean of real tokens, or the last real one (as `classifier.pool`)."""
    hidden = self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state.float()
    m = mask.float()
    if self.pooling == 'mean':
      return torch.einsum('btd,bt->bd', hidden, m) / m.sum(1, keepdim=True).clamp(min=1.0)
    last = mask.shape[1] - 1 - torch.argmax(torch.flip(m, [1]), dim=1)
    return hidden[torch.arange(len(ids), device=ids.device), last]

  def forward(self, ids, mask):
    feats = self.features(ids, mask)
    with torch.autocast(ids.device.type, enabled=False):  # ours: the head computes in float32
      return self.head(feats)


@dataclasses.dataclass
class Pair:
  name: str
  ours: Any                 # w2s TextClassifier
  params: Any               # its params, on the default JAX device
  clf: TorchClassifier      # on --device
  vocab: int
  lm: Any = None            # GPT2LMHeadModel sharing clf's backbone (decoders)
  tokenizer_dir: str | None = None


def build(name: str, args, tmp: str) -> Pair:
  """Both sides of `name` with the same weights."""
  d, dtype = args.dropout, 'bfloat16' if args.bf16 else 'float32'
  lm = None
  if name == 'minilm':
    path = hf_import.resolve('minilm')
    spec = dict(name='bert', pretrained='minilm', dropout=d, dtype=dtype)
    hf = dict(hidden_dropout_prob=d, attention_probs_dropout_prob=d)
    if args.layers:
      spec['layers'], hf['num_hidden_layers'] = args.layers, args.layers
    backbone = transformers.BertModel.from_pretrained(path, add_pooling_layer=False, **hf)
    clf = TorchClassifier(backbone, 'mean')
  else:
    path = None
    cfg = transformers.GPT2Config(n_layer=args.layers or 12, n_embd=768, n_head=12,
                                  resid_pdrop=d, embd_pdrop=d, attn_pdrop=d)
    torch.manual_seed(0)
    lm = transformers.GPT2LMHeadModel(cfg)
    lm.save_pretrained(tmp)
    spec = dict(name='gpt2', pretrained=tmp, dropout=d, dtype=dtype)
    clf = TorchClassifier(lm.transformer, 'last')
    lm.to(args.device).eval()
  ours = registry.build('models', spec, num_classes=2)
  sample = {'input_ids': np.zeros((1, 8), np.int32), 'attention_mask': np.ones((1, 8), np.int32)}
  params = jax.device_put(hf_import.init_params(ours, jax.random.PRNGKey(0), sample))
  return Pair(name, ours, params, clf.to(args.device).eval(), ours.backbone.config.vocab_size,
              lm, path)


def autocast(args):
  return torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16, enabled=args.bf16)


def sync(args) -> Callable:
  return torch.cuda.synchronize if torch.device(args.device).type == 'cuda' else (lambda: None)


def torch_features(clf, ids, mask, args) -> np.ndarray:
  t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.long, device=args.device)
  with torch.inference_mode(), autocast(args):
    return clf.features(t(ids), t(mask)).float().cpu().numpy()


def token_batch(vocab: int, b: int, t: int, padded: bool, seed: int = 0) -> dict:
  """Random ids [b, t] (never special ids); right padding of random lengths when `padded`."""
  rs = np.random.RandomState(seed)
  ids = rs.randint(1000, vocab, (b, t)).astype(np.int32)
  lengths = rs.randint(max(1, t // 4), t + 1, b) if padded else np.full(b, t)
  mask = (np.arange(t)[None] < lengths[:, None]).astype(np.int32)
  return {'input_ids': ids * mask, 'attention_mask': mask}


def agreement(pair: Pair, args) -> dict:
  """Pooled features of both sides on one right-padded batch: max abs diff (asserted small)."""
  batch = token_batch(pair.vocab, 8, args.seq, padded=True, seed=1)
  ours = np.asarray(features.default_forward(pair.ours)(pair.params, batch), np.float32)
  theirs = torch_features(pair.clf, batch['input_ids'], batch['attention_mask'], args)
  return _compare(f'{pair.name} features [8, {args.seq}] right-padded', ours, theirs, args)


def _compare(what: str, ours, theirs, args) -> dict:
  diff = float(np.abs(ours - theirs).max())
  rel = diff / max(float(np.abs(theirs).max()), 1e-30)
  tol = 3e-2 if args.bf16 else 1e-2 if args.tf32 else 1e-4
  print(f'agreement {what}: max |ours - torch| {diff:.2e} ({rel:.2e} of the largest; tol {tol:g})',
        flush=True)
  assert rel < tol, f'{what}: ours and torch disagree ({rel:.2e} > {tol}): not the same model'
  return {'max_abs_diff': diff, 'rel': rel}


@dataclasses.dataclass
class Side:
  label: str
  call: Callable[[], Any]   # one unit of work (a step, a batch, a pass, a generate)
  items: int                # examples (or tokens) per call
  sync: Callable[[Any], Any]
  compile_s: float = float('nan')   # JAX compilation (excluded)
  warm_s: float = float('nan')      # the first call(s) after it, untimed
  rates: list = dataclasses.field(default_factory=list)
  faults: list = dataclasses.field(default_factory=list)   # minor page faults per call
  sys_s: list = dataclasses.field(default_factory=list)    # system CPU seconds per call

  def warm(self, calls: int = 1):
    t = time.perf_counter()
    for _ in range(calls):
      self.sync(self.call())
    self.warm_s = time.perf_counter() - t

  def block(self, calls: int):
    r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    out = None
    for _ in range(calls):
      out = self.call()
    self.sync(out)
    self.rates.append(calls * self.items / (time.perf_counter() - t))
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    self.faults.append((r1.ru_minflt - r0.ru_minflt) / calls)
    self.sys_s.append((r1.ru_stime - r0.ru_stime) / calls)


def _compiled(fn, *example):
  t = time.perf_counter()
  c = fn.lower(*example).compile()
  return c, time.perf_counter() - t


def step_sides(pair: Pair, args) -> list[Side]:
  """Our `train.train_step` (as `fit` jits it) and torch's train-mode update, the same batch."""
  b = token_batch(pair.vocab, args.batch, args.seq, padded=False)
  labels = np.eye(2, dtype=np.float32)[np.arange(args.batch) % 2]
  batch = jax.device_put({**b, 'label': labels, 'mask': np.ones(args.batch, np.float32)})
  tx, schedule = optim.make_optimizer(dict(name='adam', learning_rate=args.lr),
                                      dict(name='constant'), TOTAL_STEPS)
  step = functools.partial(train.train_step, apply_fn=train.linen_apply_fn(pair.ours),
                           loss_fn=registry.get('losses', 'xent'), tx=tx, schedule=schedule,
                           total_steps=TOTAL_STEPS)
  params = jax.tree.map(jnp.array, pair.params)  # a copy: the step donates its state
  state = [train.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                            opt_state=tx.init(params), rng=jax.random.PRNGKey(0))]
  compiled, compile_s = _compiled(jax.jit(step, donate_argnums=0), state[0], batch)

  def ours_call():
    state[0], _ = compiled(state[0], batch)
    return state[0]

  clf = copy.deepcopy(pair.clf).train()  # the shared weights stay untrained for the rest
  opt = torch.optim.Adam(clf.parameters(), lr=args.lr, **ADAM[args.torch_adam])
  t = lambda a, dt=torch.long: torch.as_tensor(a, dtype=dt, device=args.device)
  ids, mask, target = t(b['input_ids']), t(b['attention_mask']), t(labels, torch.float32)

  def torch_call():
    opt.zero_grad(set_to_none=True)
    with autocast(args):
      logits = clf(ids, mask)
    torch.nn.functional.cross_entropy(logits.float(), target).backward()
    opt.step()

  return [Side('ours', ours_call, args.batch, jax.block_until_ready, compile_s),
          Side('torch', torch_call, args.batch, lambda _: sync(args)())]


def extract_sides(pair: Pair, args) -> list[Side]:
  """Frozen features at a fixed [batch, seq], eval mode, both sides."""
  batch = token_batch(pair.vocab, args.batch, args.seq, padded=False)
  compiled, compile_s = _compiled(features.default_forward(pair.ours), pair.params, batch)
  dev = jax.device_put(batch)
  ours = Side('ours', lambda: np.asarray(compiled(pair.params, dev)), args.batch, lambda _: None,
              compile_s)
  clf = pair.clf.eval()
  t = lambda a: torch.as_tensor(a, dtype=torch.long, device=args.device)
  ids, mask = t(batch['input_ids']), t(batch['attention_mask'])

  def torch_call():
    with torch.inference_mode(), autocast(args):
      return clf.features(ids, mask).float().cpu().numpy()
  return [ours, Side('torch', torch_call, args.batch, lambda _: None)]


def rotten_tomatoes_texts(n: int) -> list[str]:
  """The first n critics' snippets (plot rows dropped), as `w2s.data.rotten_tomatoes` reads them."""
  out = []
  with bz2.open(assets.rotten_tomatoes_csv(), 'rt', encoding='utf-8', newline='') as f:
    for row in csv.DictReader(f):
      if row['category'] != 'plot':
        out.append(row['text'])
        if len(out) == n:
          break
  return out


def rt_sides(pair: Pair, args, agree: dict) -> list[Side]:
  """N real snippets: our length-bucketed `features.extract` vs torch fixed / dynamic / sorted."""
  inputs = features.tokenize(rotten_tomatoes_texts(args.rt), pair.tokenizer_dir,
                             max_length=args.rt_len)
  n, bs = len(inputs['input_ids']), args.batch
  forward = features.default_forward(pair.ours)

  def ours_call():
    with contextlib.redirect_stderr(io.StringIO()):  # extract's progress line
      return features.extract(pair.ours, pair.params, inputs, batch_size=bs, forward=forward)

  ids, mask = inputs['input_ids'], inputs['attention_mask']
  in_order = [np.arange(s, min(s + bs, n)) for s in range(0, n, bs)]
  trim = lambda r: int(mask[r].sum(1).max())
  plans = {'torch': [(r, ids[r], mask[r]) for r in in_order],
           'torch_dynamic': [(r, ids[r, :trim(r)], mask[r, :trim(r)]) for r in in_order],
           'torch_sorted': [(r, b['input_ids'][:len(r)], b['attention_mask'][:len(r)])
                            for r, b in features._batches(inputs, bs, 16)]}  # pylint: disable=protected-access

  def torch_pass(plan):
    out = np.zeros((n, pair.clf.backbone.config.hidden_size), np.float32)
    for rows, i, m in plan:
      out[rows] = torch_features(pair.clf, i, m, args)
    return out

  t = time.perf_counter()
  ours_feats = ours_call()  # compiles every bucket's shape
  first = time.perf_counter() - t
  lengths = mask.sum(1)
  print(f'rotten tomatoes: {n} snippets, tokens mean {lengths.mean():.1f}, max {lengths.max()} '
        f'(max_length {args.rt_len}); our first pass (compiles) {first:.1f} s', flush=True)
  agree['minilm rotten_tomatoes'] = _compare(f'minilm rotten tomatoes features [{n}]',
                                             ours_feats, torch_pass(plans['torch']), args)
  sides = [Side('ours', ours_call, n, lambda _: None, first)]
  sides += [Side(k, functools.partial(torch_pass, p), n, lambda _: None) for k, p in plans.items()]
  return sides


def decode_sides(pair: Pair, args, agree: dict) -> list[Side]:
  """Greedy KV-cache decoding of the same prompts; tokens/s of the new tokens."""
  b = token_batch(pair.vocab, args.decode_batch, args.prompt, padded=False, seed=2)
  ids, mask = b['input_ids'], b['attention_mask']
  ours_call = lambda: decoding.generate(pair.ours, pair.params, ids, mask,
                                        max_new_tokens=args.new)['tokens']
  t = time.perf_counter()
  ours_tokens = np.asarray(ours_call())
  first = time.perf_counter() - t
  tt = lambda a: torch.as_tensor(a, dtype=torch.long, device=args.device)

  def torch_call():
    with torch.inference_mode(), autocast(args):
      return pair.lm.generate(input_ids=tt(ids), attention_mask=tt(mask), do_sample=False,
                              max_new_tokens=args.new, min_new_tokens=args.new, pad_token_id=0)
  theirs = torch_call()[:, args.prompt:].cpu().numpy()
  same = float((theirs == ours_tokens).mean())
  print(f'agreement gpt2 greedy tokens [{args.decode_batch}, {args.new}]: {same:.0%} identical',
        flush=True)
  agree['gpt2 greedy tokens'] = {'same': same}
  items = args.decode_batch * args.new
  return [Side('ours', ours_call, items, jax.block_until_ready, first),
          Side('torch', torch_call, items, lambda _: sync(args)())]


def run(key: str, sides: list[Side], args, unit: str, calls: int) -> dict:
  """Warm-up, alternating blocks, the table rows; {label: median rate, ratio..., compile_s}."""
  for s in sides:  # ours has compiled already; torch's first calls allocate and pick kernels
    s.warm(1 if s.label == 'ours' else min(calls, 2))
  for _ in range(args.blocks):
    for s in sides:
      s.block(calls)
  med = {s.label: statistics.median(s.rates) for s in sides}
  out = dict(med, unit=unit, compile_s=sides[0].compile_s,
             warm_s={s.label: s.warm_s for s in sides}, rates={s.label: s.rates for s in sides},
             faults={s.label: statistics.median(s.faults) for s in sides},
             sys_s={s.label: statistics.median(s.sys_s) for s in sides})
  for s in sides[1:]:
    out['ratio' if s.label == 'torch' else f'ratio_{s.label}'] = med['ours'] / med[s.label]
  print(f'{key}')
  for s in sides:
    extra = f'compile {s.compile_s:.1f} s, ' if s.compile_s == s.compile_s else ''
    ratio = '' if s.label == 'ours' else f'   ours/{s.label} {med["ours"] / med[s.label]:.2f}'
    spread = f'[{min(s.rates):.1f}..{max(s.rates):.1f}]'
    print(f'  {s.label:14s} {med[s.label]:10.1f} {unit} {spread:>20s}  ({extra}warm-up '
          f'{s.warm_s:.1f} s; per call {statistics.median(s.faults):.0f} faults, sys '
          f'{statistics.median(s.sys_s):.3f} s){ratio}', flush=True)
  return out


def header(args, load0) -> None:
  dev = jax.devices()[0]
  print(f'{datetime.datetime.now().isoformat(timespec="seconds")}  jax {jax.__version__} '
        f'flax {flax.__version__} ({dev.platform}: {jax.device_count()} x {dev.device_kind})  '
        f'torch {torch.__version__} transformers {transformers.__version__} ({args.device}'
        + (f': {torch.cuda.get_device_name()})' if args.device.startswith('cuda') else ')'))
  cores = os.cpu_count() or 1
  print(f'threads: torch {torch.get_num_threads()}, XLA its own pool of {cores} cores; '
        f'load {load0[0]:.2f} on {cores} cores')
  precision = 'bf16' if args.bf16 else 'fp32' + (' (TF32 matmuls)' if args.tf32 else '')
  print(f'{precision}, dropout {args.dropout}, Adam lr {args.lr} (torch '
        f'{args.torch_adam}); malloc {args.malloc}; step/extract [{args.batch}, {args.seq}], decode [{args.decode_batch}'
        f', {args.prompt}] + {args.new} new; {args.blocks} blocks x {args.steps} calls; layers '
        f'{args.layers or "full"}', flush=True)
  if dev.platform == 'cpu' and args.threads != cores:
    print(f'note: --threads {args.threads} limits torch only; JAX still uses {cores} cores')


def main(argv=None) -> dict:
  """Runs the comparison; {'<model>/<workload>': figures, '_': agreement, load, settings}."""
  args = parse(argv)
  if args.malloc == 'tuned' and not host_malloc.enable():  # before JAX's and torch's threads
    print('note: --malloc tuned needs glibc; running with the default allocator')
  torch.set_num_threads(args.threads)
  if jax.default_backend() != 'cpu':  # JAX's GPU default is TF32, torch's full fp32: make them one
    jax.config.update('jax_default_matmul_precision', 'tensorfloat32' if args.tf32 else 'highest')
  torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
  transformers.logging.set_verbosity_error()
  transformers.utils.logging.disable_progress_bar()
  load0 = os.getloadavg()
  header(args, load0)
  out, agree = {}, {}
  with tempfile.TemporaryDirectory() as tmp:
    for name in args.models:
      pair = build(name, args, tmp)
      agree[name] = agreement(pair, args)
      for w in args.only:
        key = f'{name}/{w}'
        if w == 'step':
          out[key] = run(f'{key} [{args.batch}, {args.seq}]', step_sides(pair, args), args,
                         'ex/s', args.steps)
        elif w == 'extract':
          out[key] = run(f'{key} [{args.batch}, {args.seq}]', extract_sides(pair, args), args,
                         'ex/s', args.steps)
          if args.rt and name == 'minilm':
            out[f'{key}_rt'] = run(f'{key} rotten tomatoes [{args.rt}] batch {args.batch}',
                                   rt_sides(pair, args, agree), args, 'ex/s', 1)
        elif w == 'decode' and pair.lm is not None:
          out[key] = run(f'{key} [{args.decode_batch}, {args.prompt}] + {args.new}',
                         decode_sides(pair, args, agree), args, 'tok/s', 1)
      del pair
  load1 = os.getloadavg()
  cores = os.cpu_count() or 1
  loaded = max(load0[0], load1[0]) > cores
  print(f'load average start {load0[0]:.2f} end {load1[0]:.2f} on {cores} cores'
        + ('  LOADED: figures are unreliable' if loaded else ''))
  out['_'] = dict(agree=agree, load=(load0, load1), loaded=loaded, args=vars(args))
  return out


if __name__ == '__main__':
  main()
