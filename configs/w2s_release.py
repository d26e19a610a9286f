"""python -m w2s.main --config configs/w2s_release.py:task=sciq,weak=gpt2,strong=gpt2-xl,data=/data/sciq,weak_ckpt=/ckpt/gpt2,strong_ckpt=/ckpt/gpt2-xl --workdir runs/release/sciq-gpt2-gpt2-xl

The NLP tasks of OpenAI's weak-to-strong release (github.com/openai/weak-to-strong; Burns et al.
2023), for users who bring the data and the Hugging Face checkpoints. More commands:

    python -m w2s.main --config configs/w2s_release.py:task=boolq,weak=qwen2-0.5b,strong=qwen2-7b,weak_ckpt=/ckpt/Qwen2.5-0.5B,strong_ckpt=/ckpt/Qwen2.5-7B --workdir runs/release/boolq-qwen
    python -m w2s.main --config configs/w2s_release.py:task=amazon_polarity,weak=gpt2,strong=gpt2-large,loss=xent+logconf+product,seeds=5,data=/data/amazon_polarity,weak_ckpt=/ckpt/gpt2,strong_ckpt=/ckpt/gpt2-large,linear_probe --workdir runs/release/amazon-probe
    python -m w2s.main --config configs/w2s_release.py:task=sciq,weak=gpt2,strong=qwen2-0.5b,runlocal,data=/data/sciq --workdir /tmp/w2s_release_tiny

Arguments:
  task         sciq | boolq | cosmos_qa | amazon_polarity | anthropic_hh (see w2s/data/<task>.py).
  data         sciq, amazon_polarity, anthropic_hh: the directory of downloaded files (`path`);
               boolq, cosmos_qa (TFDS catalog): a TFDS data dir, optional (downloads once).
  weak, strong a model of MODELS (the release's GPT-2 sizes; Qwen2/2.5 presets for its Qwen).
  weak_ckpt, strong_ckpt   Hugging Face directories (config.json + safetensors + tokenizer.json)
               of those models; their shapes must match the preset.
  ckpt_arch    take the architecture from each checkpoint's config.json instead of the preset (for
               checkpoints no preset matches, e.g. Qwen1.5 / Qwen2.5-14B; the named model still
               picks the learning rate, remat and dtype).
  tokenizer    directory holding a tokenizer.json for every role (default: each role uses its
               own checkpoint's tokenizer, so GPT-2 weak -> Qwen strong works as in the release).
  loss         student losses joined by '+' (release default: xent+logconf).
  fsdp         shard every large parameter and its Adam moments over all devices (FSDP, see
               w2s/partition.py) instead of replicating them; tensor=N adds N-way tensor
               parallelism (the family's Megatron rules) inside each host.
  lora         LoRA rank for the fine-tuned roles (0: full fine-tuning; EleutherAI's W2S runs
               use 8): only the adapters and the head train, at lora_lr (default 5e-4, a common
               adapter rate, since adapters need larger steps than full fine-tuning; choose it on
               held-out weak labels).
  seeds, n_docs, n_test_docs, max_length, epochs, accum (microbatches per step), dtype
               ('float32' | 'bfloat16'; default per model), mode (candidate sampling of sciq,
               cosmos_qa, anthropic_hh; default the release's 'sample'), linear_probe (frozen
               backbone, cached features, zero-initialised linear head), runlocal (tiny random
               models of the named families, 64 examples per part, one seed, 64 tokens: a
               seconds-long run for tests and Colab; seeds=, n_docs=, n_test_docs=, max_length=
               and dtype= still win when written; it ignores the checkpoints (weak_ckpt,
               strong_ckpt, ckpt_arch) and tokenizes with tokenizer= or the bundled MiniLM one).

Reference hyperparameters of the release: batch 32, 2 epochs (`gt_epochs`, also used for the
transfer), Adam, `cosine_anneal` (torch CosineAnnealingLR over all steps, no warmup, to 0), dropout
off (`train_with_dropout=False`), a zero-initialised bias-free linear head on the last token, the
student at the strong model's learning rate, logconf with aux_coef 0.5 and warmup_frac 0.1,
`max_ctx=1024` for every task, `n_docs=20000` train documents halved into A and B and
`n_test_docs=10000` (train_simple.py / sweep.py). Learning rates (weak_to_strong/config.py
MODEL_CONFIGS, "tuned at batch size 32"): gpt2 and gpt2-medium 5e-5; gpt2-large, gpt2-xl and every
Qwen 1e-5. gpt2-xl and the Qwens use gradient checkpointing (`remat` here) and bfloat16.

Differences from the release, by design or because the protocol lacks them: the release's Qwen
models are Qwen-1 (`Qwen/Qwen-1_8B`, `-7B`, `-14B`, remote code), which w2s does not import; the
Qwen2/2.5 presets stand in. Examples longer than max_length are truncated (the release drops
them); for anthropic_hh from the left, so the final assistant turn is kept. Candidate tasks draw with per-question seeds rather than one Python RNG stream.
"""
import re
from typing import NamedTuple

from ml_collections import ConfigDict, config_dict

from w2s import config_args
from w2s.errors import UserError


class Model(NamedTuple):
  family: str        # w2s model plug-in
  size: str          # its size preset
  lr: float          # the release's default_lr at batch 32
  big: bool = False  # gradient checkpointing + bfloat16 compute in the release


MODELS = {
    'gpt2': Model('gpt2', 'small', 5e-5),
    'gpt2-medium': Model('gpt2', 'medium', 5e-5),
    'gpt2-large': Model('gpt2', 'large', 1e-5),
    'gpt2-xl': Model('gpt2', 'xl', 1e-5, big=True),
    'qwen2-0.5b': Model('llama', 'qwen2-0.5b', 1e-5, big=True),
    'qwen2-1.5b': Model('llama', 'qwen2-1.5b', 1e-5, big=True),
    'qwen2.5-3b': Model('llama', 'qwen2.5-3b', 1e-5, big=True),
    'qwen2-7b': Model('llama', 'qwen2-7b', 1e-5, big=True),
}
TINY = {'gpt2': 'tiny', 'llama': 'qwen2-tiny'}   # runlocal stand-ins, random init
# task -> (reads local files via `path`, has candidate `mode`s)
TASKS = {
    'sciq': (True, True),
    'amazon_polarity': (True, False),
    'anthropic_hh': (True, True),
    'boolq': (False, False),
    'cosmos_qa': (False, True),
}
RELEASE_MAX_CTX = 1024     # train_simple.py `max_ctx`, the same for every task
RUNLOCAL_VOCAB = 152064    # tiny models take the ids of any GPT-2, Qwen or BERT tokenizer
ARGS = dict(  # arguments and defaults
    task='sciq', data='', weak='gpt2', strong='gpt2-xl', weak_ckpt='', strong_ckpt='',
    tokenizer='', loss='xent+logconf', seeds=3, n_docs=20000, n_test_docs=10000,
    max_length=RELEASE_MAX_CTX, epochs=2.0, accum=1, dtype='', mode='', linear_probe=False,
    ckpt_arch=False, runlocal=False, fsdp=False, tensor=1, lora=0, lora_lr=5e-4)


def _train(lr: float, epochs: float, accum: int) -> dict:
  return dict(optimizer=dict(name='adam', learning_rate=lr),
              schedule=dict(name='cosine', warmup_frac=0.0),
              batch_size=32, num_epochs=epochs, num_steps=0, accum_steps=accum)


def _lookup(role: str, name: str) -> Model:
  if name not in MODELS:
    raise UserError(f'{role}={name!r} is not a known model; use one of {", ".join(MODELS)}')
  return MODELS[name]


def _role(m: Model, a: config_args.Args, ckpt: str) -> dict:
  """The `weak` / `strong` section: fine-tuned, or a frozen backbone under a linear head."""
  dtype = a['dtype'] or ('bfloat16' if m.big else 'float32')
  if a['runlocal']:
    model = dict(name=m.family, size=TINY[m.family], vocab_size=RUNLOCAL_VOCAB, dropout=0.0)
    if 'dtype' in a.given:  # the tiny stand-ins run in the dtype the user asked for
      model['dtype'] = dtype
  else:
    model = dict(name=m.family, size=m.size, pretrained=ckpt, dropout=0.0, dtype=dtype,
                 remat=m.big and not a['linear_probe'])
    if a['ckpt_arch']:
      del model['size']  # create(size=None, pretrained=...) reads config.json
  lr = 1e-3 if a['runlocal'] else m.lr  # tiny random models need a larger step to move at all
  if a['lora'] and not a['linear_probe']:
    model['lora'] = dict(rank=a['lora'], alpha=2 * a['lora'], targets=('attention', 'mlp'))
    lr = a['lora_lr']
  section = dict(model=model, loss=dict(name='xent'), train=_train(lr, a['epochs'], a['accum']))
  if a['fsdp']:
    section['train']['partition'] = 'fsdp+tp' if a['tensor'] > 1 else 'fsdp'
  if a['linear_probe']:
    section.update(frozen=True, head=dict(name='mlp', size='linear'))
  return section


def _dataset(a: dict) -> dict:
  task = a['task']
  if task not in TASKS:
    raise UserError(f'task={task!r} is not a release task; use one of {", ".join(TASKS)}')
  local_files, has_modes = TASKS[task]
  spec = dict(name=task)
  if local_files:
    if not a['data']:
      raise UserError(f'task={task} reads files you download: pass data=DIR (see '
                      f'w2s/data/{task}.py for the download command and schema)')
    spec['path'] = a['data']
  elif a['data']:
    spec['data_dir'] = a['data']
  if has_modes:
    spec.update(mode=a['mode'] or 'sample', seed=0)
  elif a['mode']:
    raise UserError(f'task={task} has no candidate answers; drop mode={a["mode"]}')
  return spec


def _loss_key(name: str) -> str:
  """A ConfigDict key for a loss name (a dotted path mypkg.mod:fn is keyed by its function)."""
  return re.sub(r'\W', '_', name.rpartition(':')[2] or name)


def _losses(names: str) -> dict:
  known = {'xent': dict(name='xent'), 'product': dict(name='product', alpha=1.0, beta=1.0),
           'logconf': dict(name='logconf', aux_coef=0.5, warmup_frac=0.1)}
  return {_loss_key(n): known.get(n, dict(name=n)) for n in names.split('+') if n}


def get_config(arg: str | None = None) -> ConfigDict:
  a = config_args.parse(arg, **ARGS)
  weak, strong = _lookup('weak', a['weak']), _lookup('strong', a['strong'])
  if not a['runlocal']:
    for role in ('weak', 'strong'):
      if not a[f'{role}_ckpt']:
        raise UserError(f'{role}_ckpt= is required: a Hugging Face directory of {a[role]} '
                        '(or pass runlocal for tiny random models)')
  c = ConfigDict()
  c.protocol = dict(name='weak_to_strong')
  c.dataset = _dataset(a)
  no_cap = lambda: config_dict.placeholder(int)  # None, overridable with an int
  c.splits = dict(weak_fraction=0.5, val_fraction=0.0, balance=False,
                  max_weak=a['n_docs'] // 2, max_strong=a['n_docs'] - a['n_docs'] // 2,
                  max_test=a['n_test_docs'] or no_cap())
  tokenizer = a['tokenizer'] or ('minilm' if a['runlocal'] else a['strong_ckpt'])
  # HH dialogues end with the assistant turn that tells chosen from rejected: keep the end
  truncation = 'left' if a['task'] == 'anthropic_hh' else 'right'
  c.tokenizer = dict(tokenizer=tokenizer, max_length=a['max_length'], truncation=truncation)
  c.seeds = tuple(range(a['seeds']))
  c.weak = _role(weak, a, a['weak_ckpt'])
  c.strong = _role(strong, a, a['strong_ckpt'])
  if not (a['tokenizer'] or a['runlocal']):
    # each role tokenizes with its own checkpoint's tokenizer, as the release did (GPT-2 -> Qwen)
    for role in ('weak', 'strong'):
      c[role].tokenizer = dict(tokenizer=a[f'{role}_ckpt'], max_length=a['max_length'],
                               truncation=truncation)
  c.student_losses = _losses(a['loss'])
  c.student_order = tuple(_loss_key(n) for n in a['loss'].split('+') if n)
  if not c.student_losses:
    raise UserError('loss= names no student loss; e.g. loss=xent+logconf')
  c.chain = ()            # bootstrapping: intermediate learner sections, weak -> ... -> strong
  c.relabel_rounds = 0    # strong-to-strong relabelling rounds after the student
  c.eval_batch_size = 32  # the release's GPT-2 eval batch (it used 2 for gpt2-xl and Qwen)
  c.log_every = 50
  c.checkpoint_every = 500
  # two: a damaged newest checkpoint (a kill mid-write) leaves the one before to resume from. A
  # gpt2-xl checkpoint with Adam state is ~18 GB; short of disk, --config.keep_checkpoints=1
  # halves that, but then a damaged checkpoint means deleting the stage and training it again
  c.keep_checkpoints = 2
  c.mesh = dict(num_devices=0)
  if a['tensor'] > 1 and not a['fsdp']:
    raise UserError('tensor= splits parameters within FSDP; pass fsdp too (fsdp,tensor=2)')
  if a['fsdp']:  # the batch still splits over every device (data x fsdp)
    c.mesh.shape = dict(data=1, fsdp=-1, tensor=a['tensor'])
  if a['runlocal']:  # presets: an argument the user wrote (seeds=, n_docs=, ...) wins over them
    c.smoke = True  # a smoke test, not a result: tables and plots say so
    n_docs = a.preset('n_docs', 128)
    c.splits.max_weak, c.splits.max_strong = n_docs // 2, n_docs - n_docs // 2
    c.splits.max_test = a.preset('n_test_docs', 64) or no_cap()
    c.tokenizer.max_length = a.preset('max_length', 64)
    c.seeds = tuple(range(a.preset('seeds', 1)))
    c.log_every = 1
  return c
