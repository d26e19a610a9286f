"""python -m w2s.main --config configs/w2s_debate.py:task=sciq,data=DIR,debater=QWEN2_DIR,weak=GPT2_DIR --workdir DIR

Text debate as a weak-to-strong variant (Lang et al. 2025, "Debate Helps Weak-to-Strong
Generalization"; w2s/protocols/text_debate.py, w2s/debate/text.py), for users with checkpoints
and an accelerator. Two instances of a strong decoder (a Qwen2 / Llama checkpoint: `debater`)
argue for 3 turns over whether a candidate answer is correct; K = 4 weak judges (a GPT-2
checkpoint: `weak`, fine-tuned) read each example with one debate seed's transcript appended and
are trained on A's ground truth; their mean labels of B train the strong student (`strong`,
default the debater's checkpoint). Baselines in the same run: no transcript, consultancy (one
argument for a random side, K seeds), and K weak models differing only by fine-tuning seed.

    # SciQ / BoolQ / CosmosQA files as downloaded from the Hugging Face hub (see w2s/data/sciq.py,
    # boolq.py, cosmos_qa.py); checkpoints: any Hugging Face directories (config.json,
    # model.safetensors, tokenizer.json)
    python -m w2s.main --config configs/w2s_debate.py:task=boolq,data=~/data/boolq,debater=~/ckpt/Qwen2-7B,weak=~/ckpt/gpt2,strong=~/ckpt/Qwen2-14B --workdir runs/debate_boolq

Arguments: task (sciq | boolq | cosmos_qa), data (the task's files), debater, weak, strong
(checkpoint directories; strong defaults to debater), seeds (split seeds, default 3), k (debate
seeds = weak judges, default 4), turns (1-3 of the paper's turns), new_tokens (per turn, 128),
frozen (weak judges as linear probes over frozen features: the K members then train in one
vmapped step), runlocal (a few hundred examples, for a smoke run).

Settings follow the paper where it says them (3 turns, 4 debate seeds, mean of the weak models'
soft labels, xent students); sampling temperature 0.7 / top-p 0.9 and the learning rates are
our a-priori choices (not tuned here: no accelerator was available to run this config), and
every stage selects on held-out val labels of its own source, never on test.
"""
from ml_collections import ConfigDict

from w2s import config_args
from w2s.errors import UserError

TASKS = {
    'sciq': dict(name='sciq', mode='pair'),
    'boolq': dict(name='boolq'),
    'cosmos_qa': dict(name='cosmos_qa', mode='pair'),
}


def _train(lr, epochs, batch_size=32, eval_every=50):
  return dict(optimizer=dict(name='adam', learning_rate=lr),
              schedule=dict(name='cosine', warmup_frac=0.05), batch_size=batch_size,
              num_epochs=epochs, num_steps=0, accum_steps=1, eval_every=eval_every,
              select='best', patience=0)


ARGS = dict(task='sciq', data='', debater='', weak='', strong='', seeds=3, k=4, turns=3,
            new_tokens=128, frozen=False, runlocal=False)  # arguments and defaults


def get_config(arg: str | None = None) -> ConfigDict:
  a = config_args.parse(arg, **ARGS)
  if a['task'] not in TASKS:
    raise UserError(f'task={a["task"]!r}: choose from {sorted(TASKS)}')
  for key in ('data', 'debater', 'weak'):
    if not a[key]:
      raise UserError(f'configs/w2s_debate.py needs {key}=DIR (the task files, the debater and '
                      'the weak checkpoint directories); see the docstring')
  if not 1 <= a['turns'] <= 3:
    raise UserError(f'turns={a["turns"]}: the paper\'s debate has 3 turns (more hurt); use 1-3')
  strong = a['strong'] or a['debater']
  c = ConfigDict()
  c.protocol = dict(name='text_debate')
  c.dataset = dict(TASKS[a['task']], path=a['data'])
  c.splits = dict(weak_fraction=0.5, val_fraction=0.1, balance=False)
  c.tokenizer = dict(tokenizer=a['weak'], max_length=512)  # transcripts make inputs long
  c.seeds = tuple(range(a['seeds']))
  weak_model = dict(name='gpt2', pretrained=a['weak'], dropout=0.0)
  if a['frozen']:
    c.weak = dict(model=weak_model, frozen=True, head=dict(name='mlp', size='linear'),
                  loss=dict(name='xent'), train=_train(1e-3, 4.0))
  else:
    c.weak = dict(model=weak_model, loss=dict(name='xent'), train=_train(1e-5, 2.0))
  c.strong = dict(model=dict(name='llama', pretrained=strong), loss=dict(name='xent'),
                  tokenizer=dict(tokenizer=strong, max_length=512), train=_train(1e-5, 2.0))
  c.student_losses = {'xent': dict(name='xent')}
  from w2s.debate import text as text_lib
  c.debate = dict(model=dict(name='llama', pretrained=a['debater'], dtype='bfloat16'),
                  seeds=tuple(range(a['k'])), max_prompt_tokens=768,
                  max_new_tokens=a['new_tokens'], temperature=0.7, top_p=0.9, batch_size=32,
                  prompts=dict(debate=text_lib.DEFAULT_PROMPTS['debate'][:a['turns']]))
  c.conditions = ('no_transcript', 'finetune_ensemble', 'consultancy', 'debate')
  c.eval_batch_size = 64
  c.log_every = 50
  c.checkpoint_every = 500
  c.keep_checkpoints = 2
  c.mesh = dict(num_devices=0)
  if a['runlocal']:  # presets: an argument the user wrote (seeds=, new_tokens=) wins over them
    c.smoke = True  # a smoke test, not a result: tables and plots say so
    c.splits.update(max_weak=64, max_strong=64, max_val=32, max_test=64)
    c.seeds = tuple(range(a.preset('seeds', 1)))
    c.debate.max_new_tokens = a.preset('new_tokens', 16)
    c.debate.batch_size = 8
    for role in (c.weak, c.strong):
      role.train.num_epochs = 1.0
      role.train.eval_every = 4
  return c
