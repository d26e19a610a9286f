"""A projection head for the SSL algorithms that compare embeddings (SimMatch's memory bank).

An algorithm of `w2s.ssl` that sets `PROJECTION = D` gets, from the same forward pass as its
logits, an L2-normalised embedding [N, D] of the model's pooled features (`model.features`):

  h = features(x) [N, F],  e = normalize(W2 relu(W1 h + b1) + b2) [N, D]   (W1 [F, F], W2 [F, D])

as USB's SimMatch_Net (Zheng et al. 2022; Linear(F, F) -> ReLU -> Linear(F, D), rows of unit
norm). The head's params live beside the model's in the same tree, under `KEY`, so the optimizer
trains them, checkpoints and the EMA carry them, and everything else (evaluation, prediction, the
EMA's predictions) calls the unchanged model, which ignores the extra key (flax applies only the
params its modules ask for). Other algorithms never see the key: their param tree and compiled
step stay as they were.

The logits and the features come from one `model.apply`: flax's `capture_intermediates` records
what the model's own `features` method returned inside `__call__` (cnn, resnet and the text
classifiers have one; `MODELS_WITH_FEATURES`), so the embedding shares the pass, its dropout
and its gradient path into the backbone.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from w2s.errors import UserError

KEY = 'ssl_projection'
MODELS_WITH_FEATURES = ('cnn', 'resnet', 'bert', 'gpt2', 'gpt_neox', 'llama')


class Projection(nn.Module):
  """[N, F] features -> [N, D] unit-norm embeddings (Linear(F, F) -> ReLU -> Linear(F, D))."""
  width: int

  @nn.compact
  def __call__(self, h):
    h = jnp.asarray(h, jnp.float32)
    h = nn.relu(nn.Dense(h.shape[-1], name='hidden')(h))
    return normalize(nn.Dense(self.width, name='out')(h))


def normalize(z: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Rows of z [N, D] divided by their L2 norm (at least eps, as torch's F.normalize)."""
  return z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), eps)


def check_module(module, algo: str) -> None:
  """UserError unless `module` has the pooled `features` the projection head reads (and no LoRA
  mask, whose optimizer labels would not cover the head)."""
  if not callable(getattr(module, 'features', None)):
    raise UserError(f'ssl {algo!r} needs a model with pooled features (a projection head on '
                    f'them); {type(module).__name__} has none: use one of '
                    f'{", ".join(MODELS_WITH_FEATURES)}')
  if getattr(getattr(module, 'backbone', None), 'lora', None) is not None:
    raise UserError(f'ssl {algo!r} trains a projection head, which LoRA\'s trainable mask does not '
                    'cover; drop lora from the model')


def _is_features(mdl, method_name: str) -> bool:
  return method_name == 'features' and mdl.scope.path == ()


def _base(params: dict) -> dict:
  return {k: v for k, v in params.items() if k != KEY}


def apply_features(module, params: dict, batch: dict, *, train: bool, rng):
  """(logits [N, C], features [N, F]) of one `module.apply` (train mode: dropout from rng)."""
  rngs = {'dropout': rng} if (train and rng is not None) else {}
  logits, state = module.apply({'params': _base(params)}, batch, train=train, rngs=rngs,
                               capture_intermediates=_is_features, mutable=['intermediates'])
  captured = state['intermediates'].get('features')
  if not captured:
    raise UserError(f'{type(module).__name__}.__call__ does not call self.features, so the '
                    'projection head has nothing to read; call it there')
  return logits, captured[0]


def init_params(module, params: dict, sample: dict, rng, width: int) -> dict:
  """`params` with the head's params [F -> F -> width] under KEY (F from `module.features`)."""
  feats = module.apply({'params': params}, sample, method='features')
  return {**params, KEY: Projection(width).init(rng, feats)['params']}


def embed_fn(module, width: int):
  """`embed(params, batch, *, train, rng) -> (logits [N, C], embedding [N, width])`."""
  head = Projection(width)

  def embed(params, batch, *, train, rng):
    logits, feats = apply_features(module, params, batch, train=train, rng=rng)
    return logits, head.apply({'params': params[KEY]}, feats)
  return embed
