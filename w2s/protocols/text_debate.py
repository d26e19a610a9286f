"""Text debate as a weak-to-strong variant (Lang et al. 2025, "Debate Helps Weak-to-Strong
Generalization"), as stages; transcripts and prompts in `w2s.debate.text`.

The config is a `weak_to_strong` config (dataset, splits, tokenizer, seeds, weak, strong,
student_losses, ...; no chain, relabel rounds or labelling functions) plus

    debate = dict(model=dict(name='llama', pretrained=QWEN2_DIR), seeds=(0, 1, 2, 3),
                  max_new_tokens=64, temperature=0.7, top_p=0.9, prompts=dict(...), ...)
    conditions = ('no_transcript', 'finetune_ensemble', 'consultancy', 'debate')

Per seed (the split seed), after the weak-to-strong split of train into A, B and val:

* transcripts: for each mode (debate, consultancy) and debate seed d, every example of A, B, val
  and test gets its transcript from the strong decoder (`TranscriptStore`: kept by example id,
  shared by every split seed and every rerun);
* weak, one labelling of B, val and test per condition, all trained on A's ground truth:
  'no_transcript': the weak role alone (the reference weak model of every PGR, as in the paper);
  'finetune_ensemble': K members differing only by fine-tuning seed (`ensemble.fit_ensemble`);
  'consultancy' / 'debate': K members, member k reading each example with debate seed k's
  transcript appended (`with_transcript`), all with the same fine-tuning seed. A frozen-backbone
  weak role (probe over cached features) trains its K members in one vmapped step over their own
  features; a fine-tuned one trains them one after the other (their token inputs differ). A
  condition's labels are the members' mean probability;
* ceiling: the strong role on B's ground truth (no transcripts: the student reads the plain
  example);
* students: for each condition and student loss, the strong role on B with the condition's
  labels, selected (with `train.eval_every`) on the same labels of val, never on test.

Results per condition and loss: test accuracy of the student, PGR against the no-transcript weak
model and the ceiling, the condition's own weak accuracy ('acc_weak_own'), mean and Student-t 95%
interval over seeds (none below 3), paired differences against the first condition; and the wall time of each part (transcripts, weak models, ceiling, students).
K = len(debate.seeds).
"""
import dataclasses
import os
import time

import jax
import numpy as np

from w2s import ensemble, options, scores, sharding
from w2s.data import base
from w2s.data import splits as splits_lib
from w2s.debate import text as text_lib
from w2s.errors import UserError
from w2s.protocols import learners, results as results_lib, weak_to_strong as wts
from w2s.protocols.stages import Stage, join_by_id

TOP_KEYS = ('protocol', 'dataset', 'splits', 'tokenizer', 'seeds', 'weak', 'strong', 'student',
            'student_losses', 'student_order', 'debate', 'conditions', 'eval_batch_size',
            'log_every', 'checkpoint_every', 'keep_checkpoints', 'mesh', 'shared_dir', 'smoke')
CONDITIONS = ('no_transcript', 'finetune_ensemble', 'consultancy', 'debate')
TRANSCRIPT_CONDITIONS = ('consultancy', 'debate')  # each is also its transcripts' mode


@dataclasses.dataclass(frozen=True)
class Options:
  w2s: wts.Options
  debate: text_lib.DebaterOptions
  conditions: tuple[str, ...]


def _conditions(value) -> tuple[str, ...]:
  vals = tuple(options.plain(value)) if value is not None else CONDITIONS
  bad = [v for v in vals if v not in CONDITIONS]
  if not vals or bad:
    raise UserError(f'conditions={vals!r}: choose from {list(CONDITIONS)}')
  return tuple(dict.fromkeys(vals))


def check(config):
  """(Options, dataset): every section checked, nothing generated or trained."""
  c = options.plain(config)
  options.check_keys(c, TOP_KEYS, 'config')
  if 'debate' not in c:
    raise UserError("config.debate is required by the text_debate protocol: dict(model=dict("
                    "name='llama', pretrained=DIR), seeds=(0, 1, 2, 3), ...)")
  core = {k: v for k, v in c.items() if k not in ('debate', 'conditions')}
  w2s_opts, dataset = wts.check(core)
  if not isinstance(w2s_opts.weak, learners.RoleOptions):
    raise UserError('text_debate: the weak role is a trained model (it reads the transcripts); '
                    'labelling functions go with protocol weak_to_strong')
  if dataset.input_kind != 'text':
    raise UserError(f'text_debate needs a text dataset (question + candidate answer); '
                    f'{dataset.name!r} is {dataset.input_kind}')
  if w2s_opts.weak.ensemble_size > 1:
    raise UserError('text_debate: weak.ensemble is set by the protocol (K = len(debate.seeds) '
                    "for 'finetune_ensemble', 'consultancy' and 'debate'); remove it")
  opts = Options(w2s=w2s_opts, debate=text_lib.DebaterOptions.from_section(c['debate']),
                 conditions=_conditions(c.get('conditions')))
  return opts, dataset


def _derived(dataset, name: str, raw_splits: dict) -> base.Dataset:
  """A dataset of the examples with one transcript table appended (its own feature cache)."""
  return base.Dataset(name, dataset.num_classes, dataset.label_names, 'text',
                      {k: v for k, v in raw_splits.items() if v is not None})


def _probs(out: dict, split: str, raw) -> np.ndarray:
  return join_by_id(raw['id'], out[f'{split}_id'], out[f'{split}_probs'], f'{split} labels')


def _member_probs(out: dict, split: str, raw) -> np.ndarray:
  if f'{split}_member_probs' in out:
    return join_by_id(raw['id'], out[f'{split}_id'], out[f'{split}_member_probs'],
                      f'{split} member labels')
  return _probs(out, split, raw)[:, None]


def _stacked_outputs(members: list[dict], splits: dict) -> dict:
  """K single-model outputs -> one output with '<split>_member_probs' [N, K, C] and their mean."""
  out = {}
  for split, raw in splits.items():
    m = np.stack([_probs(o, split, raw) for o in members], axis=1)
    out.update({f'{split}_id': raw['id'], f'{split}_member_probs': m,
                f'{split}_probs': m.mean(axis=1)})
  return out


def _vmapped_members(stage: Stage, learners_k: list, train_raw: list, labels, predict_on: dict,
                     *, topt, mesh, eval_batch_size, num_classes, val) -> dict:
  """K frozen-backbone members with their own inputs, in one vmapped `fit_ensemble`;
  `train_raw` / `predict_on` / `val`: member k's raw examples in list position k."""
  with stage.lock():
    done = wts.outputs_if_done(stage)
    if done is not None:
      return done
    head = learners_k[0].module
    train_ex = [lr.examples(r, labels) for lr, r in zip(learners_k, train_raw)]
    val_ex = None
    if val is not None and topt.eval_every:
      val_ex = ensemble.stack_members([lr.examples(r, val[1]) for lr, r in zip(learners_k, val[0])])
    state, last = ensemble.fit_ensemble(
        head, train_ex, cfg=topt, seeds=[topt.seed] * len(learners_k), workdir=stage.dir,
        mesh=mesh, name=stage.kind, fingerprint={'stage': stage.key}, val_examples=val_ex,
        eval_batch_size=eval_batch_size)
    outputs = {}
    for split, raws in predict_on.items():
      ex = ensemble.stack_members([lr.examples(r, learners.soft_labels(r, num_classes))
                                   for lr, r in zip(learners_k, raws)])
      pred = ensemble.predict_ensemble(head, state.params, ex, batch_size=eval_batch_size,
                                       mesh=mesh, name=f'{stage.kind} labels {split}',
                                       per_member=True)
      members = wts._softmax(pred['member_logits'])
      outputs.update({f'{split}_member_probs': members, f'{split}_probs': members.mean(axis=1),
                      f'{split}_id': pred['id']})
    return wts.finish_stage(stage, outputs, state, last)


class _Clock:
  """Wall seconds per part of the pipeline (what the debate benchmark splits the cost by)."""

  def __init__(self):
    self.seconds = {}

  def time(self, part: str, fn, *args, **kw):
    t = time.perf_counter()
    try:
      return fn(*args, **kw)
    finally:
      self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - t


def run(*, config, workdir: str) -> dict:
  opts, dataset = check(config)
  o = opts.w2s
  mesh = sharding.make_mesh(o.num_devices, o.mesh_shape)
  C = dataset.num_classes
  root = o.shared_dir or workdir
  cache_dir = os.path.join(root, 'features')
  common = dict(eval_batch_size=o.eval_batch_size, cache_dir=cache_dir)
  weak = learners.make(o.weak, dataset=dataset, **common)
  strong = learners.make(o.strong, dataset=dataset, **common)
  K = len(opts.debate.seeds)
  fit_kw = dict(mesh=mesh, eval_batch_size=o.eval_batch_size, num_classes=C)
  clock = _Clock()
  debater = []  # built once, on the first transcript a store lacks

  def get_debater():
    if not debater:
      debater.append(clock.time('debater load', text_lib.Debater, opts.debate, mesh))
    return debater[0]

  stores = {(mode, d): text_lib.TranscriptStore(root, opts.debate, mode, d, o.dataset.spec())
            for mode in opts.conditions if mode in TRANSCRIPT_CONDITIONS
            for d in opts.debate.seeds}
  per_seed, generated = [], 0
  for seed in o.seeds:
    topt = learners.train_options(o.weak.train, 'weak.train', loss=o.weak.loss, seed=seed,
                                  run=dict(o.run))
    parts = splits_lib.weak_to_strong(dataset, seed=seed, **o.splits)
    a, b, test = (parts.splits[k] for k in ('weak_train', 'strong_train', 'test'))
    val = parts.splits.get('val')
    gt = lambda raw: (raw, learners.soft_labels(raw, C)) if raw is not None else None
    on = {'strong_train': b, 'test': test, **({'val': val} if val is not None else {})}
    base_key = (o.dataset.spec(), options.plain(o.splits), options.plain(o.tokenizer), seed)
    every = base.concat([x for x in (a, b, val, test) if x is not None])

    weak_out, weak_keys = {}, {}
    ref_stage = Stage(root, 'weak', base_key, o.weak.spec(), seed=seed)
    weak_out['no_transcript'] = clock.time('weak models', wts.train_and_predict, ref_stage, weak, a,
                                           learners.soft_labels(a, C), on, opts=topt, val=gt(val),
                                           **fit_kw)
    weak_keys['no_transcript'] = ref_stage.key
    for cond in opts.conditions:
      if cond == 'finetune_ensemble':
        ens = dataclasses.replace(o.weak, ensemble_size=K)
        st = Stage(root, 'weak_finetune_ensemble', base_key, ens.spec(), seed=seed)
        lr = learners.make(ens, dataset=dataset, **common)
        weak_out[cond] = clock.time('weak models', wts.train_and_predict, st, lr, a,
                                    learners.soft_labels(a, C), on, opts=topt, val=gt(val),
                                    **fit_kw)
        weak_keys[cond] = st.key
      elif cond in TRANSCRIPT_CONDITIONS:
        members, member_learners, keys = [], [], []  # per debate seed: its splits, judge, key
        for d in opts.debate.seeds:
          store = stores[(cond, d)]
          before = store.generated
          table = clock.time('transcripts', store.get, every, get_debater)
          generated += store.generated - before
          # every split with this seed's transcripts appended, once
          m = {s: text_lib.with_transcript(r, table) for s, r in (('weak_train', a), *on.items())}
          derived = _derived(dataset, f'{dataset.name}+{cond}-seed{d}-{store.key}', {
              'train': base.concat([m[s] for s in ('weak_train', 'strong_train', 'val') if s in m]),
              'test': m['test']})
          member_learners.append(learners.make(o.weak, dataset=derived, **common))
          members.append(m)
          keys.append(store.key)
        if o.weak.frozen and K > 1:
          st = Stage(root, f'weak_{cond}', base_key, o.weak.spec(), keys, seed=seed)
          weak_out[cond] = clock.time(
              'weak models', _vmapped_members, st, member_learners,
              [m['weak_train'] for m in members], learners.soft_labels(a, C),
              {s: [m[s] for m in members] for s in on}, topt=topt,
              val=None if val is None else ([m['val'] for m in members], gt(val)[1]), **fit_kw)
          weak_keys[cond] = st.key
        else:
          outs = []
          for d, lr, m, key in zip(opts.debate.seeds, member_learners, members, keys):
            st = Stage(root, f'weak_{cond}_d{d}', base_key, o.weak.spec(), key, seed=seed)
            outs.append(clock.time('weak models', wts.train_and_predict, st, lr, m['weak_train'],
                                   learners.soft_labels(a, C), {s: m[s] for s in on}, opts=topt,
                                   val=gt(m.get('val')), **fit_kw))
            weak_keys.setdefault(cond, []).append(st.key)
          weak_out[cond] = _stacked_outputs(outs, on)

    ceiling_stage = Stage(root, 'ceiling', base_key, o.strong.spec(), seed=seed)
    ceiling_out = clock.time(
        'ceiling', wts.train_and_predict, ceiling_stage, strong, b, learners.soft_labels(b, C),
        {'test': test}, opts=learners.train_options(o.strong.train, 'strong.train',
                                                    loss=o.strong.loss, seed=seed,
                                                    run=dict(o.run)),
        val=gt(val), **fit_kw)
    ceiling_test = _probs(ceiling_out, 'test', test)
    ref_test = _probs(weak_out['no_transcript'], 'test', test)
    record = {'seed': seed, 'n_weak_train': len(a['id']), 'n_strong_train': len(b['id']),
              'n_val': 0 if val is None else len(val['id']), 'n_test': len(test['id']),
              'weak': {}}
    names = []
    for cond in opts.conditions:
      out = weak_out[cond]
      own_test = _probs(out, 'test', test)
      members_test = _member_probs(out, 'test', test)
      record['weak'][cond] = {
          'acc_test': scores.accuracy(own_test, test['label']),
          'acc_test_members': [scores.accuracy(members_test[:, k], test['label'])
                               for k in range(members_test.shape[1])],
          'acc_strong_train': scores.accuracy(_probs(out, 'strong_train', b), b['label']),
          **({'val_accuracy': float(out['val_accuracy'])} if 'val_accuracy' in out else {})}
      labels_b = _probs(out, 'strong_train', b)
      val_labels = None if val is None else (val, _probs(out, 'val', val), None)
      for name, loss in o.students:
        st = Stage(root, f'student_{cond}_{name}', base_key, o.strong.spec(),
                   options.plain(o.student_train), loss.spec(), weak_keys[cond], seed=seed)
        student_out = clock.time(
            'students', wts.train_and_predict, st, strong, b, labels_b, {'test': test},
            opts=learners.train_options(o.student_train, 'student.train', loss=loss, seed=seed,
                                        run=dict(o.run)), val=val_labels, **fit_kw)
        key = f'{cond}/{name}'
        names.append(key)
        record[key] = results_lib.score_seed(ref_test, _probs(student_out, 'test', test),
                                             ceiling_test, test['label'])
        record[key]['acc_weak_own'] = record['weak'][cond]['acc_test']
    per_seed.append(record)
    print(results_lib.seed_line(record, names).replace('[weak_to_strong]', '[text_debate]'),
          flush=True)
  results = results_lib.summarize(per_seed, names, options.plain(config))
  for name in names:
    results['summary'][name]['acc_weak_own'] = scores.summarize_seeds(
        [r[name]['acc_weak_own'] for r in per_seed])._asdict()
  results['timing_s'] = dict(clock.seconds)
  results['transcripts'] = {'generated_examples': generated,
                            'new_tokens': sum(s.new_tokens for s in stores.values()),
                            'generate_s': sum(s.seconds for s in stores.values()),
                            'stores': {f'{m}-seed{d}': os.path.relpath(s.dir, root)
                                       for (m, d), s in stores.items()}}
  if jax.process_index() == 0:
    results_lib.plot(results, workdir)
    print(results_lib.table(results).replace('weak-to-strong results',
                                             'text-debate weak-to-strong results'), flush=True)
    print('[text_debate] wall seconds: ' + ', '.join(f'{k} {v:.1f}' for k, v in
                                                      clock.seconds.items()), flush=True)
  return results
