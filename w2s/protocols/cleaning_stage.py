"""The cleaning stage of the weak-to-strong protocol: B's weak labels relabelled and / or filtered
on the strong model's frozen features before the student trains (EleutherAI/w2s `probe.py`,
`topo.py`; the cleaners are plug-ins of `w2s/cleaning/`).

`clean=dict(name='knn' | 'logreg' | 'topo' | 'pkg.mod:fn', **hparams)` in a weak_to_strong config
adds, per seed, one stage between the teacher (the weak supervisor, or the last learner of a
bootstrapping chain) and the students: it reads the strong model's features of B (the cached
features a frozen-backbone student reads; for a fine-tuned strong model, its backbone's pooled
features at their initial (pretrained) weights, through the same feature cache) and the teacher's
soft labels of B, and writes the new soft labels of every row of B and which rows to keep. Every
student (and each of its relabelling rounds) then trains on the kept rows with the new labels;
the held-out val slice keeps the teacher's labels, so selection still reads plain weak labels.

The stage is keyed by the cleaner's spec, what determines the features (the strong model,
tokenizer and input view) and the teacher stage's key; the students' keys chain on it. Without
`clean` no stage is added and every key is as before. Its record (done.json, and `clean` in each
seed's results) counts the rows relabelled and dropped and, for reporting only, the weak labels'
accuracy on B against B's ground truth before and after cleaning: no selection reads it.
"""
import dataclasses

import numpy as np

from w2s import cleaning, options, preemption
from w2s.errors import UserError
from w2s.protocols import learners
from w2s.protocols.stages import Stage, join_by_id

KIND = 'clean'
LINEAR = dict(name='mlp', size='linear')  # the head of the frozen learner that reads features


def resolve(section) -> options.Plugin | None:
  """The config's `clean` section as a plug-in of kind 'cleaners', or None (no cleaning)."""
  if section is None or options.plain(section) == {}:
    return None
  return options.plugin('cleaners', section, 'clean')


def check(p: options.Plugin, num_classes: int, strong: learners.RoleOptions | None = None) -> None:
  """The strong model has features (a backbone), and the cleaner with its options runs once on
  made-up features and labels (enough rows for its integer options, e.g. k): a bad option fails
  in `--dry_run`, before any stage trains."""
  if strong is not None:
    model = options.build(strong.model, 'strong.model', num_classes=num_classes)
    if not callable(getattr(type(model), 'features', None)):
      raise UserError(f'clean reads the strong model\'s backbone features, but strong.model '
                      f'{strong.model.name!r} has none (no `features` method); use a backbone '
                      'model (bert, gpt2, llama, cnn, resnet, ...) or drop clean')
  ints = [v for v in p.hparams.values() if isinstance(v, int) and not isinstance(v, bool)]
  n = min(4096, 32 + 2 * max(ints, default=0))
  rng = np.random.default_rng(0)
  features = rng.normal(size=(n, 4))
  labels = rng.dirichlet(np.ones(num_classes), size=n)
  run_cleaner(p, features, labels)


def run_cleaner(p: options.Plugin, features, labels) -> tuple[np.ndarray, np.ndarray]:
  """(new labels float32 [N, C], keep bool [N]) of the configured cleaner, outputs checked."""
  where = f'clean {p.name!r}'
  try:
    return cleaning.apply(p.entry(), features, labels, where=where, **p.hparams)
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # a user's cleaner that cannot run
    raise UserError(f'{where} {dict(p.hparams)} fails on B\'s features and weak labels '
                    f'({type(e).__name__}: {" ".join(str(e).split())[:200]})') from e


def feature_spec(strong: learners.RoleOptions) -> dict:
  """What determines the features the cleaner reads (part of the stage key)."""
  return {'model': strong.model.spec(), 'tokenizer': options.plain(strong.tokenizer),
          'input': strong.view.spec() if strong.view is not None else None}


def plan(root: str, base, p: options.Plugin | None, strong: learners.RoleOptions,
         teacher_key: str, seed: int) -> list[Stage]:
  """[the cleaning stage of one seed], or [] without a cleaner (the students' keys unchanged)."""
  if p is None:
    return []
  return [Stage(root, KIND, base, p.spec(), feature_spec(strong), teacher_key, seed=seed)]


def features_fn(strong: learners.Learner, num_classes: int, **make_kw):
  """raw -> float32 [N, D]: the strong model's frozen features of the rows (cached by example
  id): the strong learner's own inputs when it is a frozen backbone, else those of a frozen copy
  of its role with a linear head, built only when called (a finished stage extracts nothing)."""
  def features(raw):
    learner = strong
    if not strong.opts.frozen:
      head = options.plugin('models', LINEAR, 'clean features head')
      frozen = dataclasses.replace(strong.opts, frozen=True, head=head, ensemble_size=1,
                                   bagging=False)
      learner = learners.make(frozen, **make_kw)
    zeros = np.zeros((len(raw['id']), num_classes), np.float32)
    return np.asarray(learner.examples(raw, zeros)['x'], np.float32)
  return features


def clean(stages: list[Stage], p: options.Plugin | None, features, b: dict, teacher: dict,
          num_classes: int):
  """(the cleaned teacher, B's kept rows, the report), or (teacher, b, None) without a cleaner.
  The cleaned teacher is the teacher's outputs with 'strong_train_*' replaced by the kept rows of
  B and their new labels (an ensemble teacher's member votes are kept for those rows);
  `features(raw)` [N, D] is called only when the stage (`plan`'s) has not run."""
  if p is None:
    return teacher, b, None
  st, = stages
  with st.lock():
    if st.done():
      print(f'[{KIND}] done earlier, skipped ({st.dir})', flush=True)
      out, rep = st.outputs(), st.record()['report']
    else:
      preemption.check(f'before stage {KIND}', 'the stages before it are saved')
      weak = join_by_id(b['id'], teacher['strong_train_id'], teacher['strong_train_probs'],
                        'teacher labels of B')
      new, keep = run_cleaner(p, features(b), weak)
      rep = cleaning.report(p.name, weak, new, keep, b['label'])
      out = {'strong_train_id': np.asarray(b['id']), 'strong_train_probs': new, 'keep': keep}
      st.finish(out, {'report': rep})
      print(f'[{KIND}] {p.name}: {rep["n_relabelled"]} of {rep["n"]} rows of B relabelled, '
            f'{rep["n_dropped"]} dropped; weak accuracy on B (report only) '
            f'{rep["weak_accuracy_before"]:.4f} -> {rep["weak_accuracy_after"]:.4f} on the kept '
            'rows', flush=True)
  keep_b = join_by_id(b['id'], out['strong_train_id'], out['keep'], 'cleaned rows of B')
  kept = {k: np.asarray(v)[keep_b] for k, v in b.items()}
  cleaned = {k: v for k, v in teacher.items() if not k.startswith('strong_train_')}
  cleaned['strong_train_id'] = kept['id']
  cleaned['strong_train_probs'] = join_by_id(kept['id'], out['strong_train_id'],
                                             out['strong_train_probs'], 'cleaned labels of B')
  if 'strong_train_member_probs' in teacher:
    cleaned['strong_train_member_probs'] = join_by_id(
        kept['id'], teacher['strong_train_id'], teacher['strong_train_member_probs'],
        'ensemble members of B')
  return cleaned, kept, rep
