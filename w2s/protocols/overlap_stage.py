"""The overlap report of the weak-to-strong protocol: each student's test accuracy and PGR on the
"overlap" rows (those carrying both the easy and the hard pattern, Shin, Cooper & Sala 2024,
`w2s.overlap`) vs the rest, with the weak and ceiling accuracies on each part.

`overlap=dict()` (or `dict(jump=5, min_size=2)`, the change-point grid of `w2s.overlap.detect`;
`overlap=True` is the same) in a weak_to_strong config adds, per seed, one stage after the weak
supervisor: it runs `w2s.overlap.detect` on the TEST rows with the weak supervisor's test
probabilities and the strong model's frozen features of test (the features `clean` reads,
`cleaning_stage.features_fn`: a frozen backbone's own, or a fine-tuned strong model's backbone at
its pretrained weights), and saves which rows are overlap (`outputs.npz`: test_id, overlap, hard,
confidence, align). No label of any split decides which rows are overlap; test labels only score
the two parts afterwards. (Their scripts run the detection on B, to choose training rows; the
report runs the same function on test, where the students are scored.) Without `overlap` no stage is added and every key is as before.

The stage is keyed by the options, what determines the features and the weak stage's key. Per seed
the record's 'overlap' holds the counts, the two thresholds and the scores of each part (`score`);
over seeds the results' 'overlap' holds their means with the main table's t-intervals
(`summarize`, `table`).
"""
import dataclasses

import numpy as np

from w2s import options, overlap, preemption, scores
from w2s.errors import UserError
from w2s.protocols import cleaning_stage
from w2s.protocols.stages import Stage, join_by_id

KIND = 'overlap'
KEYS = ('jump', 'min_size')
PARTS = ('overlap', 'rest')


@dataclasses.dataclass(frozen=True)
class Overlap:
  jump: int = overlap.JUMP
  min_size: int = overlap.MIN_SIZE

  def spec(self) -> dict:
    return dataclasses.asdict(self)


def resolve(section) -> Overlap | None:
  """The config's `overlap` section: None / False = off, True or a dict (may be empty) = on."""
  s = options.plain(section)
  if s is None or s is False:
    return None
  if s is True:
    return Overlap()
  if not isinstance(s, dict):
    raise UserError(f'overlap={s!r} must be a dict such as dict(jump=5, min_size=2) (or True)')
  options.check_keys(s, KEYS, 'overlap')
  return Overlap(jump=options.positive(s.get('jump', overlap.JUMP), 'overlap.jump'),
                 min_size=options.positive(s.get('min_size', overlap.MIN_SIZE), 'overlap.min_size'))


def check(strong, num_classes: int) -> None:
  """The strong model has features (a backbone) for the alignment step (`--dry_run` runs this)."""
  model = options.build(strong.model, 'strong.model', num_classes=num_classes)
  if not callable(getattr(type(model), 'features', None)):
    raise UserError(f'overlap reads the strong model\'s backbone features, but strong.model '
                    f'{strong.model.name!r} has none (no `features` method); use a backbone model '
                    '(bert, gpt2, llama, cnn, resnet, ...) or drop overlap')


def plan(root: str, base, opts: Overlap | None, strong, weak_key: str, seed: int) -> list[Stage]:
  """[the overlap stage of one seed], or [] without `overlap` (no other key changes)."""
  if opts is None:
    return []
  return [Stage(root, KIND, base, opts.spec(), cleaning_stage.feature_spec(strong), weak_key,
                seed=seed)]


def detect(stages: list[Stage], opts: Overlap | None, features, test: dict,
           weak_out: dict) -> tuple[np.ndarray, dict] | None:
  """(overlap bool [N] in `test`'s row order, the stage record), or None without `overlap`.
  `features(raw)` [N, D] is called only when the stage has not run."""
  if opts is None:
    return None
  st, = stages
  with st.lock():
    if st.done():
      print(f'[{KIND}] done earlier, skipped ({st.dir})', flush=True)
      out, rec = st.outputs(), st.record()['report']
    else:
      preemption.check(f'before stage {KIND}', 'the stages before it are saved')
      weak = join_by_id(test['id'], weak_out['test_id'], weak_out['test_probs'], 'weak test labels')
      found = overlap.detect(weak, features(test), jump=opts.jump, min_size=opts.min_size)
      out = {'test_id': np.asarray(test['id']),
             **{k: found[k] for k in ('overlap', 'hard', 'confidence', 'align')}}
      rec = {'n': len(weak), 'n_overlap': int(found['overlap'].sum()),
             'n_hard': int(found['hard'].sum()),
             'confidence_threshold': found['confidence_threshold'],
             'align_threshold': found['align_threshold']}
      st.finish(out, {'report': rec})
      print(f'[{KIND}] {rec["n_overlap"]} of {rec["n"]} test rows overlap ({rec["n_hard"]} of '
            'low weak confidence)', flush=True)
  return join_by_id(test['id'], out['test_id'], out['overlap'], 'overlap rows of test'), rec


def score(mask: np.ndarray, record: dict, probs: dict, losses: list[str]) -> dict:
  """One seed's report: the stage record plus, for the overlap rows and the rest, the weak and
  ceiling accuracies and each student's accuracy and PGR (`probs`: {'label': [N], 'weak',
  'ceiling', 'student_<loss>': [N, C]} on test, in the mask's row order)."""
  out = dict(record)
  for part, rows in zip(PARTS, (mask, ~mask)):
    y = np.asarray(probs['label'])[rows]
    acc = lambda key: scores.accuracy(np.asarray(probs[key])[rows], y)
    p = {'n': int(rows.sum()), 'acc_weak': acc('weak'), 'acc_ceiling': acc('ceiling')}
    for name in losses:
      s = acc(f'student_{name}')
      g = scores.pgr(p['acc_weak'], s, p['acc_ceiling'])
      p[name] = {'acc_student': s, 'pgr': g.value, 'pgr_undefined': g.reason}
    out[part] = p
  return out


def summarize(per_seed: list[dict], losses: list[str]) -> dict:
  """{part: {'n', 'acc_weak', 'acc_ceiling': summary, loss: {'acc_student', 'pgr': summary}}}
  over seeds (`scores.summarize_seeds`: mean, 95% t-interval from 3 seeds)."""
  summ = lambda vals: scores.summarize_seeds(vals)._asdict()
  out = {}
  for part in PARTS:
    rows = [r['overlap'][part] for r in per_seed]
    out[part] = {m: summ([r[m] for r in rows]) for m in ('n', 'acc_weak', 'acc_ceiling')}
    for name in losses:
      out[part][name] = {m: summ([r[name][m] for r in rows]) for m in ('acc_student', 'pgr')}
  return out


def table(summary: dict, losses: list[str]) -> str:
  fmt = scores.fmt_summary
  rows = [('test rows', 'loss', 'n rows', 'weak acc', 'student acc', 'ceiling acc', 'PGR')]
  for part in PARTS:
    s = summary[part]
    rows += [(part, name, fmt(s['n'], digits=0), fmt(s['acc_weak'], 100),
              fmt(s[name]['acc_student'], 100), fmt(s['acc_ceiling'], 100), fmt(s[name]['pgr']))
             for name in losses]
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  lines = ['  '.join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
  lines.insert(1, '  '.join('-' * w for w in widths))
  return ('overlap rows of test (Shin et al. 2024: confident weak label, strong features aligned '
          'with the unconfident rows; found without labels) vs the rest:\n' + '\n'.join(lines))
