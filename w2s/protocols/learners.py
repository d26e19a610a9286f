"""A learner: a model plus the inputs it reads, for one weak-to-strong role (weak, strong, ...).

Two kinds, chosen by the role's config section:

* fine-tuned: `dict(model=dict(name=..., ...), train=dict(...))`: the whole model trains on tokens
  (text) or pixels/vectors, from scratch or from `pretrained` weights;
* frozen backbone (the release's `linear_probe`): `dict(model=..., frozen=True, head=dict(name='mlp',
  size='linear'), train=...)`: backbone features are computed once per split and cached on disk;
  only the head trains, on 'x' = features.
"""
import dataclasses
from typing import Any

import jax
import numpy as np
from ml_collections import ConfigDict

from w2s import registry
from w2s.data import base
from w2s.data import featurize as featurize_lib
from w2s.data import pipeline
from w2s.protocols import stages as stages_lib


PREFETCH_ALL_MAX = 100_000  # frozen features of datasets up to this size are extracted in one go


@dataclasses.dataclass
class Learner:
  name: str
  module: Any                 # what trains (the full model, or the head over cached features)
  init_params: Any            # pretrained params merged over the init, or None
  spec: dict                  # the config section (for stage keys)
  _inputs: Any                # examples -> numeric input fields

  def examples(self, raw: dict, labels: np.ndarray, extras: dict | None = None) -> dict:
    """Batch-ready fields for raw examples with soft labels [N, C] (+ per-example `extras`, such
    as an ensemble teacher's 'member_probs' [N, K, C], aligned with `raw`)."""
    return {**self._inputs(raw), **(extras or {}), 'id': raw['id'],
            'label': labels.astype(np.float32)}


def tokenizer_kwargs(tokenizer: dict) -> dict:
  """Config `dict(tokenizer='minilm' | path, max_length=L)` -> featurize kwargs with a real path."""
  from w2s.models import hf_import
  tok = dict(tokenizer)
  if isinstance(tok.get('tokenizer'), str):
    tok['tokenizer'] = hf_import.resolve(tok['tokenizer'])
  return tok


def _tokens_or_vectors(dataset, tokenizer):
  kwargs = tokenizer_kwargs(tokenizer) if dataset.input_kind == 'text' else {}

  def inputs(raw):
    feats = featurize_lib.featurize(dataset, raw, **kwargs)
    return {k: v for k, v in feats.items() if k not in ('id', 'label')}
  return inputs


def make(role: str, spec, *, dataset, tokenizer: dict, eval_batch_size: int, mesh,
         cache_dir: str) -> Learner:
  """Builds the learner of `role` from its config section (validating plug-in names up front)."""
  spec = spec.to_dict() if isinstance(spec, ConfigDict) else dict(spec)
  model = registry.build('models', spec['model'], num_classes=dataset.num_classes)
  tokens = _tokens_or_vectors(dataset, tokenizer)
  if not spec.get('frozen', False):
    from w2s.models import hf_import
    params = None
    if getattr(model, 'pretrained', None):  # backbone from the checkpoint, zero head
      sample = {k: v[:1] for k, v in tokens(_first_rows(dataset)).items()}
      params = hf_import.init_params(model, jax.random.PRNGKey(0), sample)
    return Learner(role, model, params, spec, tokens)

  from w2s.models import features as features_lib
  from w2s.models import hf_import
  head = registry.build('models', spec.get('head', dict(name='mlp', size='linear')),
                        num_classes=dataset.num_classes)
  sample = {k: v[:1] for k, v in tokens(_first_rows(dataset)).items()}
  backbone_params = hf_import.init_params(model, jax.random.PRNGKey(0), sample)
  key = dict(features_lib.model_key(model, backbone_params), dataset=dataset.name, split='all',
             inputs=stages_lib.key(tokenizer))

  every = base.concat(list(dataset.splits.values()))
  warm_up = base.num_rows(every) <= PREFETCH_ALL_MAX

  def features_of(source):
    def compute(rows):  # rows of `source` the cache lacks
      inputs = tokens({k: v[rows] for k, v in source.items()})
      return features_lib.extract(model, backbone_params, inputs, batch_size=eval_batch_size,
                                  desc=f'[{role} features] {dataset.name}')
    return features_lib.cached(source['id'], cache_dir=cache_dir, key=key, compute=compute)

  def frozen_inputs(raw):
    # One cache per dataset: an example's features do not depend on the split or seed it falls
    # in, so every stage and seed reuses them. A small dataset is extracted whole in one pass the
    # first time; a large one only for the examples asked for (the cache grows).
    nonlocal warm_up
    if warm_up:
      features_of(every)
      warm_up = False
    return {'x': features_of(raw)}

  return Learner(role, head, None, spec, frozen_inputs)


def _first_rows(dataset, n: int = 2) -> dict:
  split = next(iter(dataset.splits.values()))
  return {k: v[:n] for k, v in split.items()}


def train_cfg(config, role_spec, *, loss, seed: int) -> ConfigDict:
  """The `fit` config of one stage: the role's `train` section over the run-level defaults."""
  t = dict(role_spec['train'])
  return ConfigDict(dict(
      seed=seed, loss=dict(loss), optimizer=t['optimizer'], schedule=t['schedule'],
      batch_size=t['batch_size'], num_epochs=float(t.get('num_epochs', 2.0)),
      num_steps=int(t.get('num_steps', 0)), accum_steps=int(t.get('accum_steps', 1)),
      log_every=config.log_every, checkpoint_every=config.checkpoint_every,
      keep_checkpoints=config.keep_checkpoints))


def soft_labels(raw: dict, num_classes: int) -> np.ndarray:
  return pipeline.one_hot_labels({'label': raw['label']}, num_classes)['label']
