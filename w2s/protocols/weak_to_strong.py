"""The weak-to-strong protocol (Burns et al. 2023, "Weak-to-Strong Generalization"), as stages.

Per seed: split train into A (weak_train), B (strong_train) and optionally a held-out 'val' slice
-> weak supervisor on A's ground truth (or labelling functions + a label model, `programmatic.py`)
-> weak soft labels on B, val and test -> strong ceiling on B's ground truth -> (optionally,
`clean`: B's weak labels relabelled / filtered on the strong model's features,
`cleaning_stage.py`) -> for each student loss, the strong student on B's weak labels (optionally
through a bootstrapping chain of intermediate models, and strong-to-strong relabelling rounds;
optionally, `student.queries`, one more student per budget k that buys k true labels of B,
`queries.py`) -> test accuracy, PGR and the diagnostics of `w2s.scores` (optionally, `overlap`,
also on the test rows of Shin et al.'s overlap vs the rest, `overlap_stage.py`). Over seeds:
means with 95% t-intervals, `results.json`, a table and plots. Every stage's outputs are keyed by
the config that produced them (`stages.py`), so a rerun skips finished stages and all students
share one set of weak labels.

Model selection never sees test labels or B's ground truth: a stage with `train.eval_every > 0`
evaluates on the val slice against its *own* label source (the weak supervisor and the ceiling
against ground truth, a student against the weak supervisor's labels of val, a chain learner or a
relabelled student against its teacher's), and `select='best'` / `patience` pick the parameters
and the stopping point from those numbers (EleutherAI's w2s does the same).
"""
import dataclasses
import os
from typing import Any, Mapping

import jax
import numpy as np

from w2s import ensemble, metrics, options, preemption, selection, sharding, train
from w2s.data import splits as splits_lib
from w2s.errors import UserError
from w2s.protocols import cleaning_stage, learners, overlap_stage, programmatic, role_check
from w2s.protocols import queries as queries_lib
from w2s.protocols import results as results_lib
from w2s.protocols.stages import Stage, join_by_id, number_stages

TOP_KEYS = ('protocol', 'dataset', 'splits', 'tokenizer', 'seeds', 'weak', 'strong', 'student',
            'student_losses', 'student_order', 'chain', 'relabel_rounds', 'eval_batch_size',
            'log_every', 'checkpoint_every', 'keep_checkpoints', 'mesh', 'shared_dir', 'smoke',
            'clean', 'overlap')
STUDENT_KEYS = ('train', 'queries')


@dataclasses.dataclass(frozen=True)
class Options:
  """The whole weak-to-strong config, resolved and checked (see `resolve`)."""
  dataset: options.Plugin
  splits: Mapping[str, Any]
  tokenizer: Mapping[str, Any] | None
  seeds: tuple[int, ...]
  weak: learners.RoleOptions | programmatic.Options   # trained, or rules + a label model
  strong: learners.RoleOptions
  student_train: Mapping[str, Any]
  students: tuple[tuple[str, options.Plugin], ...]     # (name, loss) in the config's order
  chain: tuple[learners.RoleOptions, ...]
  relabel_rounds: int
  eval_batch_size: int
  run: Mapping[str, int]                                # log_every, checkpoint_every, keep_...
  num_devices: int
  mesh_shape: Mapping[str, int] | None = None       # {'data': -1, 'fsdp': 1, 'tensor': 1}
  shared_dir: str = ''   # stages and feature caches live here instead of the workdir (sweeps)
  clean: options.Plugin | None = None  # a cleaner of B's weak labels (cleaning_stage), or None
  overlap: overlap_stage.Overlap | None = None  # the overlap report's options, or None
  queries: queries_lib.Queries | None = None  # budgets of B's true labels students buy, or None


def resolve(config, input_kind: str | None = None) -> Options:
  """Checks every section of `config` (keys, plug-in options, values) into `Options`."""
  c = options.plain(config)
  options.check_keys(c, TOP_KEYS, 'config')
  for key in ('dataset', 'splits', 'seeds', 'weak', 'strong', 'student_losses', 'eval_batch_size'):
    if key not in c:
      raise UserError(f'config.{key} is required by the weak_to_strong protocol')
  dataset = options.plugin('datasets', c['dataset'], 'dataset')
  split_fn = splits_lib.weak_to_strong
  valid, _ = options.accepted_kwargs(split_fn)
  options.check_keys(c['splits'], valid - {'dataset', 'seed'}, 'splits')
  seeds = options.seeds_of(c['seeds'])
  tok = c.get('tokenizer')
  role = lambda name, s: learners.RoleOptions.from_section(name, s, tokenizer=tok,
                                                           input_kind=input_kind)
  weak, strong = _weak_role(c['weak'], input_kind, role), role('strong', c['strong'])
  student = c.get('student') or {}
  options.check_keys(student, STUDENT_KEYS, 'student')
  losses = c['student_losses']
  if not losses:
    raise UserError('student_losses is empty; name at least one, e.g. dict(xent=dict(name="xent"))')
  order = tuple(c.get('student_order') or sorted(losses))
  if sorted(order) != sorted(losses):
    raise UserError(f'student_order {list(order)} must list exactly the student_losses '
                    f'{sorted(losses)}')
  students = tuple((n, options.plugin('losses', losses[n], f'student_losses.{n}')) for n in order)
  chain = tuple(role(f'chain{i}', s) for i, s in enumerate(c.get('chain') or ()))
  run = options.run_settings(c)
  mesh = c.get('mesh') or {}
  options.check_keys(mesh, ('num_devices', 'shape'), 'mesh')
  relabel = options.positive(c.get('relabel_rounds', 0), 'relabel_rounds', allow_zero=True)
  opts = Options(
      dataset=dataset, splits=c['splits'], tokenizer=tok, seeds=seeds, weak=weak, strong=strong,
      student_train=student.get('train') or strong.train, students=students, chain=chain,
      relabel_rounds=relabel,
      eval_batch_size=options.positive(c['eval_batch_size'], 'eval_batch_size'), run=run,
      num_devices=options.positive(mesh.get('num_devices', 0), 'mesh.num_devices',
                                   allow_zero=True), mesh_shape=mesh.get('shape'),
      shared_dir=_shared_dir(c.get('shared_dir')), clean=cleaning_stage.resolve(c.get('clean')),
      overlap=overlap_stage.resolve(c.get('overlap')),
      queries=queries_lib.resolve(student.get('queries'), relabel))
  _check_stage_options(opts)
  return opts


def _weak_role(section, input_kind, role):
  """The weak section: a trained learner, or labelling functions + a label model."""
  s = options.plain(section)
  if isinstance(s, dict):  # one list of valid keys for both kinds (a typo gets a suggestion)
    options.check_keys(s, learners.ROLE_KEYS + programmatic.KEYS, 'weak')
  if programmatic.is_section(section):
    return programmatic.Options.from_section('weak', section, input_kind=input_kind)
  return role('weak', section)


def _shared_dir(value) -> str:
  if value in (None, ''):
    return ''
  if not isinstance(value, str):
    raise UserError(f'shared_dir={value!r} must be a directory path (or empty: the workdir)')
  return os.path.abspath(os.path.expanduser(value))


def stage_plan(opts: Options, root: str, seed: int) -> dict:
  """The stages of one seed, each keyed by exactly what produces it: {'weak', 'ceiling',
  'chain': [...], 'clean': [] or [stage], 'overlap': [] or [stage], 'students': {name: [round 0,
  round 1, ...]}, 'queries': {name: [a student per budget > 0]}}. `run`
  trains them; a sweep's dry run lists which are done. Under one `root`, runs that share a stage's
  inputs share its directory (e.g. one weak supervisor for every strong-model size)."""
  base = (opts.dataset.spec(), options.plain(opts.splits), options.plain(opts.tokenizer), seed)
  weak = Stage(root, 'weak', base, opts.weak.spec(), seed=seed)
  plan = {'weak': weak, 'ceiling': Stage(root, 'ceiling', base, opts.strong.spec(), seed=seed),
          'chain': [], 'students': {}, 'queries': {},
          'overlap': overlap_stage.plan(root, base, opts.overlap, opts.strong, weak.key, seed)}
  key = weak.key
  for role in opts.chain:  # bootstrapping: weak -> intermediate -> ... -> strong
    plan['chain'].append(Stage(root, role.role, base, role.spec(), key, seed=seed))
    key = plan['chain'][-1].key
  plan['clean'] = cleaning_stage.plan(root, base, opts.clean, opts.strong, key, seed)
  key = plan['clean'][-1].key if plan['clean'] else key  # the students learn the cleaned labels
  for name, loss in opts.students:
    rounds, k = [], key
    for r in range(opts.relabel_rounds + 1):
      kind = f'student_{name}' + (f'_round{r}' if r else '')
      rounds.append(Stage(root, kind, base, opts.strong.spec(), options.plain(opts.student_train),
                          loss.spec(), k, seed=seed))
      k = rounds[-1].key
    plan['students'][name] = rounds
    parts = (opts.strong.spec(), options.plain(opts.student_train), loss.spec(), key)
    plan['queries'][name] = queries_lib.plan(root, base, opts.queries, parts, name, seed)
  number_stages(all_stages(plan), opts.seeds.index(seed), len(opts.seeds))
  return plan


def all_stages(plan: dict) -> list[Stage]:
  """Every stage of one seed's plan, in the order they run."""
  return [plan['weak'], plan['ceiling'], *plan['overlap'], *plan['chain'], *plan['clean'],
          *(st for name, rounds in plan['students'].items()
            for st in (*rounds, *plan['queries'][name]))]


def _stage_trains(opts: Options):
  """(where, train section, loss) of every kind of stage that trains."""
  if isinstance(opts.weak, learners.RoleOptions):
    yield 'weak.train', opts.weak.train, opts.weak.loss
  yield 'strong.train', opts.strong.train, opts.strong.loss
  for name, loss in opts.students:
    yield 'student.train', opts.student_train, loss
  for r in opts.chain:
    yield f'{r.role}.train', r.train, r.loss


def _check_stage_options(opts: Options) -> None:
  """Every stage's train options, once, before anything runs (seed 0 stands for all)."""
  val = float(opts.splits.get('val_fraction', 0.0) or 0.0)
  for where, section, loss in _stage_trains(opts):
    t = learners.train_options(section, where, loss=loss, seed=0, run=dict(opts.run))
    if t.eval_every and val <= 0:
      raise UserError(f'{where}.eval_every={t.eval_every} needs a held-out slice: set '
                      'splits.val_fraction > 0 (val is labelled by the weak supervisor for the '
                      'students; test and B\'s ground truth are never used for selection)')


def check(config):
  """(Options, dataset): the config resolved against the dataset's input kind (what `--dry_run`
  runs; nothing is trained)."""
  opts = resolve(config)
  dataset = options.build(opts.dataset, 'dataset')
  opts = resolve(config, dataset.input_kind)
  sharding.check_batch_size(opts.eval_batch_size,
                            sharding.make_mesh(opts.num_devices, opts.mesh_shape), 'eval_batch_size')
  _check_losses(opts, dataset.num_classes)
  if isinstance(opts.weak, programmatic.Options):
    programmatic.check(opts.weak, dataset)
  if opts.clean is not None:
    cleaning_stage.check(opts.clean, dataset.num_classes, opts.strong)
  if opts.overlap is not None:
    overlap_stage.check(opts.strong, dataset.num_classes)
  _trace_roles(opts, dataset)
  return opts, dataset


def _trace_roles(opts: Options, dataset) -> None:
  """Every trained role's model and augmentations traced on the dataset's inputs (role_check):
  a flat vector fed to an image model fails here, not when a stage's step compiles. The students
  are the strong role under `student.train` (traced again only when that section differs)."""
  trained = ([opts.weak] if isinstance(opts.weak, learners.RoleOptions) else []) + list(opts.chain)
  sections = [(r, r.train, f'{r.role}.train', r.loss) for r in trained]
  sections.append((opts.strong, opts.strong.train, 'strong.train', opts.strong.loss))
  if opts.students and options.plain(opts.student_train) != options.plain(opts.strong.train):
    sections.append((opts.strong, opts.student_train, 'student.train', opts.students[0][1]))
  for role, section, where, loss in sections:
    role_check.role(role, learners.train_options(section, where, loss=loss, seed=0,
                                                 run=dict(opts.run)), dataset)


def _softmax(logits):
  z = logits - logits.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def train_and_predict(stage: Stage, learner, train_raw, labels, predict_on: dict, *, opts, mesh,
                       eval_batch_size, num_classes, extras=None, val=None,
                       unlabelled=None) -> dict:
  """Runs one stage unless done: fit on (train_raw, labels), then probabilities on `predict_on`.

  A learner with an ensemble of K > 1 trains K members in one vmapped step; its outputs add the
  members' probabilities ('<split>_member_probs' [N, K, C]) to their mean. `val` = (raw, labels)
  is the held-out slice with this stage's own label source. `unlabelled` (raw) feeds an
  online semi-supervised step (`train.ssl`); with `train.ema_decay` > 0 the predictions come
  from the EMA of the parameters (FixMatch's evaluation). The stage's lock is held throughout
  (concurrent sweep points wait for a stage they share).
  """
  with stage.lock(), metrics.stage(stage.position):
    return _train_and_predict_unlocked(stage, learner, train_raw, labels, predict_on, opts=opts,
                                       mesh=mesh, eval_batch_size=eval_batch_size,
                                       num_classes=num_classes, extras=extras, val=val,
                                       unlabelled=unlabelled)


def _train_and_predict_unlocked(stage, learner, train_raw, labels, predict_on, *, opts, mesh,
                                eval_batch_size, num_classes, extras, val, unlabelled) -> dict:
  done = outputs_if_done(stage)
  if done is not None:
    return done
  ro = learner.opts
  train_ex = learner.examples(train_raw, labels, extras)
  val_ex = learner.examples(*val) if (val is not None and opts.eval_every) else None
  fit_kw = dict(cfg=opts, workdir=stage.dir, mesh=mesh, name=stage.kind, val_examples=val_ex,
                eval_batch_size=eval_batch_size, fingerprint={'stage': stage.key})
  if ro.ensemble_size > 1:
    state, last = ensemble.fit_ensemble(
        learner.module, train_ex, seeds=ensemble.member_seeds(opts.seed, ro.ensemble_size),
        bagging=ro.bagging, **fit_kw)
  else:
    if unlabelled is not None:
      fit_kw['unlabelled'] = learner.examples(unlabelled,
                                              learners.soft_labels(unlabelled, num_classes))
    state, last = train.fit(learner.module, train_ex, init_params=learner.init_params, **fit_kw)
    if opts.ema_decay > 0:
      state = state.replace(params=state.extra['ema'])
  outputs = {}
  for split, raw in predict_on.items():
    ex = learner.examples(raw, learners.soft_labels(raw, num_classes))
    name = f'{stage.kind} labels {split}'
    if ro.ensemble_size > 1:
      pred = ensemble.predict_ensemble(learner.module, state.params, ex,
                                       batch_size=eval_batch_size, mesh=mesh, name=name)
      members = _softmax(pred['member_logits'])
      outputs[f'{split}_member_probs'] = members
      outputs[f'{split}_probs'] = members.mean(axis=1)
    else:
      pred = train.predict(learner.module, state.params, ex, batch_size=eval_batch_size,
                           mesh=mesh, name=name)
      outputs[f'{split}_probs'] = _softmax(pred['logits'])
    outputs[f'{split}_id'] = pred['id']
  return finish_stage(stage, outputs, state, last)


def outputs_if_done(stage: Stage) -> dict | None:
  """A finished stage's outputs (it is skipped), else None after the preemption check that
  precedes training it."""
  if stage.done():
    print(f'[{stage.kind}] done earlier, skipped ({stage.dir})', flush=True)
    return stage.outputs()
  preemption.check(f'before stage {stage.kind}', 'the stages before it are saved')
  return None


def finish_stage(stage: Stage, outputs: dict, state, last: dict) -> dict:
  """Records a trained stage: its outputs plus what selection saw (held-out loss and accuracy
  against the stage's own label source), its metrics, steps and selection summary."""
  for key in ('val_loss', 'val_accuracy', 'val_auroc'):
    if key in last:
      outputs[key] = np.float32(last[key])
  stage.finish(outputs, {'train_metrics': last, 'steps': int(np.max(state.step)),
                         **selection.summary(state)})
  return outputs


def _teacher_extras(teacher: dict, raw: dict) -> dict | None:
  """'member_probs' [N, K, C] of an ensemble teacher on B (for the reliability loss), by id."""
  if 'strong_train_member_probs' not in teacher:
    return None
  return {'member_probs': join_by_id(raw['id'], teacher['strong_train_id'],
                                     teacher['strong_train_member_probs'], 'ensemble members')}


def _probs_on(outputs: dict, split: str, raw: dict, what: str) -> np.ndarray:
  return join_by_id(raw['id'], outputs[f'{split}_id'], outputs[f'{split}_probs'], what)


def _check_losses(opts: Options, num_classes: int) -> None:
  """Every loss traced once on abstract inputs (a user loss that cannot run fails now)."""
  k = getattr(opts.weak, 'ensemble_size', 1)  # a programmatic weak role is one set of labels
  extras = ({'member_probs': jax.ShapeDtypeStruct((8, k, num_classes), np.float32)}
            if k > 1 else None)
  for where, _, loss in _stage_trains(opts):
    train.check_loss(loss, num_classes=num_classes, where=where.replace('.train', '.loss'),
                     batch_extras=extras)


def run(*, config, workdir: str) -> dict:
  opts, dataset = check(config)
  mesh = sharding.make_mesh(opts.num_devices, opts.mesh_shape)
  C = dataset.num_classes
  root = opts.shared_dir or workdir
  common = dict(dataset=dataset, eval_batch_size=opts.eval_batch_size,
                cache_dir=os.path.join(root, 'features'))
  trained = isinstance(opts.weak, learners.RoleOptions)
  weak = learners.make(opts.weak, **common) if trained else None
  strong = learners.make(opts.strong, **common)
  chain = [learners.make(r, **common) for r in opts.chain]
  features = cleaning_stage.features_fn(strong, C, **common)  # for clean and overlap
  fit_kw = dict(mesh=mesh, eval_batch_size=opts.eval_batch_size, num_classes=C)
  per_seed, test_probs = [], []  # test_probs: each seed's test probabilities, for the figures
  for seed in opts.seeds:
    topt = lambda where, section, loss: learners.train_options(section, where, loss=loss,
                                                               seed=seed, run=dict(opts.run))
    parts = splits_lib.weak_to_strong(dataset, seed=seed, **opts.splits)
    a, b, test = (parts.splits[k] for k in ('weak_train', 'strong_train', 'test'))
    val = parts.splits.get('val')
    queries_lib.check_budget(opts.queries, len(b['id']))  # before anything trains
    gt = lambda raw: (raw, learners.soft_labels(raw, C)) if raw is not None else None
    with_val = lambda d: {**d, **({'val': val} if val is not None else {})}
    plan = stage_plan(opts, root, seed)
    weak_on = with_val({'strong_train': b, 'test': test})
    if trained:
      weak_out = train_and_predict(
          plan['weak'], weak, a, learners.soft_labels(a, C), weak_on,
          opts=topt('weak.train', opts.weak.train, opts.weak.loss), val=gt(val), **fit_kw)
    else:  # the rules vote on the train side (A, B, val; no labels) and test
      weak_out = programmatic.label(
          plan['weak'], opts.weak, fit_on=[a, b] + ([val] if val is not None else []),
          predict_on=weak_on, num_classes=C, val=gt(val))
    ceiling_out = train_and_predict(
        plan['ceiling'], strong, b, learners.soft_labels(b, C), {'test': test},
        opts=topt('strong.train', opts.strong.train, opts.strong.loss), val=gt(val), **fit_kw)
    found = overlap_stage.detect(plan['overlap'], opts.overlap, features, test, weak_out)
    teacher = weak_out
    for learner, stage in zip(chain, plan['chain']):  # bootstrapping: weak -> ... -> strong
      teacher = train_and_predict(
          stage, learner, b, _probs_on(teacher, 'strong_train', b, stage.kind),
          with_val({'strong_train': b, 'test': test}),
          opts=topt(f'{learner.name}.train', learner.opts.train, learner.opts.loss),
          val=_teacher_val(teacher, val), **fit_kw)
    # B's rows and the teacher's labels of them as the students read them: cleaned if asked
    teacher, b_student, cleaned = cleaning_stage.clean(plan['clean'], opts.clean, features,
                                                     b, teacher, C)
    record = {'seed': seed, 'n_weak_train': len(a['id']), 'n_strong_train': len(b['id']),
              'n_val': 0 if val is None else len(val['id']), 'n_test': len(test['id'])}
    record.update({'clean': cleaned} if cleaned else {})
    record['held_out'] = {'weak': _held_out(weak_out), 'ceiling': _held_out(ceiling_out)}
    if not trained:  # coverage and accuracy of the rules' labels on B and test (report only)
      record['weak_labels'] = programmatic.report(weak_out, {'strong_train': b, 'test': test})
    # where each stage's checkpoints and metrics.jsonl live (relative to the stage root)
    record['stages'] = {st.kind: os.path.relpath(st.dir, root) for st in all_stages(plan)}
    weak_test = _probs_on(weak_out, 'test', test, 'weak test labels')
    probs = {'label': np.asarray(test['label']), 'weak': weak_test,
             'ceiling': _probs_on(ceiling_out, 'test', test, 'ceiling')}
    for name, loss in opts.students:
      student_out = _student(plan['students'][name], loss, strong, b_student, test, val, teacher,
                             opts, fit_kw, topt)
      probs[f'student_{name}'] = _probs_on(student_out, 'test', test, 'student')
      record[name] = results_lib.score_seed(weak_test, probs[f'student_{name}'], probs['ceiling'],
                                            test['label'])
      record['held_out'][f'student_{name}'] = _held_out(student_out)
      if opts.queries is not None:  # the same student buying k true labels of B, per budget
        fit = lambda st, labels, loss=loss: train_and_predict(
            st, strong, b_student, labels, {'test': test}, val=_teacher_val(teacher, val),
            opts=topt('student.train', opts.student_train, loss),
            extras=_teacher_extras(teacher, b_student), **fit_kw)
        record.setdefault('queries', {})[name] = queries_lib.students(
            plan['queries'][name], opts.queries, fit, b_student, probs, name, seed,
            teacher=_probs_on(teacher, 'strong_train', b_student, 'teacher labels of B'),
            truth=learners.soft_labels(b_student, C),
            test_probs=lambda out: _probs_on(out, 'test', test, 'queried student'))
    if found is not None:
      record['overlap'] = overlap_stage.score(*found, probs, [n for n, _ in opts.students])
    per_seed.append(record)
    test_probs.append(probs)
    print(results_lib.seed_line(record, [n for n, _ in opts.students]), flush=True)
  results = results_lib.summarize(per_seed, [n for n, _ in opts.students], config.to_dict())
  if opts.overlap is not None:
    results['overlap'] = overlap_stage.summarize(per_seed, [n for n, _ in opts.students])
  if opts.queries is not None:
    results['queries'] = queries_lib.summarize(per_seed)
  if jax.process_index() == 0:
    results_lib.plot(results, workdir, test_probs=test_probs, stage_root=root)
    print(results_lib.table(results), flush=True)
  return results


def _held_out(outputs: dict) -> dict:
  """A stage's held-out numbers against its own label source (ground truth for the weak model
  and the ceiling, weak labels for a student): what hyperparameters may be chosen on."""
  return {k: float(outputs[k]) for k in ('val_loss', 'val_accuracy', 'val_auroc') if k in outputs}


def _teacher_val(teacher: dict, val):
  """(val raw, the teacher's probabilities on it, its members' votes if an ensemble): a stage's
  held-out slice with its labels."""
  if val is None:
    return None
  extras = None
  if 'val_member_probs' in teacher:
    extras = {'member_probs': join_by_id(val['id'], teacher['val_id'],
                                         teacher['val_member_probs'], 'ensemble members of val')}
  return val, _probs_on(teacher, 'val', val, 'teacher labels of val'), extras


def _student(rounds, loss, strong, b, test, val, teacher, opts, fit_kw, topt):
  """The strong student on the teacher's labels of B (selected on the teacher's labels of val),
  then `relabel_rounds` strong-to-strong rounds (each student relabels B for a fresh student);
  `rounds`: the stages of `stage_plan`."""
  out = teacher
  for r, stage in enumerate(rounds):
    kind = stage.kind
    last_round = r == len(rounds) - 1
    predict_on = {'test': test, **({} if last_round else {'strong_train': b})}
    if not last_round and val is not None:
      predict_on['val'] = val
    out = train_and_predict(
        stage, strong, b, _probs_on(out, 'strong_train', b, f'{kind} labels'), predict_on,
        opts=topt('student.train', opts.student_train, loss), extras=_teacher_extras(out, b),
        val=_teacher_val(out, val), **fit_kw)
  return out
