"""Generative weak-to-strong by SFT on weak generations, offline: the synthetic arithmetic world.

    python -m w2s.main --config configs/w2s_sft.py --workdir runs/w2s_sft
    python -m w2s.main --config configs/w2s_sft.py:runlocal --workdir /tmp/w2s_sft_tiny
    python -m w2s.main --config configs/w2s_sft.py:filter=majority,samples=4 --workdir runs/sft_maj

No pretrained decoder ships offline, so both decoders are pretrained here, as causal LMs on a
corpus w2s generates (`w2s.data.arithmetic.corpus`: terse sums like '47+58=105' among
distractor lines; no test problem is ever stated): the strong one 4 layers x 128, the weak one
3 x 64, both 1,500 steps. The downstream task asks for the same sums in a format the corpus never
shows ('q: what is 47 plus 58? a:' -> ' 105'); the weak decoder is fine-tuned on A's gold answers,
answers B, and the strong decoder is fine-tuned on those answers (students) or on B's gold
answers (ceiling). Scores are exact-match accuracies of greedy answers on test, and of the weak
model and the ceiling on val (`acc_weak_val`, `acc_ceiling_val`).

How the defaults were chosen (experiments/generative/README.md; seed 0, `experiments/generative/
probe.py`; never on test, never on B's gold): every SFT stage is 600 steps of batch 32 at lr 1e-3
(AdamW, cosine, best of every 50 steps by val loss), the recipe whose ceiling scored best on val
gold (92.8% exact match, against 91.0% at lr 3e-4; the old 200 steps at 3e-4 gave 30%). The weak
design is the one with the best val exact match between collapse and the ceiling under that
recipe: 3 x 64 with 1,500 pretraining steps (9.5%), against 3 x 64 / 800 steps (9.3%), 2 x 128 /
1,000 (9.0%) and 4 x 128 / 500 (9.0%); 2 x 128 / 1,500 reached 93.8%, the ceiling itself, and the
old 2 x 48 / 300 at lr 1e-3 for 200 steps collapsed to one answer (0.5%).

Arguments: seeds=N, losses=sft (student losses of LOSSES, '+'-joined: sft, sft_sum), filter=none|majority|agreement|
confidence, samples=N (weak samples per prompt of B; > 1 samples at temperature 0.7), rounds=N
(iterated rounds, W2S-Reasoning), digits=D (operand digits), score=extract|choices (choices: the
multiple-choice view, four candidate sums listed in the prompt, each model scored by the candidate
it gives the highest mean token log-prob; training still SFT on the answers), runlocal (tiny
models and splits, for tests). For accelerators: weak_ckpt=DIR, strong_ckpt=DIR (Hugging Face decoders sharing one
tokenizer, e.g. Qwen2.5-0.5B and Qwen2.5-7B), data=DIR (a `files` dataset with 'question' and
'answer' columns, GSM8K-style: the answer's last number is scored), lora=R.
"""
from ml_collections import ConfigDict

from w2s import config_args
from w2s.errors import UserError

ARGS = dict(seeds=5, losses='sft', filter='none', samples=1, rounds=1, digits=2, score='extract',
            runlocal=False,
            weak_ckpt='', strong_ckpt='', data='', lora=0, lr=0.0)


# student losses by name: SFT with the per-sequence mean over response tokens, or their sum
LOSSES = {'sft': dict(name='sft'), 'sft_sum': dict(name='sft', normalize='sum')}


def _train(lr, steps, batch_size=32, eval_every=0, warmup=0.05):
  return dict(optimizer=dict(name='adamw', learning_rate=lr, weight_decay=0.0),
              schedule=dict(name='cosine', warmup_frac=warmup), batch_size=batch_size,
              num_steps=steps, num_epochs=0.0, eval_every=eval_every,
              select='best' if eval_every else 'last')


def _decoder(d, layers, heads, vocab):
  return dict(name='gpt2', size='tiny', d_model=d, num_layers=layers, num_heads=heads, mlp_dim=4 * d,
              vocab_size=vocab, max_len=128, dropout=0.0)


def get_config(arg: str | None = None) -> ConfigDict:
  a = config_args.parse(arg, **ARGS)
  from w2s.data import arithmetic
  c = ConfigDict()
  c.protocol = dict(name='generative')
  c.dataset = dict(name='arithmetic', view='generate', digits=(a['digits'],), num_train=4000,
                   num_test=500)
  c.splits = dict(weak_fraction=0.5, val_fraction=0.1)
  c.tokenizer = arithmetic.tokenizer_path()
  c.template = '{prompt}'
  c.answer = dict(field='answer', extractor='last_number')
  c.max_length = 40
  if a['score'] == 'choices':  # the prompt lists the candidates: 'choices: 72, 62, 82, 71. a:'
    c.dataset.view = 'choice'
    c.answer = dict(field='answer', extractor='last_number', score='choices', normalize='mean')
    c.max_length = 80
  elif a['score'] != 'extract':
    raise UserError(f"score={a['score']!r}; use extract (exact match of generated answers) or "
                    'choices (log-prob pick among listed candidates)')
  vocab = len(arithmetic.VOCAB)
  c.corpus = dict(dataset='arithmetic', num_docs=20000, seed=0, seq_len=64,
                  options=dict(digits=(1, 2, 3)))
  # chosen on val (docstring): one SFT recipe for every role, the weak smaller
  c.weak = dict(model=_decoder(64, 3, 4, vocab), pretrain=_train(3e-3, 1500, 32),
                train=_train(1e-3, 600, 32, eval_every=50))
  c.strong = dict(model=_decoder(128, 4, 4, vocab), pretrain=_train(2e-3, 1500, 32),
                  train=_train(1e-3, 600, 32, eval_every=50))
  samples = int(a['samples'])
  c.sampling = dict(num_samples=samples, temperature=0.7 if samples > 1 else 0.0, top_p=1.0,
                    max_new_tokens=8, batch_size=64)
  c.filter = dict(name=a['filter'])
  names = str(a['losses']).split('+')
  unknown = [n for n in names if n not in LOSSES]
  if unknown:
    raise UserError(f'losses: unknown student loss {unknown[0]!r}; known: {sorted(LOSSES)}')
  c.student_losses = {n: LOSSES[n] for n in names}
  c.rounds = int(a['rounds'])
  c.seeds = tuple(range(int(a['seeds'])))
  c.eval_batch_size = 64
  c.log_every = 50
  c.checkpoint_every = 500
  c.keep_checkpoints = 2
  c.mesh = dict(num_devices=0)
  c.shared_dir = ''  # stages live here instead of the workdir (shared by several configs)
  if a['weak_ckpt'] or a['strong_ckpt'] or a['data']:
    _real(c, a)
  if a['runlocal']:  # presets: an argument the user wrote wins over them
    c.smoke = True  # a smoke test, not a result: tables and plots say so
    c.dataset.num_train, c.dataset.num_test = 200, 48
    c.splits.update(max_weak=64, max_strong=64, max_val=16, max_test=32)
    c.corpus.num_docs = 300
    c.weak.model = _decoder(32, 1, 2, vocab)
    c.strong.model = _decoder(32, 2, 2, vocab)
    for role in (c.weak, c.strong):
      role.pretrain.num_steps = 12
      role.train.num_steps = 8
      role.train.eval_every = 4
      role.pretrain.batch_size = role.train.batch_size = 16
    c.sampling.max_new_tokens = 5
    c.sampling.batch_size = 16
    c.eval_batch_size = 16
    c.seeds = tuple(range(a.preset('seeds', 1)))
    c.log_every = 4
  return ConfigDict(c.to_dict(), type_safe=True)


def _real(c, a) -> None:
  """Hugging Face decoders (one tokenizer) on a GSM8K-style `files` dataset: no pretraining."""
  if not (a['weak_ckpt'] and a['strong_ckpt'] and a['data']):
    raise UserError('weak_ckpt=DIR, strong_ckpt=DIR and data=DIR go together (two decoders '
                    'sharing a tokenizer, and the task files)')
  if a['score'] != 'extract':
    raise UserError('score=choices needs candidate answers [N, K] and a gold index per row (the '
                    "arithmetic world's view='choice'); data=DIR has neither: drop score=")
  family = dict(name='llama', lm_head=True)
  lora = dict(rank=int(a['lora']), alpha=2 * int(a['lora'])) if a['lora'] else None
  c.dataset = dict(name='files', path=a['data'], text='question', label=None,
                   strings=('answer',))
  c.template = 'Question: {text}\nAnswer:'
  c.answer = dict(field='answer', extractor='last_number')
  c.tokenizer = a['strong_ckpt']
  c.max_length = 512
  c.corpus = None
  lr = float(a['lr']) or (1e-4 if lora else 1e-5)
  # bf16 weights with float32 master copies, remat; the strong student sharded over 'fsdp'
  # (benchmarks/memory_plan_7b.py: 7B LoRA + FSDP over 8 H100s plans 12.3 GiB a device)
  c.weak = dict(model=dict(family, pretrained=a['weak_ckpt'], remat=True, dtype='bfloat16'),
                pretrain=None, train=dict(_train(1e-5, 1000, 32, eval_every=100),
                                          param_dtype='bfloat16'))
  c.strong = dict(model=dict(family, pretrained=a['strong_ckpt'], lora=lora, remat=True,
                             dtype='bfloat16'), pretrain=None,
                  train=dict(_train(lr, 1000, 32, eval_every=100), partition='fsdp',
                             param_dtype='bfloat16'))
  c.mesh = dict(num_devices=0, shape=dict(fsdp=-1))
  c.sampling.max_new_tokens = 256
