"""Preference weak-to-strong (DPO family and reward models from a weak judge), offline arithmetic.

    python -m w2s.main --config configs/w2s_preference.py --workdir runs/w2s_preference
    python -m w2s.main --config configs/w2s_preference.py:runlocal --workdir /tmp/w2s_pref_tiny
    python -m w2s.main --config configs/w2s_preference.py:losses=dpo+rm,seeds=3 --workdir runs/p
    python -m w2s.main --config configs/w2s_preference.py --workdir runs/p --dry_run
    python -m w2s.main --config configs/w2s_preference.py:judge=delta,losses=dpo --workdir runs/pd
    python -m w2s.main --config configs/w2s_preference.py:weak_ckpt=W,strong_ckpt=S,data=HH,losses=dpo+rm --workdir runs/hh

The world, decoders and pretraining of configs/w2s_sft.py (its corpus, model sizes and pretrain
sections, taken from it), so with one `--config.shared_dir=DIR` both protocols share the two
pretrain stages. The task is the arithmetic 'pairs' view: 'q: what is 347 plus 589? a:' with two
responses, the sum and a plausible wrong one (a dropped carry, a digit off by one), gold label =
the correct one. The weak judge is the small decoder with a scalar head trained as a Bradley-Terry
reward model on A's gold pairs; it labels B (soft labels sigmoid(r_a - r_b)). Students are the
large decoder as a DPO-family policy (reference: its pretrained self) or as a reward model,
trained on B's weak labels and selected on val's weak labels; ceilings are the same kinds on B's
gold labels. Scores: pairwise accuracy on test, PGR, agreement with the judge, and accuracy where
the judge is right / wrong (Super(ficial)-alignment). The students' and ceilings' learning rate
1e-3 was carried over from the SFT recipe that configs/w2s_sft.py chose on val, then checked on
seed 0's val ceilings (DPO 68.8 vs 68.0 at 1e-4, RM 65.8 vs 61.3 at 3e-4), not swept
(experiments/generative/README.md).

`judge=delta` (Geng et al. 2025, the Delta Learning Hypothesis; w2s/protocols/preference_delta.py):
no reward model; the weak decoder and a smaller one (`weak_small`: 1 x 32, pretrained half as
long), each fine-tuned on A's gold answers like configs/w2s_sft.py's weak model, answer B's and
val's prompts greedily; the students learn from those pairs, chosen = the larger's answer.

Arguments: seeds=N, losses=a+b (student presets: dpo (beta 0.1), cdpo (eps 0.1), wdpo
(confidence weight), wdpo_smooth (eps = 1 - confidence), ipo (tau 0.1), orpo, rm (Bradley-Terry
reward model); any other name is a loss plug-in with its defaults), beta=B (the DPO family's
beta), digits=D, judge=reward_model|delta, runlocal (tiny models and splits, for tests).

For accelerators: weak_ckpt=DIR, strong_ckpt=DIR (Hugging Face decoders sharing one tokenizer,
e.g. Qwen2.5-0.5B and Qwen2.5-7B), data=DIR (Anthropic HH-RLHF's files, `huggingface-cli download
Anthropic/hh-rlhf --repo-type dataset --local-dir DIR`, read with mode='prompt_pairs': the shared
transcript up to the last "Assistant:" as prompt, the chosen and rejected final turns as the
pair; pairs whose transcripts differ earlier are skipped and counted in results.json), lora=R,
lr=LR (the students'; default 1e-6, 1e-5 with LoRA; untuned), weak_small_ckpt=DIR (judge=delta:
the smaller weak decoder; both SFT on the chosen turns of A). No corpus, no pretraining; bf16
weights, the strong decoder sharded over 'fsdp'; max_length 512 with prompts cut to their last
384 tokens (HH prompts can be long; cut prompts and responses are counted per seed).
"""
from ml_collections import ConfigDict

from w2s import config_args
from w2s.errors import UserError
from w2s.configs import w2s_sft

ARGS = dict(seeds=5, losses='dpo+cdpo+wdpo+ipo+rm', beta=0.1, digits=w2s_sft.ARGS['digits'],
            judge='reward_model', runlocal=False, weak_ckpt='', strong_ckpt='', data='', lora=0,
            lr=0.0, weak_small_ckpt='')
JUDGES = ('reward_model', 'delta')


def students(names: str, beta: float) -> tuple[dict, dict]:
  """(student_losses, student_kinds) of the '+'-joined preset names."""
  presets = {'dpo': dict(name='dpo', beta=beta), 'cdpo': dict(name='cdpo', beta=beta, eps=0.1),
             'wdpo': dict(name='wdpo', beta=beta, mode='weight'),
             'wdpo_smooth': dict(name='wdpo', beta=beta, mode='smoothing'),
             'ipo': dict(name='ipo', tau=0.1), 'orpo': dict(name='orpo'),
             'rm': dict(name='bradley_terry')}
  losses = {n: presets.get(n, dict(name=n)) for n in str(names).split('+') if n}
  kinds = {n: 'reward_model' if n == 'rm' else 'policy' for n in losses if n in presets}
  return losses, kinds


def get_config(arg: str | None = None) -> ConfigDict:
  a = config_args.parse(arg, **ARGS)
  base = w2s_sft.get_config(a.forward('digits', 'runlocal'))
  _train = w2s_sft._train  # pylint: disable=protected-access  # one recipe for both configs
  c = ConfigDict()
  c.protocol = dict(name='preference')
  c.dataset = dict(base.dataset.to_dict(), view='pairs')
  c.splits = base.splits.to_dict()
  c.tokenizer = base.tokenizer
  c.template = '{prompt}'
  c.max_length = base.max_length
  c.corpus = base.corpus.to_dict()
  c.weak = dict(model=base.weak.model.to_dict(), pretrain=base.weak.pretrain.to_dict(),
                train=_train(1e-3, 300, 32, eval_every=50), loss=dict(name='bradley_terry'))
  c.strong = dict(model=base.strong.model.to_dict(), pretrain=base.strong.pretrain.to_dict(),
                  train=_train(1e-3, 300, 32, eval_every=50))
  c.reward_train = _train(1e-3, 300, 32, eval_every=50)
  c.ceiling = dict(policy=dict(name='dpo', beta=float(a['beta'])),
                   reward_model=dict(name='bradley_terry'))
  c.student_losses, c.student_kinds = students(a['losses'], float(a['beta']))
  c.seeds = tuple(range(int(a['seeds'])))
  if a['judge'] not in JUDGES:
    raise UserError(f'judge={a["judge"]!r} is not one of {JUDGES}')
  c.judge = dict(name=a['judge'])
  if a['judge'] == 'delta':  # the weak decoder SFT like w2s_sft's, and a smaller one beside it
    c.judge.update(answer='answer', extractor='last_number',
                   max_new_tokens=base.sampling.max_new_tokens)
    c.weak.update(train=base.weak.train.to_dict(), loss=dict(name='sft'))
    # smaller and pretrained half as long; runlocal: the weak shape (compiles are shared) and a
    # tenth of its SFT learning rate, so that the two tiny models answer differently
    small = w2s_sft._decoder(32, 1, 2, base.weak.model.vocab_size)  # pylint: disable=protected-access
    small_train = base.weak.train.to_dict()
    if a['runlocal']:
      small = base.weak.model.to_dict()
      small_train['optimizer']['learning_rate'] /= 10
    c.weak_small = dict(model=small, pretrain=dict(base.weak.pretrain.to_dict(), num_steps=max(
        base.weak.pretrain.num_steps // 2, 1)), train=small_train)
  for key in ('eval_batch_size', 'log_every', 'checkpoint_every', 'keep_checkpoints', 'mesh',
              'shared_dir'):
    c[key] = base[key].to_dict() if isinstance(base[key], ConfigDict) else base[key]
  if a['weak_ckpt'] or a['strong_ckpt'] or a['data'] or a['weak_small_ckpt']:
    _real(c, a)
  if a['runlocal']:  # presets: an argument the user wrote wins over them
    c.smoke = True  # a smoke test, not a result: tables and plots say so
    small = [c.weak_small.train] if 'weak_small' in c else []
    for section in (c.weak.train, c.strong.train, c.reward_train, *small):
      section.update(num_steps=8, eval_every=4, batch_size=16)
    c.seeds = tuple(range(a.preset('seeds', 1)))
  return ConfigDict(c.to_dict(), type_safe=True)


def _real(c, a) -> None:
  """Hugging Face decoders (one tokenizer) on Anthropic HH-RLHF pairs: no corpus, no pretraining."""
  if not (a['weak_ckpt'] and a['strong_ckpt'] and a['data']):
    raise UserError('weak_ckpt=DIR, strong_ckpt=DIR and data=DIR go together (two decoders '
                    'sharing a tokenizer, and the HH-RLHF files)')
  delta = a['judge'] == 'delta'
  if delta != bool(a['weak_small_ckpt']):
    raise UserError('judge=delta and weak_small_ckpt=DIR go together (the smaller weak decoder '
                    'of the Delta pairs)')
  _train = w2s_sft._train  # pylint: disable=protected-access
  family = dict(name='llama', lm_head=True)
  lora = dict(rank=int(a['lora']), alpha=2 * int(a['lora'])) if a['lora'] else None
  c.dataset = dict(name='anthropic_hh', path=a['data'], mode='prompt_pairs')
  c.splits = dict(weak_fraction=0.5, val_fraction=0.02, max_weak=32000, max_strong=32000,
                  max_val=1000, max_test=2000)
  c.tokenizer = a['strong_ckpt']
  c.template = '{prompt}'
  c.max_length, c.max_prompt_length = 512, 384
  c.corpus = None
  lr = float(a['lr']) or (1e-5 if lora else 1e-6)
  # bf16 weights with float32 master copies, remat; the strong decoder sharded over 'fsdp'
  weak = lambda ckpt, lr_: dict(model=dict(family, pretrained=ckpt, remat=True, dtype='bfloat16'),
                                pretrain=None, train=dict(_train(lr_, 1000, 32, eval_every=100),
                                                          param_dtype='bfloat16'))
  c.weak = dict(weak(a['weak_ckpt'], 1e-5), loss=dict(name='sft' if delta else 'bradley_terry'))
  if delta:
    c.weak_small = weak(a['weak_small_ckpt'], 1e-5)
    c.judge.update(answer='chosen', extractor=None, max_new_tokens=128)
  strong = dict(partition='fsdp', param_dtype='bfloat16')
  c.strong = dict(model=dict(family, pretrained=a['strong_ckpt'], lora=lora, remat=True,
                             dtype='bfloat16'), pretrain=None,
                  train=dict(_train(lr, 1000, 32, eval_every=100), **strong))
  c.reward_train = dict(_train(10 * lr, 1000, 32, eval_every=100), **strong)
  c.eval_batch_size = 32
  c.mesh = dict(num_devices=0, shape=dict(fsdp=-1))
