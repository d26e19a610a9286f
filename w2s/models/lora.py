"""LoRA: low-rank adapters on the dense kernels of the text families (Hu et al., 2021, "LoRA:
Low-Rank Adaptation of Large Language Models").

A target kernel W [in, out] (bias b) becomes

    y = x W + b + (alpha / rank) * dropout(x) A B,      A [in, r], B [r, out],

with A random (Kaiming-uniform, bound 1/sqrt(in), as Hugging Face PEFT) and B zero, so a fresh
adapter leaves the model's outputs exactly unchanged. The frozen base and the adapter run in the
model's compute dtype (bfloat16 included); params stay float32. Only A, B and the classification
head train: `TextClassifier.trainable_mask` gives the optimizer its mask. EleutherAI's W2S runs
default to rank 8 on every attention and MLP kernel.

Parameter layout: the adapters sit beside the kernel they adapt, in the same Flax module,

    .../<dense>/kernel   [in, out]  (unchanged path: checkpoint import and `merge_params` as before)
    .../<dense>/bias     [out]      (when the layer has one)
    .../<dense>/lora_a   [in, r]
    .../<dense>/lora_b   [r, out]

where <dense> is, per target:
  'attention'  the q, k, v, o projections of `w2s.models.attention.Attention` (every family);
  'mlp'        BERT intermediate/output, GPT-2 c_fc/c_proj, Llama gate_proj/up_proj/down_proj,
               GPT-NeoX dense_h_to_4h/dense_4h_to_h.
Embeddings, norms, LM heads and the classification head never get adapters.

Config: model=dict(name='llama', pretrained=..., lora=dict(rank=8, alpha=16,
        targets=('attention', 'mlp'), dropout=0.0)); lora=None (default) is the plain model.
`merge(params, lora)` folds the adapters into the kernels: params of the plain model.
"""
import dataclasses
import math
import zlib
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from w2s.errors import UserError

TARGETS = ('attention', 'mlp')
ADAPTERS = ('lora_a', 'lora_b')
# PEFT's kaiming_uniform_(a=sqrt(5)) on A: U(-1/sqrt(in), 1/sqrt(in))
A_INIT = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """Checked LoRA options (hashable, so it can be a Flax module attribute)."""
  rank: int = 8
  alpha: float = 16.0
  targets: tuple[str, ...] = TARGETS
  dropout: float = 0.0

  @property
  def scale(self) -> float:
    return self.alpha / self.rank

  @classmethod
  def coerce(cls, spec: Any, where: str = 'lora') -> 'LoraConfig | None':
    """None / LoraConfig / dict (or ConfigDict) -> LoraConfig or None; bad options: UserError."""
    if spec is None or isinstance(spec, LoraConfig):
      return spec
    if hasattr(spec, 'to_dict'):
      spec = spec.to_dict()
    if not isinstance(spec, Mapping):
      raise UserError(f'{where}={spec!r} must be None or dict(rank=8, alpha=16, '
                      f'targets={TARGETS}, dropout=0.0)')
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(spec) - set(fields))
    if unknown:
      raise UserError(f'{where}: unknown option(s) {unknown}; LoRA options are {fields}')
    spec = {**dataclasses.asdict(cls()), **spec}
    rank, alpha, dropout = spec['rank'], spec['alpha'], spec['dropout']
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank <= 0:
      raise UserError(f'{where}.rank={rank!r} must be a whole number > 0 (e.g. 8)')
    if (isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha)
        or alpha <= 0):
      raise UserError(f'{where}.alpha={alpha!r} must be a number > 0 (e.g. 16)')
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
      raise UserError(f'{where}.dropout={dropout!r} must be a number in [0, 1)')
    targets = spec['targets']
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    bad = [t for t in targets if t not in TARGETS]
    if bad or not targets:
      raise UserError(f'{where}.targets={targets!r}: '
                      f'{"unknown target " + repr(bad[0]) if bad else "none given"}; '
                      f'choose from {TARGETS}')
    return cls(int(rank), float(alpha), tuple(dict.fromkeys(targets)), float(dropout))


class Dense(nn.Dense):
  """nn.Dense plus a low-rank update (alpha / rank) * dropout(x) A B; see the module docstring.

  The base term is nn.Dense's own computation, so with B = 0 the output is bit-identical.
  """
  rank: int = 8
  alpha: float = 16.0
  dropout: float = 0.0
  deterministic: bool = True

  @nn.compact
  def __call__(self, inputs):
    y = super().__call__(inputs)
    a = self.param('lora_a', A_INIT, (inputs.shape[-1], self.rank), self.param_dtype)
    b = self.param('lora_b', nn.initializers.zeros, (self.rank, self.features), self.param_dtype)
    x = nn.Dropout(self.dropout)(inputs, deterministic=self.deterministic)
    x, a, b = self.promote_dtype(x, a, b, dtype=self.dtype)
    return y + (x @ a @ b) * jnp.asarray(self.alpha / self.rank, y.dtype)


def dense(features: int, *, name: str, lora: LoraConfig | None, target: str,
          deterministic: bool = True, **kw) -> nn.Module:
  """`nn.Dense(features, name=name, **kw)`, or a LoRA `Dense` when `target` is adapted."""
  if lora is None or target not in lora.targets:
    return nn.Dense(features, name=name, **kw)
  return Dense(features, name=name, rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout,
               deterministic=deterministic, **kw)


def _name(entry) -> str:
  return str(getattr(entry, 'key', getattr(entry, 'name', getattr(entry, 'idx', entry))))


def is_adapter(path) -> bool:
  """Whether a param path (names, or jax tree path entries) ends at a LoRA adapter."""
  return bool(path) and _name(path[-1]) in ADAPTERS


def init_adapter(path: tuple[str, ...], shape, rng: jax.Array) -> np.ndarray:
  """A fresh adapter leaf (host float32) for a param tree whose base comes from a checkpoint.

  For `hf_import.init_params`, which initialises nothing randomly: 'lora_b' is zero, 'lora_a'
  is drawn from A_INIT with `rng` folded with a hash of the path, so every adapter differs.
  """
  if _name(path[-1]) == 'lora_b':
    return np.zeros(shape.shape, np.float32)
  key = jax.random.fold_in(rng, zlib.crc32('/'.join(map(_name, path)).encode()) & 0x7fffffff)
  return np.asarray(A_INIT(key, tuple(shape.shape), jnp.float32))


def trainable(params) -> Any:
  """Bool tree like `params`: True for the LoRA adapters and the classification head 'head'."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: is_adapter(path) or _name(path[0]) == 'head', params)


def merge(params: Mapping, lora) -> dict:
  """Params of the plain model: each kernel W with adapters becomes W + (alpha / rank) A B.

  Args:
    params: a param tree with adapters (float32, as trained).
    lora: the model's LoRA options (dict or LoraConfig), for alpha / rank.
  Returns:
    The same tree without 'lora_a' / 'lora_b' leaves, loadable by the model built with lora=None.
  """
  scale = LoraConfig.coerce(lora).scale

  def fold(tree):
    if not isinstance(tree, Mapping):
      return tree
    out = {k: fold(v) for k, v in tree.items() if k not in ADAPTERS}
    if 'lora_a' in tree:
      w, a, b = tree['kernel'], tree['lora_a'], tree['lora_b']
      delta = jnp.matmul(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32),
                         precision=jax.lax.Precision.HIGHEST)
      out['kernel'] = (jnp.asarray(w, jnp.float32) + scale * delta).astype(w.dtype)
    return out
  return fold(params)


def for_model(family: str, spec, *, frozen: bool = False) -> LoraConfig | None:
  """The `lora=` option of a family's `create`, checked (a frozen backbone cannot train it)."""
  config = LoraConfig.coerce(spec, f'{family}.lora')
  if config is not None and frozen:
    raise UserError(f'{family}: lora and frozen=True exclude each other (a frozen backbone passes '
                    'no gradient to its adapters); drop one of them')
  return config
