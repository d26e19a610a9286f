"""Preference weak-to-strong (DPO family and reward models from a weak judge), offline arithmetic.

    python -m w2s.main --config configs/w2s_preference.py --workdir runs/w2s_preference
    python -m w2s.main --config configs/w2s_preference.py:runlocal --workdir /tmp/w2s_pref_tiny
    python -m w2s.main --config configs/w2s_preference.py:losses=dpo+rm,seeds=3 --workdir runs/p
    python -m w2s.main --config configs/w2s_preference.py --workdir runs/p --dry_run

The world, decoders and pretraining of configs/w2s_sft.py (its corpus, model sizes and pretrain
sections, taken from it), so with one `--config.shared_dir=DIR` both protocols share the two
pretrain stages. The task is the arithmetic 'pairs' view: 'q: what is 347 plus 589? a:' with two
responses, the sum and a plausible wrong one (a dropped carry, a digit off by one), gold label =
the correct one. The weak judge is the small decoder with a scalar head trained as a Bradley-Terry
reward model on A's gold pairs; it labels B (soft labels sigmoid(r_a - r_b)). Students are the
large decoder as a DPO-family policy (reference: its pretrained self) or as a reward model,
trained on B's weak labels and selected on val's weak labels; ceilings are the same kinds on B's
gold labels. Scores: pairwise accuracy on test, PGR, agreement with the judge, and accuracy where
the judge is right / wrong (Super(ficial)-alignment). The learning rates are untuned defaults.

Arguments: seeds=N, losses=a+b (student presets: dpo (beta 0.1), cdpo (eps 0.1), wdpo
(confidence weight), wdpo_smooth (eps = 1 - confidence), ipo (tau 0.1), orpo, rm (Bradley-Terry
reward model); any other name is a loss plug-in with its defaults), beta=B (the DPO family's
beta), digits=D, runlocal (tiny models and splits, for tests).
"""
from ml_collections import ConfigDict

from w2s import config_args
from w2s.configs import w2s_sft

ARGS = dict(seeds=5, losses='dpo+cdpo+wdpo+ipo+rm', beta=0.1, digits=w2s_sft.ARGS['digits'],
            runlocal=False)


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
                  train=_train(1e-4, 300, 32, eval_every=50))
  c.reward_train = _train(3e-4, 300, 32, eval_every=50)
  c.ceiling = dict(policy=dict(name='dpo', beta=float(a['beta'])),
                   reward_model=dict(name='bradley_terry'))
  c.student_losses, c.student_kinds = students(a['losses'], float(a['beta']))
  c.seeds = tuple(range(int(a['seeds'])))
  for key in ('eval_batch_size', 'log_every', 'checkpoint_every', 'keep_checkpoints', 'mesh',
              'shared_dir'):
    c[key] = base[key].to_dict() if isinstance(base[key], ConfigDict) else base[key]
  if a['runlocal']:  # presets: an argument the user wrote wins over them
    c.smoke = True  # a smoke test, not a result: tables and plots say so
    for section in (c.weak.train, c.strong.train, c.reward_train):
      section.update(num_steps=8, eval_every=4, batch_size=16)
    c.seeds = tuple(range(a.preset('seeds', 1)))
  return ConfigDict(c.to_dict(), type_safe=True)
