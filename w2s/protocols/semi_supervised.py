"""Online semi-supervised learning: one model trained on L and U at once (`w2s.ssl_step`).

The labelled set L (`labels.per_class` per class, drawn per seed, as in self_training), the
unlabelled set U (the rest of train plus the dataset's own unlabelled split if it loads one,
e.g. `dict(name='stl10', unlabelled=True)`; labels hidden from the algorithm) and test. The `model`
section is a role (model, loss, train, frozen/head, input) whose `train.ssl` names the algorithm
(`w2s/ssl/`: supervised, pseudo_label, pi_model, mean_teacher, fixmatch, uda, flexmatch,
freematch, doubly_robust, softmatch, adamatch, dash, defixmatch, mixmatch, remixmatch, vat,
arazo, adsh, simmatch) with `unlabelled_ratio` (mu), `weak_augment` / `strong_augment` (the
views a and A; sections of kind 'augment') and `ema_decay` (> 0: predict with the EMA of the
parameters, FixMatch's evaluation). `ssl=dict(name='supervised')` is the labelled-only baseline
through the same step. One stage per seed, keyed by its config; results: test accuracy and ECE
with Student-t 95% intervals over seeds (none below 3), and the last logged mask rate /
pseudo-label accuracy (over the rows of U with a known label: a dataset's own unlabelled split,
label -1, is excluded; None when the last batch had no such row), and the class counts of L
and U ('labelled_per_class', 'unlabelled_per_class'). Long-tailed L and U (class-imbalanced SSL,
e.g. with `adsh`): labels=dict(per_class=N_max, imbalance=gamma, imbalance_u=...,
unlabelled_per_class=M_max), see `w2s.data.splits.labelled_unlabelled`.
"""
import os

import jax
import numpy as np

from w2s import options, scores, sharding
from w2s.data import splits as splits_lib
from w2s.errors import UserError
from w2s.protocols import learners, results as results_lib, role_check
from w2s.protocols.stages import Stage, join_by_id
from w2s.protocols.weak_to_strong import train_and_predict

TOP_KEYS = ('protocol', 'dataset', 'labels', 'tokenizer', 'seeds', 'model', 'eval_batch_size',
            'log_every', 'checkpoint_every', 'keep_checkpoints', 'mesh', 'shared_dir', 'smoke')
LABEL_KEYS = ('per_class', 'max_unlabelled', 'max_test', 'imbalance', 'imbalance_u',
              'unlabelled_per_class')


def _resolve(config, input_kind=None):
  c = options.plain(config)
  options.check_keys(c, TOP_KEYS, 'config')
  for key in ('dataset', 'labels', 'seeds', 'model', 'eval_batch_size'):
    if key not in c:
      raise UserError(f'config.{key} is required by the semi_supervised protocol')
  options.check_keys(c['labels'], LABEL_KEYS, 'labels')
  seeds = options.seeds_of(c['seeds'])
  role = learners.RoleOptions.from_section('model', c['model'], tokenizer=c.get('tokenizer'),
                                           input_kind=input_kind)
  run = options.run_settings(c)
  train_opts = learners.train_options(role.train, 'model.train', loss=role.loss, seed=0, run=run)
  if train_opts.ssl is None:
    raise UserError("model.train.ssl is required: an algorithm of w2s/ssl/, e.g. "
                    "ssl=dict(name='fixmatch') (or name='supervised' for the labelled-only baseline)")
  if role.ensemble_size > 1:
    raise UserError('model.ensemble is not supported by the semi_supervised protocol; train one model')
  mesh = c.get('mesh') or {}
  options.check_keys(mesh, ('num_devices', 'shape'), 'mesh')
  return dict(c=c, seeds=seeds, role=role, run=run,
              dataset=options.plugin('datasets', c['dataset'], 'dataset'),
              eval_batch_size=options.positive(c['eval_batch_size'], 'eval_batch_size'),
              mesh=sharding.make_mesh(options.positive(mesh.get('num_devices', 0),
                                                       'mesh.num_devices', allow_zero=True),
                                      mesh.get('shape')),
              root=os.path.abspath(c['shared_dir']) if c.get('shared_dir') else '')


def check(config):
  """(resolved options, dataset), with the labels split drawn once, the unlabelled batch
  checked against the devices and the model and its views traced on the dataset's inputs (what
  --dry_run runs)."""
  r = _resolve(config)
  dataset = options.build(r['dataset'], 'dataset')
  r = _resolve(config, dataset.input_kind)
  sharding.check_batch_size(r['eval_batch_size'], r['mesh'], 'eval_batch_size')
  parts = splits_lib.labelled_unlabelled(dataset, seed=r['seeds'][0], **r['c']['labels']).splits
  from w2s import ssl_step
  opts = learners.train_options(r['role'].train, 'model.train', loss=r['role'].loss, seed=0,
                                run=r['run'])
  ssl_step.check(opts, r['mesh'], len(parts['unlabelled']['id']))
  n_lab = len(parts['labelled']['id'])
  if n_lab < opts.batch_size:  # e.g. a long-tailed L, smaller than per_class * C
    raise UserError(f'the labelled set has {n_lab} rows, fewer than one batch of '
                    f'{opts.batch_size}; lower model.train.batch_size to at most {n_lab}')
  sharding.check_batch_size(opts.batch_size, r['mesh'])
  role_check.role(r['role'], opts, dataset)
  if ssl_step.projection(opts):  # SimMatch's projection head reads the model's pooled features
    role = r['role']
    ssl_step.check_module(opts, options.build(role.head if role.frozen else role.model, 'model',
                                              num_classes=dataset.num_classes))
  return r, dataset


def run(*, config, workdir: str) -> dict:
  r, dataset = check(config)
  C, root = dataset.num_classes, r['root'] or workdir
  learner = learners.make(r['role'], dataset=dataset, eval_batch_size=r['eval_batch_size'],
                          cache_dir=os.path.join(root, 'features'))
  labels = options.plain(r['c']['labels'])
  per_seed = []
  for seed in r['seeds']:
    parts = splits_lib.labelled_unlabelled(dataset, seed=seed, **labels).splits
    lab, unl, test = parts['labelled'], parts['unlabelled'], parts['test']
    stage = Stage(root, 'ssl', (r['dataset'].spec(), labels, options.plain(r['c'].get('tokenizer')),
                                seed), r['role'].spec(), seed=seed)
    opts = learners.train_options(r['role'].train, 'model.train', loss=r['role'].loss, seed=seed,
                                  run=r['run'])
    out = train_and_predict(stage, learner, lab, learners.soft_labels(lab, C), {'test': test},
                            opts=opts, mesh=r['mesh'], eval_batch_size=r['eval_batch_size'],
                            num_classes=C, unlabelled=unl)
    probs = join_by_id(test['id'], out['test_id'], out['test_probs'], 'ssl test')
    y = np.asarray(test['label'])
    last = stage.record().get('train_metrics', {})
    rec = {'seed': seed, 'n_labelled': len(lab['id']), 'n_unlabelled': len(unl['id']),
           'n_test': len(test['id']), 'labelled_per_class': _per_class(lab, C),
           'unlabelled_per_class': _per_class(unl, C),
           'acc': scores.accuracy(probs, y), 'ece': scores.ece(probs, y),
           'mask_rate': last.get('mask_rate'), 'pseudo_acc': _pseudo_acc(last),
           'stages': {'ssl': os.path.relpath(stage.dir, root)}}
    per_seed.append(rec)
    print(f'[ssl] seed {seed} {opts.ssl.name}: test accuracy {rec["acc"]:.4f} with '
          f'{rec["n_labelled"]} labels', flush=True)
  summary = {m: scores.summarize_seeds([p[m] if p[m] is not None else float('nan')
                                        for p in per_seed])._asdict()
             for m in ('acc', 'ece', 'mask_rate', 'pseudo_acc')}
  results = {'per_seed': per_seed, 'summary': summary, 'seeds': list(r['seeds']),
             'config': config.to_dict()}
  if jax.process_index() == 0:
    s = summary['acc']
    print(f'[ssl] {results_lib.smoke_note(results["config"])}{opts.ssl.name}, test accuracy % '
          f'({results_lib.interval_note(len(per_seed))}): {scores.fmt_summary(s, 100)}',
          flush=True)
  return results


def _per_class(examples: dict, num_classes: int) -> list[int]:
  """Rows of each class (known labels only: a dataset's own unlabelled split has none)."""
  y = np.asarray(examples['label'])
  if y.ndim == 2:  # soft rows: their argmax, all-zero rows unknown
    y = np.where(y.sum(-1) > 0, y.argmax(-1), -1)
  return np.bincount(y[y >= 0], minlength=num_classes).tolist()


def _pseudo_acc(last: dict):
  """The last logged pseudo-label accuracy, None if its batch had no row with a known label."""
  if last.get('pseudo_known', 1.0) == 0:
    return None
  return last.get('pseudo_acc')
