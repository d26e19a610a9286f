"""Multi-layer perceptron over 'x' (vectors, flattened images, or cached backbone features).

With `hidden=()` it is a linear classifier: the head of a frozen-backbone linear probe
(Burns et al. 2023, `linear_probe`). The output layer is initialised to zero, as the
weak-to-strong release does for its heads, unless `zero_head=False`.
"""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

SIZES = {
    'linear': dict(hidden=()),
    'small': dict(hidden=(64,)),
    'base': dict(hidden=(256, 256)),
    'large': dict(hidden=(1024, 1024)),
}


class MLP(nn.Module):
  num_classes: int
  hidden: Sequence[int] = (256, 256)
  dropout: float = 0.0
  zero_head: bool = True
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, batch, *, train: bool = False):
    x = jnp.asarray(batch['x'], self.dtype)
    x = x.reshape(x.shape[0], -1)
    for width in self.hidden:
      x = nn.gelu(nn.Dense(width, dtype=self.dtype)(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    init = nn.initializers.zeros if self.zero_head else nn.linear.default_kernel_init
    return nn.Dense(self.num_classes, kernel_init=init, dtype=self.dtype)(x).astype(jnp.float32)


def create(*, num_classes: int, size: str | None = None, **hparams) -> MLP:
  """size: one of SIZES (default 'base'); hparams override it (hidden, dropout, zero_head, dtype)."""
  from w2s.errors import UserError
  if size is not None and size not in SIZES:
    raise UserError(f'unknown mlp size {size!r}; known: {", ".join(SIZES)}')
  kw = {**SIZES[size or 'base'], **hparams}
  kw['hidden'] = tuple(kw['hidden'])
  return MLP(num_classes=num_classes, **kw)
