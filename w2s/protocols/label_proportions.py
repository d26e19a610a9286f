"""Learning from label proportions (LLP): bags whose class proportions are all that is known.

Per seed: the train split (a seeded random `bags.max_train` of it when capped) is cut into random
bags of `bags.size` = k examples (seeded per seed; the N mod k rows left over are dropped), and
every example's label is replaced by its bag's proportion alpha_b = mean of the members' one-hot
labels [C]; each example also carries int 'bag_id' and 'bag_size' columns. One model trains with
the `model` role's loss on those rows: `easyllp` (Busa-Fekete et al. 2023, instance level on a
debiased soft label), `proportion` (DLLP's bag-level KL(alpha_b || mean prediction); the trainer
then batches whole bags, `train.batch_groups`) or `xent` on alpha (the naive baseline: every
member is told its bag's proportion). Results: test accuracy and ECE with Student-t 95%
intervals over seeds (none below 3), plus the accuracy on the training examples' hidden labels (how much of the instance labels
the model recovers; never used to train or select).

The class prior p that easyllp needs is given exactly by the bags: the share of class c among
the training examples is sum_b k alpha_bc / N, the mean of the rows' labels. A loss with a
`prior` option left at None gets it (the paper's p), so no bag-level noise enters y~.

Bag size 1 is exactly supervised learning: every bag proportion is its example's one-hot label,
and all three losses are then cross-entropy on it (easyllp: y~ = 1 (alpha - p) + p = alpha;
proportion: KL(onehot || p) = CE since a one-hot label has zero entropy). The fully supervised
reference runs through this protocol at `bags.size=1` with `xent`, on the same examples, model and
schedule as every LLP point.

One stage per seed, keyed by its config (`stages.py`): a rerun reuses finished stages, and points
of a sweep that share a stage (same bags, model and loss) train it once.
"""
import os

import jax
import numpy as np

from w2s import options, scores, sharding, train
from w2s.data import base
from w2s.data import splits as splits_lib
from w2s.errors import UserError
from w2s.protocols import learners, results as results_lib, role_check
from w2s.protocols.stages import Stage, join_by_id
from w2s.protocols.weak_to_strong import train_and_predict

TOP_KEYS = ('protocol', 'dataset', 'bags', 'tokenizer', 'seeds', 'model', 'eval_batch_size',
            'log_every', 'checkpoint_every', 'keep_checkpoints', 'mesh', 'shared_dir', 'smoke')
BAG_KEYS = ('size', 'max_train', 'max_test')
BAG_SALT = 0xBA65  # bags are drawn independently of the max_train subset (same seed)


def make_bags(train_raw: dict, size: int, seed: int, num_classes: int) -> tuple[dict, dict]:
  """Random bags of k = `size` rows: (the n = N // k * k rows kept, sorted by id; their columns
  {'label': alpha of the row's bag [n, C] float32, 'bag_id' [n] int32, 'bag_size' [n] int32}).
  Bags are consecutive runs of k rows in hash(id, seed) order; the last N mod k are left out."""
  ids = np.asarray(train_raw['id'])
  order = np.lexsort((ids, splits_lib.stable_hash(ids, seed ^ BAG_SALT)))
  keep = order[:len(ids) // size * size]
  bag_of = np.empty(len(ids), np.int64)
  bag_of[keep] = np.arange(len(keep)) // size
  rows = np.sort(keep)                                      # back in id order
  bag_id = bag_of[rows].astype(np.int32)
  onehot = np.eye(num_classes, dtype=np.float64)[np.asarray(train_raw['label'])[rows]]
  counts = np.zeros((len(keep) // size, num_classes))
  np.add.at(counts, bag_id, onehot)
  alpha = (counts / size).astype(np.float32)
  return base.take(train_raw, rows), {'label': alpha[bag_id], 'bag_id': bag_id,
                'bag_size': np.full(len(rows), size, np.int32)}


def _resolve(config, input_kind=None):
  c = options.plain(config)
  options.check_keys(c, TOP_KEYS, 'config')
  for key in ('dataset', 'bags', 'seeds', 'model', 'eval_batch_size'):
    if key not in c:
      raise UserError(f'config.{key} is required by the label_proportions protocol')
  bags = c['bags']
  options.check_keys(bags, BAG_KEYS, 'bags')
  if 'size' not in bags:
    raise UserError('bags.size is required: examples per bag (1 = fully supervised)')
  size = options.positive(bags['size'], 'bags.size')
  caps = {k: None if bags.get(k) is None else options.positive(bags[k], f'bags.{k}')
          for k in ('max_train', 'max_test')}
  role = learners.RoleOptions.from_section('model', c['model'], tokenizer=c.get('tokenizer'),
                                           input_kind=input_kind)
  if role.ensemble_size > 1:
    raise UserError('model.ensemble is not supported by the label_proportions protocol')
  run = options.run_settings(c)
  mesh = c.get('mesh') or {}
  options.check_keys(mesh, ('num_devices', 'shape'), 'mesh')
  return dict(c=c, seeds=options.seeds_of(c['seeds']), role=role, run=run, size=size, **caps,
              dataset=options.plugin('datasets', c['dataset'], 'dataset'),
              eval_batch_size=options.positive(c['eval_batch_size'], 'eval_batch_size'),
              mesh=sharding.make_mesh(options.positive(mesh.get('num_devices', 0),
                                                       'mesh.num_devices', allow_zero=True),
                                      mesh.get('shape')),
              root=os.path.abspath(c['shared_dir']) if c.get('shared_dir') else '')


def _seed_data(r, dataset, seed: int):
  """(kept train rows, their LLP columns, test rows, rows left out of the bags) of one seed."""
  C = dataset.num_classes
  train_raw = splits_lib.select(dataset.split('train'), seed=seed, num_classes=C,
                                max_examples=r['max_train'])
  if len(train_raw['id']) < r['size']:
    raise UserError(f'bags.size={r["size"]} is larger than the {len(train_raw["id"])} training '
                    'examples; lower bags.size or raise bags.max_train')
  kept, cols = make_bags(train_raw, r['size'], seed, C)
  test = splits_lib.select(dataset.split('test'), seed=seed, num_classes=C,
                           max_examples=r['max_test'])
  return kept, cols, test, len(train_raw['id']) - len(kept['id'])


def _train_options(r, seed: int, prior) -> options.TrainOptions:
  """The stage's fit options; a loss with a `prior` option left unset gets the bags' prior."""
  loss = r['role'].loss
  names, _ = options.accepted_kwargs(loss.entry())
  if 'prior' in names and loss.hparams.get('prior') is None:
    loss = options.Plugin(loss.kind, loss.name,
                          {**loss.hparams, 'prior': [round(float(p), 8) for p in prior]})
  return learners.train_options(r['role'].train, 'model.train', loss=loss, seed=seed, run=r['run'])


def check(config):
  """(resolved options, dataset): the bags of the first seed drawn, the loss traced with the bag
  columns and the batch checked against the bags and devices (what --dry_run runs)."""
  r = _resolve(config)
  dataset = options.build(r['dataset'], 'dataset')
  r = _resolve(config, dataset.input_kind)
  sharding.check_batch_size(r['eval_batch_size'], r['mesh'], 'eval_batch_size')
  _, cols, _, _ = _seed_data(r, dataset, r['seeds'][0])
  opts = _train_options(r, 0, cols['label'].astype(np.float64).mean(0))
  sharding.check_batch_size(opts.batch_size, r['mesh'])
  extras = {k: jax.ShapeDtypeStruct((8,), np.int32) for k in ('bag_id', 'bag_size')}
  train.check_loss(opts.loss, num_classes=dataset.num_classes, where='model.loss',
                   batch_extras=extras)
  train.batch_groups(cols, opts, 'model.train')
  role_check.role(r['role'], opts, dataset)  # the model and augmentations on the inputs' shapes
  if len(cols['bag_id']) < opts.batch_size:
    raise UserError(f'model.train.batch_size={opts.batch_size} is more than the '
                    f'{len(cols["bag_id"])} training examples in bags; lower it')
  return r, dataset


def run(*, config, workdir: str) -> dict:
  r, dataset = check(config)
  C, root = dataset.num_classes, r['root'] or workdir
  learner = learners.make(r['role'], dataset=dataset, eval_batch_size=r['eval_batch_size'],
                          cache_dir=os.path.join(root, 'features'))
  bags = {'size': r['size'], 'max_train': r['max_train'], 'max_test': r['max_test']}
  per_seed = []
  for seed in r['seeds']:
    kept, cols, test, dropped = _seed_data(r, dataset, seed)
    opts = _train_options(r, seed, cols['label'].astype(np.float64).mean(0))
    stage = Stage(root, 'llp', (r['dataset'].spec(), bags, options.plain(r['c'].get('tokenizer')),
                                seed), r['role'].spec(), opts.loss.spec(), seed=seed)
    extras = {k: cols[k] for k in ('bag_id', 'bag_size')}
    out = train_and_predict(stage, learner, kept, cols['label'], {'test': test, 'train': kept},
                            opts=opts, mesh=r['mesh'], eval_batch_size=r['eval_batch_size'],
                            num_classes=C, extras=extras)
    probs = join_by_id(test['id'], out['test_id'], out['test_probs'], 'llp test')
    train_probs = join_by_id(kept['id'], out['train_id'], out['train_probs'], 'llp train')
    y = np.asarray(test['label'])
    rec = {'seed': seed, 'bag_size': r['size'], 'n_train': len(kept['id']),
           'n_bags': len(kept['id']) // r['size'], 'n_dropped': dropped,
           'n_test': len(test['id']),
           'acc': scores.accuracy(probs, y), 'ece': scores.ece(probs, y),
           'train_acc': scores.accuracy(train_probs, np.asarray(kept['label'])),
           'final_train_loss': stage.record().get('train_metrics', {}).get('loss'),
           'stages': {'llp': os.path.relpath(stage.dir, root)}}
    per_seed.append(rec)
    print(f'[llp] seed {seed} bags of {r["size"]} {opts.loss.name}: test accuracy '
          f'{rec["acc"]:.4f}, hidden train labels {rec["train_acc"]:.4f}', flush=True)
  summary = {m: scores.summarize_seeds([p[m] for p in per_seed])._asdict()
             for m in ('acc', 'ece', 'train_acc')}
  results = {'per_seed': per_seed, 'summary': summary, 'seeds': list(r['seeds']),
             'config': config.to_dict()}
  if jax.process_index() == 0:
    s = summary['acc']
    print(f'[llp] {results_lib.smoke_note(results["config"])}bags of {r["size"]}, '
          f'{r["role"].loss.name}, test accuracy % ({results_lib.interval_note(len(per_seed))}): '
          f'{scores.fmt_summary(s, 100)}', flush=True)
  return results
