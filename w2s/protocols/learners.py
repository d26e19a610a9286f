"""A learner: a model plus the inputs it reads, for one weak-to-strong role (weak, strong, ...).

A role's config section is resolved once into `RoleOptions` (every key checked, plug-ins
resolved against their entry points), and the learner is built from those. Two kinds:

* fine-tuned: `dict(model=dict(name=..., ...), loss=..., train=dict(...))`: the whole model trains
  on tokens (text) or pixels/vectors, from scratch or from `pretrained` weights;
* frozen backbone (the release's `linear_probe`): `dict(model=..., frozen=True, head=dict(name='mlp',
  size='linear'), train=...)`: backbone features are computed once per example, only for the
  examples a stage reads (by id), and cached on disk, by default in the user feature cache that
  every workdir shares (`w2s.models.feature_store`); only the head trains, on 'x' = features.

Optional keys: `ensemble=dict(size=K, bagging=False)` (K members in one vmapped step; with
`specialists=[[classes of member 0], ...]` member k trains only on the rows labelled with one of
its classes and predicts only those (Liu & Alahi 2024's co-supervising specialists, for the `csl`
student loss; the subsets must cover every class and may overlap), `w2s.ensemble`),
`tokenizer=dict(tokenizer=..., max_length=..., truncation=...)` (this role's own),
`input=dict(name=<view>, ...)` (what this role sees of each example; `w2s/views/`) and, with
frozen=True, `feature_batch_size=B` (rows per forward of the feature extraction; by default the
backend's choice, `w2s.models.features.default_batch_size`: a small batch on a CPU, the config's
`eval_batch_size` on a GPU / TPU; it changes no feature beyond float rounding, so it is in
neither the stage key nor the feature cache's).
"""
import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from w2s import options
from w2s.data import base
from w2s.data import featurize as featurize_lib
from w2s.data import pipeline
from w2s.errors import UserError
from w2s.protocols import stages as stages_lib

ROLE_KEYS = ('model', 'loss', 'train', 'frozen', 'head', 'ensemble', 'tokenizer', 'input',
             'feature_batch_size')
TOKENIZER_KEYS = ('tokenizer', 'max_length', 'truncation')
ENSEMBLE_KEYS = ('size', 'bagging', 'specialists')


@dataclasses.dataclass(frozen=True)
class RoleOptions:
  """One role's section, checked: plug-ins resolved, keys known, values sane."""
  role: str
  model: options.Plugin
  loss: options.Plugin | None
  train: Mapping[str, Any]            # the raw `train` section (checked by TrainOptions)
  frozen: bool = False
  head: options.Plugin | None = None
  ensemble_size: int = 1
  bagging: bool = False
  specialists: tuple[tuple[int, ...], ...] | None = None  # member k's classes
  tokenizer: Mapping[str, Any] | None = None
  view: options.Plugin | None = None
  feature_batch_size: int | None = None   # frozen only; None: the backend's default

  @classmethod
  def from_section(cls, role: str, section, *, tokenizer=None, needs_loss: bool = True,
                   input_kind: str | None = 'text') -> 'RoleOptions':
    """`input_kind` None: not known yet (the text-needs-a-tokenizer check is skipped)."""
    s = options.plain(section)
    if not isinstance(s, Mapping):
      raise UserError(f'{role} must be a section dict(model=..., loss=..., train=...)')
    options.check_keys(s, ROLE_KEYS, role)
    for key in ('model', 'train') + (('loss',) if needs_loss else ()):
      if key not in s:
        raise UserError(f'{role}.{key} is required')
    frozen = s.get('frozen', False)
    if not isinstance(frozen, bool):
      raise UserError(f'{role}.frozen={frozen!r} must be True or False')
    for key in ('head', 'feature_batch_size'):
      if key in s and not frozen:
        raise UserError(f'{role}.{key} is only read with frozen=True (a linear probe); remove it '
                        'or set frozen=True')
    feature_batch = s.get('feature_batch_size')
    if feature_batch is not None:
      feature_batch = options.positive(feature_batch, f'{role}.feature_batch_size')
    ens = s.get('ensemble') or {}
    options.check_keys(ens, ENSEMBLE_KEYS, f'{role}.ensemble')
    size = options.positive(ens.get('size', 1), f'{role}.ensemble.size')
    tok = s.get('tokenizer') or tokenizer
    if tok is not None:
      options.check_keys(tok, TOKENIZER_KEYS, f'{role}.tokenizer' if s.get('tokenizer')
                         else 'tokenizer')
    if input_kind == 'text' and not tok:
      raise UserError(f'{role} reads text but the config has no tokenizer section; add '
                      "tokenizer=dict(tokenizer='minilm', max_length=128)")
    view = s.get('input')
    model = options.plugin('models', s['model'], f'{role}.model')
    if input_kind == 'text':  # a pretrained checkpoint vs its tokenizer, size and length
      from w2s.models import checkpoint_fit
      checkpoint_fit.check_role(f'{role}.model', model, tok, f'{role}.tokenizer'
                                if s.get('tokenizer') else 'tokenizer')
    return cls(
        role=role, model=model,
        loss=options.plugin('losses', s['loss'], f'{role}.loss') if 'loss' in s else None,
        train=s['train'], frozen=frozen,
        head=options.plugin('models', s.get('head', dict(name='mlp', size='linear')),
                            f'{role}.head') if frozen else None,
        ensemble_size=size, bagging=bool(ens.get('bagging', False)),
        specialists=_specialists(ens.get('specialists'), size, s['train'], role), tokenizer=tok,
        view=options.plugin('views', view, f'{role}.input') if view else None,
        feature_batch_size=feature_batch)

  def spec(self) -> dict:
    """The plain section (stage keys hash this; `feature_batch_size` changes no result and is
    left out)."""
    out = {'model': self.model.spec(), 'train': options.plain(self.train), 'frozen': self.frozen}
    if self.loss is not None:
      out['loss'] = self.loss.spec()
    if self.head is not None:
      out['head'] = self.head.spec()
    if self.ensemble_size > 1:
      out['ensemble'] = {'size': self.ensemble_size, 'bagging': self.bagging}
      if self.specialists is not None:
        out['ensemble']['specialists'] = [list(c) for c in self.specialists]
    if self.tokenizer is not None:
      out['tokenizer'] = options.plain(self.tokenizer)
    if self.view is not None:
      out['input'] = self.view.spec()
    return out


@dataclasses.dataclass
class Learner:
  name: str
  module: Any                 # what trains (the full model, or the head over cached features)
  init_params: Any            # params merged over the init, or None (`fit` reads a
                              # `pretrained` checkpoint itself)
  opts: RoleOptions
  _inputs: Callable           # raw examples -> numeric input fields

  @property
  def spec(self) -> dict:
    return self.opts.spec()

  def examples(self, raw: dict, labels: np.ndarray, extras: dict | None = None) -> dict:
    """Batch-ready fields for raw examples with soft labels [N, C] (+ per-example `extras`, such
    as an ensemble teacher's 'member_probs' [N, K, C], aligned with `raw`). Specialists add
    'class_mask' [N, K, C] (1 where member k predicts class c), which `w2s.ensemble` reads."""
    out = {**self._inputs(raw), **(extras or {}), 'id': raw['id'],
           'label': labels.astype(np.float32)}
    if self.opts.specialists is not None and self.opts.ensemble_size > 1:
      masks = class_masks(self.opts.specialists, labels.shape[-1], self.name)
      out['class_mask'] = np.broadcast_to(masks, (len(labels),) + masks.shape).copy()
    return out


def _specialists(value, size: int, train_section, role: str):
  """`ensemble.specialists` checked for shape (classes against C in `class_masks`)."""
  if value is None:
    return None
  where = f'{role}.ensemble.specialists'
  value = options.plain(value)
  ok = (isinstance(value, (list, tuple)) and len(value) == size and size > 1
        and all(isinstance(c, (list, tuple)) and c and all(
            isinstance(x, int) and not isinstance(x, bool) for x in c) for c in value))
  if not ok:
    raise UserError(f'{where} must list size={size} (> 1) non-empty lists of class ids, one per '
                    f'member, e.g. [[0, 1, 2], [3, 4]]; got {value!r}')
  if any(len(set(c)) != len(c) for c in value):
    raise UserError(f'{where}: a member lists a class twice ({value!r}); list each class once')
  if (options.plain(train_section) or {}).get('eval_every'):
    raise UserError(f'{where}: held-out selection would score each specialist on classes it '
                    f'never predicts; set {role}.train.eval_every=0')
  return tuple(tuple(c) for c in value)


def class_masks(specialists, num_classes: int, where: str = 'ensemble') -> np.ndarray:
  """float32 [K, C]: 1 where member k predicts class c; every class in [0, C) and covered."""
  masks = np.zeros((len(specialists), num_classes), np.float32)
  for k, classes in enumerate(specialists):
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
      raise UserError(f'{where}.ensemble.specialists: member {k} lists classes {bad} outside '
                      f'[0, {num_classes}); use class ids of this dataset')
    masks[k, list(classes)] = 1.0
  missing = np.flatnonzero(masks.sum(0) == 0).tolist()
  if missing:
    raise UserError(f'{where}.ensemble.specialists cover no member for classes {missing}; every '
                    'class needs a specialist')
  return masks


def tokenizer_kwargs(tokenizer: dict) -> dict:
  """Config `dict(tokenizer='minilm' | path, max_length=L)` -> featurize kwargs with a real path."""
  from w2s.models import hf_import
  tok = dict(tokenizer)
  if isinstance(tok.get('tokenizer'), str):
    tok['tokenizer'] = hf_import.resolve(tok['tokenizer'])
  return tok


def _inputs_fn(dataset, opts: RoleOptions) -> Callable:
  """raw -> numeric fields, through the role's view (if any) and featurization."""
  kwargs = tokenizer_kwargs(opts.tokenizer) if dataset.input_kind == 'text' else {}

  def inputs(raw):
    if opts.view is not None:
      raw = options.build(opts.view, f'{opts.role}.input', raw=raw, input_kind=dataset.input_kind)
    feats = featurize_lib.featurize(dataset, raw, **kwargs)
    return {k: v for k, v in feats.items() if k not in ('id', 'label')}
  return inputs


def make(opts: RoleOptions, *, dataset, eval_batch_size: int, cache_dir: str | None) -> Learner:
  """Builds the learner of one role and traces its model once on abstract inputs, so a model
  that cannot run on this data fails here, before any stage trains.

  `cache_dir`: the run's own feature directory (`<root>/features`); a frozen backbone's features
  go to the user cache instead unless `W2S_CACHE_DIR=` (empty) says workdir-local
  (`w2s.models.feature_store.cache_dirs`)."""
  C = dataset.num_classes
  if opts.specialists is not None:
    class_masks(opts.specialists, C, opts.role)
  model = options.build(opts.model, f'{opts.role}.model', num_classes=C)
  tokens = _inputs_fn(dataset, opts)
  sample = {k: v[:1] for k, v in tokens(_first_rows(dataset)).items()}
  if not opts.frozen:
    from w2s.models import hf_import
    if getattr(model, 'pretrained', None):
      # names and shapes checked from the files' headers; `fit` reads the tensors later, straight
      # into their shards, and only if the stage has not run
      hf_import.pretrained_params(model, place=hf_import.check_only)
    _trace(model, sample, C, opts.role)
    return Learner(opts.role, model, None, opts, tokens)

  from w2s.models import features as features_lib
  from w2s.models import hf_import
  head = options.build(opts.head, f'{opts.role}.head', num_classes=C)
  backbone_params = hf_import.init_params(model, jax.random.PRNGKey(0), sample)
  feats = _abstract(lambda p, b: model.apply({'params': p}, b, method='features'),
                    f'{opts.role}.model features', backbone_params, sample)
  _trace(head, {'x': jax.ShapeDtypeStruct(feats.shape, jnp.float32)}, C, f'{opts.role}.head')
  key = dict(features_lib.model_key(model, backbone_params), dataset=dataset.name, split='all',
             inputs=stages_lib.key(opts.tokenizer, opts.view.spec() if opts.view else None))
  store_dir, also_read = features_lib.cache_dirs(cache_dir)
  batch_size = opts.feature_batch_size or features_lib.default_batch_size(
      accelerator=eval_batch_size)
  forward = features_lib.default_forward(model)  # one jit for every call: each shape compiles once
  desc = f'{opts.role} features {dataset.name}'

  def frozen_inputs(raw):
    # One cache per dataset, by example id: an example's features do not depend on the split or
    # seed it falls in, so every stage and seed reuses them, and only the rows a stage reads are
    # ever extracted (runlocal's few hundred, not the whole dataset).
    def compute(rows):  # rows of `raw` the cache lacks
      inputs = tokens({k: v[rows] for k, v in raw.items()})
      return features_lib.extract(model, backbone_params, inputs, batch_size=batch_size,
                                  forward=forward, desc=desc)
    return {'x': features_lib.cached(raw['id'], cache_dir=store_dir, key=key, compute=compute,
                                     also_read=also_read, desc=desc)}

  return Learner(opts.role, head, None, opts, frozen_inputs)


def _abstract(fn, where: str, *args):
  try:
    return jax.eval_shape(fn, *args)
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # any failure to trace is a config fault
    raise UserError(f'{where} cannot run on this dataset\'s inputs '
                    f'({type(e).__name__}: {" ".join(str(e).split())[:200]}); check the model '
                    'section against the dataset') from e


def _trace(module, sample, num_classes: int, where: str) -> None:
  """init + apply under `jax.eval_shape`: logits must be [B, num_classes]."""
  rngs = {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}
  variables = _abstract(lambda b: module.init(rngs, b, train=False), f'{where}', sample)
  logits = _abstract(lambda v, b: module.apply(v, b, train=False), f'{where}', variables, sample)
  n = jax.tree.leaves(sample)[0].shape[0]
  if tuple(logits.shape) != (n, num_classes):
    raise UserError(f'{where} gives outputs of shape {tuple(logits.shape)}, not [batch, '
                    f'{num_classes}] logits; check its num_classes / head')


def _first_rows(dataset, n: int = 2) -> dict:
  split = next(iter(dataset.splits.values()))
  return {k: v[:n] for k, v in split.items()}


def train_options(role_train, where: str, *, loss, seed: int, run: dict) -> options.TrainOptions:
  """The checked `fit` options of one stage: a `train` section plus the run-level settings."""
  return options.TrainOptions.from_section(role_train, where, loss=loss, seed=seed, **run)


def soft_labels(raw: dict, num_classes: int) -> np.ndarray:
  """float32 [N, C] one-hot labels of raw int labels [N] (soft labels pass through).

  Unknown labels (`base.UNKNOWN`, -1: rows of a dataset's own unlabelled split, which only U
  holds) become all-zero rows: U's labels never reach a loss (`ssl_step.unlabelled_examples`
  drops them, reading a zero row as unknown), and L is drawn from train, which has none.
  """
  y = np.asarray(raw['label'])
  if y.ndim != 1 or base.known(y).all():
    return pipeline.one_hot_labels({'label': y}, num_classes)['label']
  out = np.zeros((len(y), num_classes), np.float32)
  k = base.known(y)
  out[k] = pipeline.one_hot_labels({'label': y[k]}, num_classes)['label']
  return out
