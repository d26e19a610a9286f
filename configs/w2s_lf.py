"""Programmatic weak supervision on Rotten Tomatoes: labelling functions + a label model as the weak
supervisor, a frozen-MiniLM student.

    python -m w2s.main --config configs/w2s_lf.py --workdir runs/w2s_lf          # Dawid-Skene
    python -m w2s.main --config configs/w2s_lf.py:label_model=majority --workdir runs/w2s_lf_mv
    python -m w2s.main --config configs/w2s_lf.py:abstain=model --workdir runs/w2s_lf_ds_abstain
    python -m w2s.main --config configs/w2s_lf.py:runlocal --workdir /tmp/w2s_lf_tiny

Weak supervisor: the 18 keyword / lexicon / negation rules of
`w2s/labelling_functions/rotten_tomatoes.py` (written from general sentiment knowledge, not tuned
on labels) vote on every review; a label model (`label_model=majority|weighted|dawid_skene|triplet`,
`w2s/label_models/`) aggregates the votes into soft labels, fitted without labels on the train
side (halves A and B and the val slice), test labelled transductively from its votes
(`w2s/protocols/programmatic.py`). No ground truth trains the weak supervisor; about half the
reviews get no vote, and those get the label model's class prior. Everything else is
configs/w2s_offline.py: the same splits, the frozen all-MiniLM-L6-v2 linear probe as strong model
and ceiling, the students (`xent`, `logconf`) on the weak labels of B, selection on the weak
labels of the val slice. Compare label models by running this config once per `label_model=`
with one `--config.shared_dir` (the ceiling and the feature cache are then computed once).

Arguments: label_model=NAME (or a dotted path pkg.mod:fn), rules=SET (a labelling-function set:
short name, dotted module path or path/to/file.py; default rotten_tomatoes), abstain=model
(dawid_skene models each rule's abstentions per class instead of skipping them), seeds=N,
losses=a+b, runlocal (tiny, for tests).
"""
from w2s import config_args
from w2s.configs import w2s_offline


ARGS = dict(label_model='dawid_skene', rules='rotten_tomatoes', seeds=5, losses='xent+logconf',
            runlocal=False, abstain='')  # arguments and defaults (seeds, losses: w2s_offline's)


def get_config(arg: str | None = None):
  a = config_args.parse(arg, **ARGS)
  # only what the user wrote goes on, so w2s_offline's runlocal presets yield to it alone
  c = w2s_offline.get_config(a.forward('seeds', 'losses', 'runlocal'))
  with c.unlocked():
    label_model = dict(name=a['label_model'])
    if a['abstain']:  # dawid_skene: 'model' gives every rule a P(abstain | class)
      label_model['abstain'] = a['abstain']
    c.weak = dict(labelling_functions=a['rules'], label_model=label_model)
    c.shared_dir = ''  # one stage directory for several label models: --config.shared_dir=DIR
  return c
