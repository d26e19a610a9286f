"""A weak supervisor made of labelling functions and a label model (programmatic weak
supervision: Ratner et al. 2016, "Data Programming"; the label models of WRENCH, Zhang et al.
2021), as the weak role of the weak-to-strong protocol:

    weak = dict(labelling_functions='rotten_tomatoes',        # or 'pkg.rules', 'path/rules.py'
                label_model=dict(name='dawid_skene', max_iters=100))

Nothing is trained on ground truth. The rules vote on every example the stage sees (int32 [n, m],
`w2s.labelling_functions.vote_matrix`) and the label model turns the votes into soft labels:

* B and val: one `aggregate` over the votes of the train side, A + B + val (the label model is
  fitted without labels on the examples it labels, as data programming does; A's ground truth
  is never read). The students train on these labels, which test never influences.
* test: a second `aggregate` over the train side's votes plus test's, keeping test's rows: the
  label models have no separate predict step, so test is labelled transductively from its
  votes (its labels are never read).

A row on which every rule abstains gets what the label model gives it (the class prior for the
shipped models), and it is scored like any other row: weak accuracy is the argmax of the posterior
on every row, as for a trained weak model. The stage's record also gives the coverage (rows with a
vote) and the accuracy on covered rows, for the report only (they read ground truth; nothing
selects on them). The held-out number a sweep may choose on is `val_accuracy` (the weak
supervisor's own label source, ground truth, as for a trained weak model).

The stage is keyed by the rules' source digest and names, the label-model section and the
dataset and split (`weak_to_strong.stage_plan`), so a rerun reuses it and an edited rule relabels.
"""
import dataclasses
from typing import Mapping

import numpy as np

from w2s import label_models, labelling_functions as lf_lib, options, preemption, scores
from w2s.data import base
from w2s.errors import UserError
from w2s.protocols.stages import Stage, join_by_id

KEYS = ('labelling_functions', 'label_model')


def is_section(section) -> bool:
  """Whether a role section is labelling functions + a label model (not a trained model)."""
  s = options.plain(section)
  return isinstance(s, Mapping) and any(k in s for k in KEYS)


@dataclasses.dataclass(frozen=True)
class Options:
  """A programmatic weak role, checked: the rules loaded, the label model resolved."""
  role: str
  functions: lf_lib.LabellingFunctions
  label_model: options.Plugin

  @classmethod
  def from_section(cls, role: str, section, *, input_kind: str | None = None) -> 'Options':
    s = options.plain(section)
    extra = sorted(set(s) - set(KEYS))
    if extra:
      raise UserError(f'{role}: {extra[0]!r} does not go with labelling_functions / label_model: '
                      'a weak supervisor is either a trained model (model, loss, train, ...) or '
                      'labelling functions + a label model (labelling_functions, label_model)')
    for key, example in (('labelling_functions', "'rotten_tomatoes'"),
                         ('label_model', "dict(name='dawid_skene')")):
      if key not in s:
        raise UserError(f'{role}.{key} is required with {KEYS[1 - KEYS.index(key)]}, e.g. '
                        f'{role}.{key}={example}')
    if input_kind not in (None, 'text'):
      raise UserError(f'{role}: labelling functions read text, but the dataset\'s inputs are '
                      f'{input_kind}; use a trained weak model (model, loss, train)')
    return cls(role=role,
               functions=lf_lib.load(s['labelling_functions'], f'{role}.labelling_functions'),
               label_model=options.plugin('label_models', s['label_model'],
                                          f'{role}.label_model'))

  def spec(self) -> dict:
    """What the labels depend on (stage keys hash this)."""
    return {'labelling_functions': self.functions.spec(), 'label_model': self.label_model.spec()}


def check(opts: Options, dataset) -> None:
  """The rules and the label model against the dataset before anything runs: class names, the
  rules' votes on a few rows (a rule that crashes or returns a bad value fails now) and the label
  model with its options on those votes (a bad option fails now, not in the weak stage)."""
  names = opts.functions.label_names
  if names is not None and tuple(names) != tuple(dataset.label_names):
    raise UserError(f'{opts.role}.labelling_functions {opts.functions.ref!r} are written for '
                    f'classes {list(names)}, but {dataset.name!r} has {list(dataset.label_names)}')
  first = next(iter(dataset.splits.values()))
  votes = lf_lib.vote_matrix(opts.functions, list(first['text'][:8]),
                             num_classes=dataset.num_classes)
  label_models.run(opts.label_model, votes, dataset.num_classes, f'{opts.role}.label_model')


def label(stage: Stage, opts: Options, *, fit_on: list[dict], predict_on: dict[str, dict],
          num_classes: int, val=None) -> dict:
  """The weak stage: soft labels of `predict_on` ({split: raw}; 'test' labelled transductively,
  every other split from the fit on `fit_on`, the train-side splits). Outputs are those of a
  trained weak stage ('<split>_probs' [N, C], '<split>_id') plus '<split>_votes' [N, m] int16;
  `val` = (raw, ground truth [N, C]) gives 'val_accuracy'. Skipped when done."""
  with stage.lock():
    if stage.done():
      print(f'[{stage.kind}] done earlier, skipped ({stage.dir})', flush=True)
      return stage.outputs()
    preemption.check(f'before stage {stage.kind}', 'the stages before it are saved')
    train_side, test = base.concat(fit_on), predict_on.get('test')
    everything = base.concat([train_side] + ([test] if test is not None else []))
    votes = lf_lib.vote_matrix(opts.functions, list(everything['text']), num_classes=num_classes,
                               desc=f'{stage.kind} labelling functions')
    n = len(train_side['id'])
    where = f'{opts.role}.label_model'
    probs, diag = label_models.run(opts.label_model, votes[:n], num_classes, where)
    labelled = {'train': (train_side['id'], votes[:n], probs)}
    if test is not None:  # transductive: the train side's votes and test's, test's rows kept
      test_probs, _ = label_models.run(opts.label_model, votes, num_classes, where)
      labelled['test'] = (everything['id'][n:], votes[n:], test_probs[n:])
    outputs = {}
    for split, raw in predict_on.items():
      ids, v, p = labelled['test' if split == 'test' else 'train']
      what = f'{stage.kind} labels of {split}'
      outputs.update({f'{split}_probs': join_by_id(raw['id'], ids, p, what),
                      f'{split}_votes': join_by_id(raw['id'], ids, v, what).astype(np.int16),
                      f'{split}_id': raw['id']})
    if val is not None:
      outputs['val_accuracy'] = np.float32(scores.accuracy(outputs['val_probs'], val[1]))
    stage.finish(outputs, {
        'labelling_functions': opts.functions.ref,
        'label_model_diagnostics': {k: _rounded(x) for k, x in diag.items()},
        'votes_train_side': lf_lib.summary(votes[:n], opts.functions.names),
        'report': report(outputs, predict_on)})
  return outputs


def _rounded(x):
  x = np.asarray(x)
  return (np.round(x.astype(np.float64), 5) if np.issubdtype(x.dtype, np.floating) else x).tolist()


def report(outputs: dict, raws: dict[str, dict]) -> dict:
  """{'coverage', 'accuracy', 'accuracy_covered'}: {split: number} of a programmatic weak stage's
  `outputs` on the splits `raws` ({split: raw}). Coverage is the share of rows with a vote;
  accuracy is the argmax of the posterior on every row (all-abstain rows included, as they are
  labelled), accuracy_covered on rows with a vote only. They read ground truth: for the report,
  never for selection."""
  out = {'coverage': {}, 'accuracy': {}, 'accuracy_covered': {}}
  for split, raw in raws.items():
    what = f'weak labels of {split}'
    probs = join_by_id(raw['id'], outputs[f'{split}_id'], outputs[f'{split}_probs'], what)
    votes = join_by_id(raw['id'], outputs[f'{split}_id'], outputs[f'{split}_votes'], what)
    covered = (votes != lf_lib.ABSTAIN).any(1)
    out['coverage'][split] = float(covered.mean())
    out['accuracy'][split] = scores.accuracy(probs, raw['label'])
    out['accuracy_covered'][split] = scores.accuracy(probs[covered], raw['label'][covered])
  return out
