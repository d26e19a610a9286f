"""Self-training by pseudo-label rounds (offline), as stages: teacher -> pseudo-labels -> student.

The classic loop (Lee 2013; surveyed by Amini et al. 2022, "Self-Training: A Survey"): a labelled
set L (`labels.per_class` examples of every class, drawn per seed), an unlabelled set U (the rest
of train plus the dataset's own unlabelled split if it loads one; its labels are hidden from
training and used only to report pseudo-label quality, over the rows whose label is known) and
test. Round 0 trains the teacher on L. Each round r >= 1 the previous model labels U, a selection
policy (`w2s.protocols.pseudo_labels`) picks pseudo-labels, and a freshly initialised student
trains on L plus the selected part of U, then teaches the next round. Variants by config:

  * selection: threshold (confidence >= tau), curriculum (Cascante-Bonilla et al. 2021: round r
    admits the top 20r% of U), topk per class (Yalniz et al. 2019), all (soft labels, Arazo et al.
    2020 style), agreement (T-similarity over an ensemble teacher's K heads, Odonnat et al. 2024);
  * `pseudo.labels`: 'hard' (one-hot argmax) or 'soft' (the teacher's probabilities);
  * Noisy Student (Xie et al. 2020): the teacher predicts clean inputs (prediction never
    augments), the student trains with noise (`student.train.augment`, model dropout) and may be
    larger (`student.model`);
  * any student loss (xent, gce, elr, ...) on the pseudo-labels (`student.loss`).

Each round is a stage keyed by everything that determines it (data, labels split, seed, model,
training, selection, the previous round), so a rerun skips finished rounds and an interrupted one
resumes. Results: test accuracy per round (round 0 = supervised on L only), pseudo-label accuracy,
coverage and utilisation per round (and per class), calibration (ECE), mean and bootstrap 95% CI
over seeds, and `rounds.png`.
"""
import dataclasses
import os
from typing import Any, Mapping

import jax
import numpy as np

from w2s import options, scores, sharding
from w2s import pseudo_labels as pseudo_lib
from w2s.data import base
from w2s.data import splits as splits_lib
from w2s.errors import UserError
from w2s.protocols import learners, role_check
from w2s.protocols.stages import Stage, number_stages
from w2s.protocols.weak_to_strong import train_and_predict

TOP_KEYS = ('protocol', 'dataset', 'labels', 'tokenizer', 'seeds', 'teacher', 'student', 'rounds',
            'pseudo', 'eval_batch_size', 'log_every', 'checkpoint_every', 'keep_checkpoints',
            'mesh', 'shared_dir', 'smoke')
LABEL_KEYS = ('per_class', 'max_unlabelled', 'max_test')
PSEUDO_KEYS = ('select', 'labels')


@dataclasses.dataclass(frozen=True)
class Options:
  dataset: options.Plugin
  labels: Mapping[str, Any]
  tokenizer: Mapping[str, Any] | None
  seeds: tuple[int, ...]
  teacher: learners.RoleOptions
  student: learners.RoleOptions
  rounds: int
  select: options.Plugin
  hard: bool
  eval_batch_size: int
  run: Mapping[str, int]
  num_devices: int
  mesh_shape: Mapping[str, int] | None
  shared_dir: str


def resolve(config, input_kind: str | None = None) -> Options:
  c = options.plain(config)
  options.check_keys(c, TOP_KEYS, 'config')
  for key in ('dataset', 'labels', 'seeds', 'teacher', 'rounds', 'pseudo', 'eval_batch_size'):
    if key not in c:
      raise UserError(f'config.{key} is required by the self_training protocol')
  options.check_keys(c['labels'], LABEL_KEYS, 'labels')
  options.check_keys(c['pseudo'], PSEUDO_KEYS, 'pseudo')
  seeds = options.seeds_of(c['seeds'])
  tok = c.get('tokenizer')
  role = lambda name, s: learners.RoleOptions.from_section(name, s, tokenizer=tok,
                                                           input_kind=input_kind)
  teacher = role('teacher', c['teacher'])
  student = role('student', c.get('student') or c['teacher'])
  mode = c['pseudo'].get('labels', 'hard')
  if mode not in ('hard', 'soft'):
    raise UserError(f"pseudo.labels={mode!r}; use 'hard' (one-hot) or 'soft' (probabilities)")
  select = options.plugin('pseudo_labels', c['pseudo'].get('select') or {'name': 'threshold'},
                          'pseudo.select')
  mesh = c.get('mesh') or {}
  options.check_keys(mesh, ('num_devices', 'shape'), 'mesh')
  opts = Options(
      dataset=options.plugin('datasets', c['dataset'], 'dataset'), labels=c['labels'],
      tokenizer=tok, seeds=seeds, teacher=teacher, student=student,
      rounds=options.positive(c['rounds'], 'rounds', allow_zero=True), select=select,
      hard=mode == 'hard', eval_batch_size=options.positive(c['eval_batch_size'],
                                                            'eval_batch_size'),
      run=options.run_settings(c),
      num_devices=options.positive(mesh.get('num_devices', 0), 'mesh.num_devices',
                                   allow_zero=True), mesh_shape=mesh.get('shape'),
      shared_dir=os.path.abspath(c['shared_dir']) if c.get('shared_dir') else '')
  for where, r in (('teacher', teacher), ('student', student)):
    learners.train_options(r.train, f'{where}.train', loss=r.loss, seed=0, run=dict(opts.run))
    if r.train.get('eval_every') or r.train.get('select', 'last') != 'last':
      raise UserError(f'{where}.train: self_training has no labelled held-out slice (with a few '
                      'labels per class there is none to spare); drop eval_every / select')
  if pseudo_lib.needs_members(select) and teacher.ensemble_size < 2:
    raise UserError(f'pseudo.select {select.name!r} compares the heads of an ensemble teacher: '
                    'set teacher.ensemble=dict(size=K) (and student.ensemble) with K >= 2')
  return opts


def check(config):
  """(Options, dataset): everything checked, the labels split drawn once, teacher and student
  traced on the dataset's inputs (models, augmentations) and the pseudo-label policy run on
  made-up probabilities, so what fails after round 0 fails here (what --dry_run runs)."""
  opts = resolve(config)
  dataset = options.build(opts.dataset, 'dataset')
  opts = resolve(config, dataset.input_kind)
  sharding.check_batch_size(opts.eval_batch_size,
                            sharding.make_mesh(opts.num_devices, opts.mesh_shape), 'eval_batch_size')
  _splits(dataset, opts, opts.seeds[0])
  for r in (opts.teacher, opts.student):
    role_check.role(r, learners.train_options(r.train, f'{r.role}.train', loss=r.loss, seed=0,
                                              run=dict(opts.run)), dataset)
  pseudo_lib.check(opts.select, dataset.num_classes, opts.teacher.ensemble_size)
  return opts, dataset


def _splits(dataset, opts: Options, seed: int):
  return splits_lib.labelled_unlabelled(dataset, seed=seed, **opts.labels).splits


def stage_plan(opts: Options, root: str, seed: int) -> list[Stage]:
  """round 0 (teacher on L), round 1..R (students), each keyed by its inputs and the round before."""
  base_key = (opts.dataset.spec(), options.plain(opts.labels), options.plain(opts.tokenizer), seed)
  plan = [Stage(root, 'round0', base_key, opts.teacher.spec(), seed=seed)]
  for r in range(1, opts.rounds + 1):
    plan.append(Stage(root, f'round{r}', base_key, opts.student.spec(), opts.select.spec(),
                      'hard' if opts.hard else 'soft', r, plan[-1].key, seed=seed))
  number_stages(plan, opts.seeds.index(seed), len(opts.seeds))  # progress: 'stage k/N'
  return plan


def run(*, config, workdir: str) -> dict:
  opts, dataset = check(config)
  mesh = sharding.make_mesh(opts.num_devices, opts.mesh_shape)
  C = dataset.num_classes
  root = opts.shared_dir or workdir
  common = dict(dataset=dataset, eval_batch_size=opts.eval_batch_size,
                cache_dir=os.path.join(root, 'features'))
  teacher, student = learners.make(opts.teacher, **common), learners.make(opts.student, **common)
  fit_kw = dict(mesh=mesh, eval_batch_size=opts.eval_batch_size, num_classes=C)
  per_seed = []
  for seed in opts.seeds:
    parts = _splits(dataset, opts, seed)
    lab, unl, test = parts['labelled'], parts['unlabelled'], parts['test']
    plan = stage_plan(opts, root, seed)
    topt = lambda r: learners.train_options(r.opts.train, f'{r.name}.train', loss=r.opts.loss,
                                            seed=seed, run=dict(opts.run))
    out = train_and_predict(plan[0], teacher, lab, learners.soft_labels(lab, C),
                            {'unlabelled': unl, 'test': test}, opts=topt(teacher), **fit_kw)
    rounds = [_round_record(0, out, test, None)]
    for r, stage in enumerate(plan[1:], start=1):
      chosen, targets, quality = _pseudo(opts, out, unl, r, C)
      train_raw = base.concat([lab, base.take(unl, chosen)])
      labels = np.concatenate([learners.soft_labels(lab, C), targets])
      # U too in the last round: a rerun with more rounds continues from this round's labels
      out = train_and_predict(stage, student, train_raw, labels, {'unlabelled': unl, 'test': test},
                              opts=topt(student), **fit_kw)
      rounds.append(_round_record(r, out, test, quality))
      print(f'[self_training] seed {seed} round {r}: test {rounds[-1]["acc"]:.4f}  pseudo-labels '
            f'{quality["coverage"]:.1%} of U at {quality["accuracy"]:.4f} accuracy', flush=True)
    per_seed.append({'seed': seed, 'n_labelled': len(lab['id']), 'n_unlabelled': len(unl['id']),
                     'n_test': len(test['id']), 'rounds': rounds,
                     'stages': {s.kind: os.path.relpath(s.dir, root) for s in plan}})
    print(f'[self_training] seed {seed}: supervised on {len(lab["id"])} labels '
          f'{rounds[0]["acc"]:.4f} -> round {opts.rounds} {rounds[-1]["acc"]:.4f}', flush=True)
  from w2s.protocols import self_training_results as results_lib
  results = results_lib.summarize(per_seed, config.to_dict())
  if jax.process_index() == 0:
    results_lib.plot(results, workdir)
    print(results_lib.table(results), flush=True)
  return results


def _pseudo(opts: Options, teacher_out: dict, unl: dict, r: int, C: int):
  """(rows of U chosen, their targets [n, C], quality numbers vs U's hidden labels)."""
  from w2s.protocols.stages import join_by_id
  if 'unlabelled_id' not in teacher_out:  # a last round finished before U was always predicted
    raise UserError(f'round {r - 1} has no predictions on the unlabelled set to continue from '
                    '(it was the last round of an older run); delete that round\'s stage '
                    'directory (results.json "stages") to retrain it, or keep the old rounds')
  probs = join_by_id(unl['id'], teacher_out['unlabelled_id'], teacher_out['unlabelled_probs'],
                     'teacher labels of U')
  members = None
  if 'unlabelled_member_probs' in teacher_out:
    members = join_by_id(unl['id'], teacher_out['unlabelled_id'],
                         teacher_out['unlabelled_member_probs'], 'teacher members on U')
  chosen, labels = pseudo_lib.choose(opts.select, probs, round_index=r, members=members)
  if chosen.size == 0:  # the round then trains on L alone; said, not silent
    print(f'[self_training] warning: round {r}: pseudo.select {opts.select.name!r} kept no '
          'unlabelled example (the teacher is never that confident); this round trains on the '
          'labelled set only', flush=True)
  targets = np.eye(C, dtype=np.float32)[labels] if opts.hard else probs[chosen].astype(np.float32)
  return chosen, targets, pseudo_lib.quality(chosen, labels, np.asarray(unl['label']), C)


def _round_record(r: int, out: dict, test: dict, quality: dict | None) -> dict:
  from w2s.protocols.stages import join_by_id
  probs = join_by_id(test['id'], out['test_id'], out['test_probs'], f'round {r} test')
  y = np.asarray(test['label'])
  rec = {'round': r, 'acc': scores.accuracy(probs, y), 'ece': scores.ece(probs, y)}
  if quality is not None:
    rec['pseudo'] = quality
  return rec
