"""Plain supervised training on ground truth: train on `train_split`, evaluate on `eval_split`.

The simplest protocol, and the building block the weak-to-strong stages reuse. The config is one
flat section (configs/supervised.py); every key is checked, and a workdir's checkpoints are resumed
only under the config that produced them.

`streaming=True` trains from rows read off disk a batch at a time (`w2s.data.streaming.TfdsSource`
over the dataset's prepared TFDS builder) instead of materialising the training split; batches,
and so the trained parameters, are bit-identical to the in-memory run, which is why the key is
not part of the checkpoint fingerprint (a run may resume across it). It works for datasets whose
plug-in module defines a `stream(**hparams) -> streaming.StoredSplits` hook (the catalog datasets
built by `catalog.labelled_dataset`: mnist, cifar10, imdb_reviews, sst2, yelp_polarity_reviews)
or a `w2s.data.packaged.PackagedBuilder` (digits, mnist_5k, rotten_tomatoes, whose stored records
are their Examples): either way no plug-in code runs per row. The eval split is read through the
same kind of source and held in memory (`train.predict` takes a dict).

`label_noise=dict(name='symmetric', rate=0.4, seed=0)` corrupts the training split's labels
(never the eval split's) with a `w2s.label_noise` injector, deterministic by example id; the
results record the realised noise rate and transition matrix under 'label_noise'.
"""
import inspect
import sys

import numpy as np

from w2s import label_noise, options, registry, sharding, train
from w2s.data import base
from w2s.data import featurize as featurize_lib
from w2s.data import packaged
from w2s.data import pipeline
from w2s.data import streaming
from w2s.data import tfds_io
from w2s.errors import UserError

KEYS = ('protocol', 'seed', 'dataset', 'model', 'tokenizer', 'input', 'label_noise', 'loss',
        'eval_batch_size',
        'mesh', 'streaming', 'smoke', *options.TRAIN_DEFAULTS, *options.RUN_ONLY)


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
  out['streaming'] = c.get('streaming', False)
  if not isinstance(out['streaming'], bool):
    raise UserError(f'config.streaming={out["streaming"]!r} must be True or False')
  out['label_noise'] = (options.plugin('label_noise', c['label_noise'], 'label_noise')
                        if c.get('label_noise') else None)
  if out['streaming'] and out['label_noise']:
    raise UserError('config.label_noise works on the in-memory training split; set '
                    'streaming=False to inject label noise')
  if out['streaming']:  # metadata only: the splits are read when training
    out['stored'] = stored_splits(out['dataset'])
    out['data'] = out['stored'].dataset
  else:
    out['data'] = options.build(out['dataset'], 'dataset')
  if out['data'].input_kind == 'text':
    from w2s.models import checkpoint_fit  # a pretrained checkpoint vs its tokenizer, size, length
    checkpoint_fit.check_role('model', out['model'], out['tokenizer'])
  train.check_loss(opts.loss, num_classes=out['data'].num_classes, where='loss')
  if out['label_noise']:  # its options checked on a few training rows (--dry_run)
    data = out['data']
    rows = {k: v[:8] for k, v in data.split('train' if 'train' in data.splits
                                             else next(iter(data.splits))).items()}
    label_noise.apply(out['label_noise'], rows, num_classes=data.num_classes,
                      input_kind=data.input_kind)
  if not out['streaming']:
    _trace_model(out, opts)
  return out


def _trace_model(out: dict, opts) -> None:
  """The first training row through the view and featurization, then the model and the train
  augmentations traced on its shapes (`jax.eval_shape`): a view or model that cannot take this
  dataset's inputs fails in --dry_run, not when the step first compiles."""
  import jax
  from w2s.protocols import learners, role_check
  data = out['data']
  feats = featurize(data, learners._first_rows(data, 1), out['tokenizer'], out['view'])
  spec = {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype) for k, v in feats.items()
          if k not in ('id', 'label')}
  batch = {**spec, 'label': jax.ShapeDtypeStruct((1, data.num_classes), np.float32)}
  role_check.augmentations(opts, batch, 'config')
  module = options.build(out['model'], 'model', num_classes=data.num_classes)
  try:
    learners._trace(module, spec, data.num_classes, 'model')
  except UserError as e:
    raise e if str(e).startswith('model') else UserError(f'model: {e}') from e


def _packaged_builder(module) -> type | None:
  """The `PackagedBuilder` subclass a dataset plug-in module defines, if any."""
  found = [v for v in vars(module).values() if isinstance(v, type)
           and issubclass(v, packaged.PackagedBuilder) and v.__module__ == module.__name__]
  return found[0] if len(found) == 1 else None


def _stream_hook(module):
  """The `stream(**hparams) -> streaming.StoredSplits` a dataset plug-in module defines, if any."""
  hook = vars(module).get('stream')
  return hook if callable(hook) else None


def streamable() -> list[str]:
  """Names of the shipped datasets that `streaming=True` can read."""
  modules = {n: sys.modules[registry.get('datasets', n).__module__]
             for n in registry.known('datasets')}
  return [n for n, m in modules.items() if _stream_hook(m) or _packaged_builder(m)]


def stored_splits(p: options.Plugin) -> streaming.StoredSplits:
  """Where the splits of a streamable dataset plug-in lie (prepared builder, metadata, names)."""
  module = sys.modules[p.entry().__module__]
  hook, cls = _stream_hook(module), _packaged_builder(module)
  if hook is None and cls is None:
    raise UserError(f'config.streaming=True: dataset {p.name!r} cannot stream; these can: '
                    f'{", ".join(streamable())}; set streaming=False')
  accepted = set(inspect.signature(hook).parameters) if hook else {'data_dir'}
  if set(p.hparams) - accepted:
    raise UserError(f'config.streaming=True reads the stored records as they are: dataset '
                    f'{p.name!r} options {sorted(set(p.hparams) - accepted)} are not applied; '
                    'remove them or set streaming=False')
  if hook is not None:
    return hook(**p.hparams)
  builder = tfds_io.prepare(cls, p.hparams.get('data_dir'))
  features = builder.info.features
  kinds = [k for k, field in base.INPUT_FIELDS.items() if field in features]
  if len(kinds) != 1 or 'label' not in features:
    raise UserError(f'{builder.name}: streaming needs one input feature of '
                    f'{sorted(base.INPUT_FIELDS.values())} and a "label"; it has '
                    f'{sorted(features)}')
  label = features['label']
  dataset = base.Dataset(p.name, label.num_classes, list(label.names), kinds[0], {})
  return streaming.StoredSplits(builder, dataset, {s: s for s in builder.info.splits})


def featurizer(dataset, tokenizer, view=None):
  """`raw Examples -> batch-ready numeric fields with soft labels [n, C]`, row-wise (a raw split
  at once, or a streamed batch at a time give the same rows)."""
  from w2s.protocols import learners
  kwargs = {}
  if dataset.input_kind == 'text':
    if not tokenizer:
      raise UserError(f'dataset {dataset.name!r} is text but the config has no tokenizer '
                      "section; add tokenizer=dict(tokenizer='minilm', max_length=128)")
    kwargs = learners.tokenizer_kwargs(tokenizer)

  def transform(examples):
    if view is not None:
      examples = options.build(view, 'input', raw=examples, input_kind=dataset.input_kind)
    feats = featurize_lib.featurize(dataset, examples, **kwargs)
    return pipeline.one_hot_labels(feats, dataset.num_classes)
  return transform


def featurize(dataset, examples, tokenizer, view=None) -> dict:
  """Raw split -> batch-ready numeric fields with soft labels [N, C]."""
  return featurizer(dataset, tokenizer, view)(examples)


def noisy_train(r: dict, raw: dict) -> tuple[dict, dict | None]:
  """(the raw training split with `r['label_noise']` applied, its record; or raw, None)."""
  if not r.get('label_noise'):
    return raw, None
  return label_noise.apply(r['label_noise'], raw, num_classes=r['data'].num_classes,
                           input_kind=r['data'].input_kind)


def splits(r: dict, train_split: str, eval_split: str):
  """(train examples: a dict, or a `TfdsSource` when streaming; eval examples: a dict; the
  label-noise record or None). Label noise touches the training split only."""
  dataset = r['data']
  if not r['streaming']:
    train_raw, record = noisy_train(r, dataset.split(train_split))
    return (*(featurize(dataset, raw, r['tokenizer'], r['view'])
              for raw in (train_raw, dataset.split(eval_split))), record)
  transform = featurizer(dataset, r['tokenizer'], r['view'])
  train_src, eval_src = (r['stored'].source(s, transform=transform)
                         for s in (train_split, eval_split))
  return train_src, streaming.read_all(eval_src), None


def run(*, config, workdir: str, train_split: str = 'train', eval_split: str = 'test') -> dict:
  r = check(config)
  opts, dataset = r['opts'], r['data']
  mesh = sharding.make_mesh(r['num_devices'], r['mesh_shape'])
  module = options.build(r['model'], 'model', num_classes=dataset.num_classes)
  train_ex, eval_ex, noise = splits(r, train_split, eval_split)
  fingerprint = {'dataset': r['dataset'].spec(), 'model': r['model'].spec(),
                 'tokenizer': options.plain(r['tokenizer']) if dataset.input_kind == 'text'
                 else None, 'input': r['view'].spec() if r['view'] else None}
  if noise:  # only when set, so the workdirs of noiseless runs keep their fingerprint
    fingerprint['label_noise'] = r['label_noise'].spec()
  state, last = train.fit(module, train_ex, cfg=opts, workdir=workdir, mesh=mesh,
                          name=f'supervised seed{opts.seed}', fingerprint=fingerprint)
  pred = train.predict(module, state.params, eval_ex, batch_size=r['eval_batch_size'],
                       mesh=mesh, name='eval')
  by_id = dict(zip(eval_ex['id'].tolist(), np.argmax(eval_ex['label'], -1).tolist()))
  truth = np.array([by_id[i] for i in pred['id'].tolist()])
  results = {'accuracy': float(np.mean(np.argmax(pred['logits'], -1) == truth)),
             'num_eval': int(len(pred['id'])), 'steps': int(state.step),
             'final_train_loss': last.get('loss')}
  if noise:
    results['label_noise'] = noise
    print(f'[supervised] label noise {noise["name"]}: {noise["num_flipped"]} of '
          f'{noise["num_train"]} training labels flipped ({noise["realised_rate"]:.3f})',
          flush=True)
  print(f'[supervised] {dataset.name}: test accuracy {results["accuracy"]:.4f} on '
        f'{results["num_eval"]} examples', flush=True)
  return results
