"""A small LeNet-style CNN for images (LeCun et al., 1998): (conv3x3-relu-maxpool2) x N, dense head.

The cheap image model for CPU runs and weak supervisors: on mnist_5k 'small' reaches ~92% test
accuracy after 100 Adam steps (batch 64, lr 3e-3), seconds on a 2-core CPU. The output layer is zero-initialised, as for every w2s family
(Burns et al., 2023), so a fresh model predicts the uniform distribution.

This file also holds what the image families share: `Conv` and `images` (used by resnet).

`Conv` computes its gradients with canonical NHWC/HWIO forward convolutions. The transposed
convolutions JAX's autodiff emits (dim_labels like f01b_i01o->01bf) run 20-50x slower on XLA:CPU
when they sit inside control flow (the lax.scan of `w2s.train.train_step`, a cond, a fori_loop),
where XLA:CPU does not rewrite them to its fast path. The math is the same on every backend, and
outside control flow both forms run at the same speed on a CPU.

Config: dict(name='cnn', size='small')                      [B, H, W, C] images in [0, 1]
        dict(name='cnn', size='base', dropout=0.25)
        dict(name='cnn', size='small', image_shape=(8, 8, 1))  flat [B, 64] vectors
"""
import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.models.attention import as_dtype

SIZES = {
    'small': dict(widths=(16, 32), hidden=64),
    'base': dict(widths=(32, 64), hidden=128),
}

_DN = ('NHWC', 'HWIO', 'NHWC')


def _same(size: int, k: int, s: int) -> tuple[int, tuple[int, int]]:
  """Output length and (low, high) padding of a 'SAME' convolution, as XLA computes them."""
  out = -(-size // s)
  total = max((out - 1) * s + k - size, 0)
  return out, (total // 2, total - total // 2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv2d(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
  """'SAME' convolution x [B, H, W, I] * w [k, k, I, O] -> [B, ceil(H/s), ceil(W/s), O]."""
  return _conv_fwd(x, w, stride)[0]


def _conv_fwd(x, w, stride):
  pads = [_same(x.shape[1 + i], w.shape[i], stride)[1] for i in range(2)]
  return jax.lax.conv_general_dilated(x, w, (stride, stride), pads, dimension_numbers=_DN), (x, w)


def _conv_bwd(s, res, g):
  x, w = res
  kh, kw = w.shape[:2]
  (ho, ph), (wo, pw) = (_same(x.shape[1 + i], w.shape[i], s) for i in range(2))
  eh, ew = (ho - 1) * s + kh, (wo - 1) * s + kw  # extent of the padded input the windows read
  # dw[a, b, i, o] = sum_{n, h, v} xpad[n, h*s + a, v*s + b, i] g[n, h, v, o]: a convolution of
  # xpad^T [I, H', W', B] with g^T [Ho, Wo, B, O] (kernel dilated by s) -> [I, kh, kw, O]
  xp = jnp.pad(x, ((0, 0), ph, pw, (0, 0)))[:, :eh, :ew]
  xp = jnp.pad(xp, ((0, 0), (0, eh - xp.shape[1]), (0, ew - xp.shape[2]), (0, 0)))
  dw = jax.lax.conv_general_dilated(xp.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3), (1, 1),
                                    'VALID', rhs_dilation=(s, s), dimension_numbers=_DN)
  dw = dw.transpose(1, 2, 0, 3).astype(w.dtype)
  # dx: g dilated by s, fully padded, convolved with the flipped kernel (I <-> O); rows of the
  # padded input past the last window get zero gradient, then the padding is cropped off
  hp, wp = x.shape[1] + sum(ph), x.shape[2] + sum(pw)
  wt = w[::-1, ::-1].transpose(0, 1, 3, 2)
  pads = ((kh - 1, hp - eh + kh - 1), (kw - 1, wp - ew + kw - 1))
  dxp = jax.lax.conv_general_dilated(g, wt, (1, 1), pads, lhs_dilation=(s, s),
                                     dimension_numbers=_DN)
  return dxp[:, ph[0]:ph[0] + x.shape[1], pw[0]:pw[0] + x.shape[2]].astype(x.dtype), dw


conv2d.defvjp(_conv_fwd, _conv_bwd)


class Conv(nn.Module):
  """'SAME' k x k convolution, NHWC; params 'kernel' [k, k, I, O] (and 'bias' [O]) as nn.Conv."""
  features: int
  kernel_size: int = 3
  stride: int = 1
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  kernel_init: Callable = nn.initializers.he_normal()

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param('kernel', self.kernel_init, (k, k, x.shape[-1], self.features))
    y = conv2d(x.astype(self.dtype), kernel.astype(self.dtype), self.stride)
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (self.features,)).astype(self.dtype)
    return y


def max_pool2(x: jax.Array) -> jax.Array:
  """2x2 max-pool, stride 2, [B, H, W, C] -> [B, ceil(H/2), ceil(W/2), C] (odd sizes: edge-padded).

  A reshape + max rather than lax.reduce_window, whose gradient (select-and-scatter) is slow on
  XLA:CPU."""
  b, h, w, c = x.shape
  x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode='edge')
  return x.reshape(b, x.shape[1] // 2, 2, x.shape[2] // 2, 2, c).max(axis=(2, 4))


def images(x, image_shape, dtype, family: str) -> jax.Array:
  """batch['x'] in [0, 1]: [B, H, W, C], [B, H, W], or flat [B, H*W*C] with image_shape=(H, W, C)
  -> [B, H, W, C] in [-1, 1], in `dtype`."""
  if image_shape is not None:
    x = x.reshape((x.shape[0],) + tuple(image_shape))
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4:
    raise UserError(f'{family}: inputs of shape {x.shape} are not images [B, H, W, C]; set '
                    'image_shape=(H, W, C) for flat vectors')
  return (x.astype(jnp.float32) * 2.0 - 1.0).astype(dtype)


class CNN(nn.Module):
  """Images -> logits [B, C]; `features` gives the hidden layer [B, hidden] float32.

  Attributes:
    num_classes: C.
    widths: channels of each conv-relu-pool stage.
    hidden: width of the dense layer before the head.
    dropout: rate before the head (training only).
    image_shape: (H, W, C) to reshape flat inputs; None for [B, H, W(, C)] inputs.
    dtype: compute dtype; params stay float32.
    frozen: stop gradients at the features.
  """
  num_classes: int
  widths: Sequence[int] = (16, 32)
  hidden: int = 64
  dropout: float = 0.0
  image_shape: tuple[int, ...] | None = None
  dtype: jnp.dtype = jnp.float32
  frozen: bool = False

  def setup(self):
    self.convs = [Conv(w, dtype=self.dtype, name=f'conv{i}') for i, w in enumerate(self.widths)]
    self.dense = nn.Dense(self.hidden, dtype=self.dtype)
    self.drop = nn.Dropout(self.dropout)
    self.head = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros)

  def features(self, batch: dict, *, train: bool = False) -> jax.Array:
    """batch['x'] (see `images`) -> [B, hidden] float32."""
    x = images(batch['x'], self.image_shape, self.dtype, 'cnn')
    for conv in self.convs:
      x = max_pool2(nn.relu(conv(x)))
    feats = nn.relu(self.dense(x.reshape(x.shape[0], -1))).astype(jnp.float32)
    return jax.lax.stop_gradient(feats) if self.frozen else feats

  def __call__(self, batch: dict, *, train: bool = False) -> jax.Array:
    return self.head(self.drop(self.features(batch, train=train), deterministic=not train))


def create(*, num_classes: int, size: str = 'small', image_shape=None, dtype: str = 'float32',
           **hparams) -> CNN:
  """CNN classifier; hparams override the size's widths / hidden, and set dropout, frozen."""
  if size not in SIZES:
    raise UserError(f'cnn: unknown size {size!r}; known sizes: {", ".join(SIZES)}')
  known = {'widths', 'hidden', 'dropout', 'frozen'}
  if set(hparams) - known:
    raise UserError(f'cnn: unknown hparam(s) {sorted(set(hparams) - known)}; known: '
                    f'{sorted(known | {"size", "image_shape", "dtype"})}')
  kw = {**SIZES[size], **hparams}
  kw['widths'] = tuple(kw['widths'])
  shape = tuple(image_shape) if image_shape is not None else None
  return CNN(num_classes=num_classes, image_shape=shape, dtype=as_dtype(dtype), **kw)
