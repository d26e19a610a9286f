"""Plain supervised training on ground truth: train on `train_split`, evaluate on `eval_split`.

The simplest protocol, and the building block the weak-to-strong stages reuse. The config is one
flat section (configs/supervised.py); every key is checked, and a workdir's checkpoints are resumed
only under the config that produced them.
"""
import numpy as np

from w2s import options, sharding, train
from w2s.data import featurize as featurize_lib
from w2s.data import pipeline
from w2s.errors import UserError

KEYS = ('protocol', 'seed', 'dataset', 'model', 'tokenizer', 'input', 'loss', 'eval_batch_size',
        'mesh', *options.TRAIN_DEFAULTS, *options.RUN_ONLY)


def check(config):
  """Train options, dataset, model, tokenizer and view resolved and checked; the loss traced once
  (what `--dry_run` runs; nothing is trained)."""
  c = options.plain(config)
  options.check_keys(c, KEYS, 'config')
  for key in ('dataset', 'model', 'loss', 'optimizer', 'batch_size', 'eval_batch_size'):
    if key not in c:
      raise UserError(f'config.{key} is required by the supervised protocol')
  if c.get('eval_every') or c.get('select', 'last') != 'last' or c.get('patience'):
    raise UserError('the supervised protocol has no held-out slice: eval_every, select and '
                    'patience are for weak_to_strong stages (splits.val_fraction)')
  opts = options.TrainOptions.coerce(c, 'config')
  mesh = c.get('mesh') or {}
  options.check_keys(mesh, ('num_devices', 'shape'), 'mesh')
  if c.get('tokenizer') is not None:
    options.check_keys(c['tokenizer'], ('tokenizer', 'max_length', 'truncation'), 'tokenizer')
  out = dict(opts=opts, dataset=options.plugin('datasets', c['dataset'], 'dataset'),
              model=options.plugin('models', c['model'], 'model'), tokenizer=c.get('tokenizer'),
              view=options.plugin('views', c['input'], 'input') if c.get('input') else None,
              eval_batch_size=options.positive(c['eval_batch_size'], 'eval_batch_size'),
              num_devices=options.positive(mesh.get('num_devices', 0), 'mesh.num_devices',
                                           allow_zero=True), mesh_shape=mesh.get('shape'))
  sharding.check_batch_size(out['eval_batch_size'],
                            sharding.make_mesh(out['num_devices'], out['mesh_shape']),
                            'eval_batch_size')
  out['data'] = options.build(out['dataset'], 'dataset')
  train.check_loss(opts.loss, num_classes=out['data'].num_classes, where='loss')
  return out


def featurize(dataset, examples, tokenizer, view=None) -> dict:
  """Raw split -> batch-ready numeric fields with soft labels [N, C]."""
  from w2s.protocols import learners
  if view is not None:
    examples = options.build(view, 'input', raw=examples, input_kind=dataset.input_kind)
  kwargs = {}
  if dataset.input_kind == 'text':
    if not tokenizer:
      raise UserError(f'dataset {dataset.name!r} is text but the config has no tokenizer '
                      "section; add tokenizer=dict(tokenizer='minilm', max_length=128)")
    kwargs = learners.tokenizer_kwargs(tokenizer)
  feats = featurize_lib.featurize(dataset, examples, **kwargs)
  return pipeline.one_hot_labels(feats, dataset.num_classes)


def run(*, config, workdir: str, train_split: str = 'train', eval_split: str = 'test') -> dict:
  r = check(config)
  opts, dataset = r['opts'], r['data']
  mesh = sharding.make_mesh(r['num_devices'], r['mesh_shape'])
  module = options.build(r['model'], 'model', num_classes=dataset.num_classes)
  train_ex = featurize(dataset, dataset.split(train_split), r['tokenizer'], r['view'])
  eval_ex = featurize(dataset, dataset.split(eval_split), r['tokenizer'], r['view'])
  fingerprint = {'dataset': r['dataset'].spec(), 'model': r['model'].spec(),
                 'tokenizer': options.plain(r['tokenizer']) if dataset.input_kind == 'text'
                 else None, 'input': r['view'].spec() if r['view'] else None}
  state, last = train.fit(module, train_ex, cfg=opts, workdir=workdir, mesh=mesh,
                          name=f'supervised seed{opts.seed}', fingerprint=fingerprint)
  pred = train.predict(module, state.params, eval_ex, batch_size=r['eval_batch_size'],
                       mesh=mesh, name='eval')
  by_id = dict(zip(eval_ex['id'].tolist(), np.argmax(eval_ex['label'], -1).tolist()))
  truth = np.array([by_id[i] for i in pred['id'].tolist()])
  results = {'accuracy': float(np.mean(np.argmax(pred['logits'], -1) == truth)),
             'num_eval': int(len(pred['id'])), 'steps': int(state.step),
             'final_train_loss': last.get('loss')}
  print(f'[supervised] {dataset.name}: test accuracy {results["accuracy"]:.4f} on '
        f'{results["num_eval"]} examples', flush=True)
  return results
