"""Small residual networks for images (He et al., 2016, "Deep Residual Learning"), GroupNorm.

Basic-block ResNets in the CIFAR layout (3x3 stem, no max-pool; 'tiny' strides its stem, for
28x28 digits on a CPU). Normalisation is GroupNorm (Wu & He, 2018) instead of BatchNorm, so the
model has no mutable state and the same train step serves every family; BiT (Kolesnikov et al.,
2020) made the same choice. The head is a zero-initialised linear layer, as for the text families,
on globally average-pooled features followed by a LayerNorm (as ConvNeXt, Liu et al., 2022).

Two choices keep a GroupNorm ResNet with a zero head from stalling near chance (mnist_5k, 'tiny',
120 Adam steps at lr 1e-3: 33% test accuracy without either, 41% and 52% with one, 79% with both):
  * the pooled features are layer-normalised: GroupNorm standardises every example's activations
    per group, so their spatial means barely differ between examples and the head learns slowly;
  * residual branches are not zero-initialised (Goyal et al., 2017 do, for BatchNorm): with the
    head also at zero, a branch's convolutions get no gradient until two zero factors have grown.
Convolutions are `w2s.models.cnn.Conv`, whose gradients stay fast on XLA:CPU inside the train
step's lax.scan, where nn.Conv's run ~10x slower (see w2s/models/cnn.py).

Config: dict(name='resnet', size='resnet20')                      CIFAR-size images
        dict(name='resnet', size='tiny')                           [B, 28, 28, 1] MNIST images
        dict(name='resnet', size='tiny', image_shape=(28, 28, 1))  flat [B, 784] MNIST vectors
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.models.attention import as_dtype
from w2s.models.cnn import Conv, images


@dataclasses.dataclass(frozen=True)
class Config:
  stages: tuple[int, ...] = (3, 3, 3)  # blocks per stage; each later stage halves H, W
  widths: tuple[int, ...] = (16, 32, 64)
  groups: int = 8  # GroupNorm groups (capped at the channel count)
  stem_stride: int = 1  # 2 halves H, W before the first stage (4x fewer FLOPs)
  dropout: float = 0.0  # before the head


SIZES = {
    'tiny': dict(stages=(1, 1, 1), widths=(16, 32, 64), stem_stride=2),
    'resnet20': dict(stages=(3, 3, 3), widths=(16, 32, 64)),
    'resnet18': dict(stages=(2, 2, 2, 2), widths=(64, 128, 256, 512), groups=32),
}


class BasicBlock(nn.Module):
  """relu(x + norm(conv(relu(norm(conv(x)))))), strided 1x1 projection when the shape changes."""
  width: int
  stride: int
  groups: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = lambda k, s, name: Conv(self.width, k, s, use_bias=False, dtype=self.dtype, name=name)
    norm = lambda name, **kw: nn.GroupNorm(min(self.groups, self.width), dtype=self.dtype,
                                           name=name, **kw)
    y = nn.relu(norm('norm1')(conv(3, self.stride, 'conv1')(x)))
    y = norm('norm2')(conv(3, 1, 'conv2')(y))  # not zero-init: see the module docstring
    if x.shape[-1] != self.width or self.stride != 1:
      x = norm('proj_norm')(conv(1, self.stride, 'proj')(x))
    return nn.relu(x + y)


class Backbone(nn.Module):
  """Images [B, H, W, C] in [-1, 1] -> pooled features [B, D] float32."""
  config: Config
  dtype: jnp.dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    c = self.config
    x = Conv(c.widths[0], 3, c.stem_stride, use_bias=False, dtype=self.dtype, name='stem')(x)
    x = nn.relu(nn.GroupNorm(min(c.groups, c.widths[0]), dtype=self.dtype, name='stem_norm')(x))
    block = nn.remat(BasicBlock) if self.remat else BasicBlock
    for s, (blocks, width) in enumerate(zip(c.stages, c.widths)):
      for i in range(blocks):
        stride = 2 if s > 0 and i == 0 else 1
        x = block(width, stride, c.groups, self.dtype, name=f'stage{s}_block{i}')(x)
    feats = nn.LayerNorm(name='pool_norm')(x.astype(jnp.float32).mean(axis=(1, 2)))
    return nn.Dropout(c.dropout)(feats, deterministic=not train)


class ResNet(nn.Module):
  """Images -> logits [B, C]; `features` gives the pooled [B, D] features.

  Attributes:
    config: the architecture.
    num_classes: C.
    image_shape: (H, W, C) to reshape flat inputs [B, H*W*C]; None for [B, H, W(, C)] inputs.
    dtype: compute dtype; params stay float32.
    remat: rematerialise each block in the backward pass.
    frozen: stop gradients at the features.
  """
  config: Config
  num_classes: int
  image_shape: tuple[int, ...] | None = None
  dtype: jnp.dtype = jnp.float32
  remat: bool = False
  frozen: bool = False

  def setup(self):
    self.backbone = Backbone(self.config, self.dtype, self.remat)
    self.head = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros)

  def features(self, batch: dict, *, train: bool = False) -> jax.Array:
    """batch['x'] [B, H, W, C] (or flat, see image_shape) in [0, 1] -> [B, D] float32."""
    feats = self.backbone(images(batch['x'], self.image_shape, self.dtype, 'resnet'), train=train)
    return jax.lax.stop_gradient(feats) if self.frozen else feats

  def __call__(self, batch: dict, *, train: bool = False) -> jax.Array:
    return self.head(self.features(batch, train=train))


def create(*, num_classes: int, size: str = 'resnet20', image_shape=None, dtype: str = 'float32',
           remat: bool = False, frozen: bool = False, **arch) -> ResNet:
  """ResNet classifier; `arch` overrides Config fields (stages, widths, groups, stem_stride,
  dropout)."""
  if size not in SIZES:
    raise UserError(f'resnet: unknown size {size!r}; known sizes: {", ".join(SIZES)}')
  fields = {f.name for f in dataclasses.fields(Config)}
  if set(arch) - fields:
    raise UserError(f'resnet: unknown hparam(s) {sorted(set(arch) - fields)}; architecture fields '
                    f'are {sorted(fields)}')
  arch = {k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()}
  shape = tuple(image_shape) if image_shape is not None else None
  return ResNet(Config(**{**SIZES[size], **arch}), num_classes, shape, as_dtype(dtype), remat,
                frozen)
