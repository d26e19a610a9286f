"""RandAugment as FixMatch's strong view A(x): `dict(name='randaugment', num_ops=2, cutout=0.5)`.

Cubuk et al. 2020, "RandAugment: Practical automated data augmentation with a reduced search
space": per example, `num_ops` ops drawn uniformly (with replacement) from OPS, each applied at
magnitude m in [0, 1]. FixMatch (Sohn et al. 2020, Sec. 2.3 and its appendix's table of ops) draws
m uniformly per op and example instead of one global M (`magnitude=None`, the default; a float fixes it) and always
applies Cutout afterwards (`cutout`: side as a fraction of H or in pixels; 0 turns it off).

Magnitude -> parameter (s = a random sign; m = 0 is the identity for every op that has one):
  brightness, color, contrast, sharpness   PIL enhance factor 1 + 0.9 s m (in [0.1, 1.9])
  posterize    8 - round(4 m) bits          solarize   invert pixels >= (1 - m) * 256/255
  rotate       30 s m degrees (counter-clockwise for s > 0, about the image centre)
  shear_x/y    0.3 s m                      translate_x/y   0.3 s m of the side
  identity, autocontrast, equalize          no magnitude (autocontrast and equalize act fully)
Geometric ops resample an affine grid bilinearly; source points outside the image read `fill`
(0.5: the mid-gray of FixMatch's PIL fill 128; use 0 for black-background digits). Images are
float [H, W, C] in [0, 1]; point ops use the luma of RGB, or the mean of other channel counts.

Under vmap `lax.switch` on a per-example index computes every op for every example and selects:
the price of a static, device-friendly program. The geometric ops share one resampling per op
slot (their matrices are selected, then `affine` runs once), so a slot costs one bilinear
resampling plus the point ops (equalize, a histogram scatter, is the dearest on CPU). Slots run
in a `fori_loop`: unrolled, XLA fuses one slot's gathers into the next's (16x the reads).
Random draws are per batch, flat (`w2s.augment.flat`). Timings: benchmarks/augment.py.
"""
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from w2s import augment
from w2s.augment import cutout as cutout_lib
from w2s.errors import UserError


def _blend(img, degenerate, factor):
  """PIL ImageEnhance: degenerate + factor (img - degenerate), clipped to [0, 1]."""
  return jnp.clip(degenerate + factor * (img - degenerate), 0.0, 1.0)


def _gray(img):
  """[H, W, C] -> luma [H, W, 1] (ITU-R 601 for RGB, as PIL's convert('L'))."""
  if img.shape[-1] == 3:
    return jnp.tensordot(img, jnp.array([0.299, 0.587, 0.114], img.dtype), 1)[..., None]
  return jnp.mean(img, -1, keepdims=True)


def _smooth(img):
  """PIL's SMOOTH filter (3x3, centre 5, others 1, /13) inside; border pixels unchanged."""
  h, w, _ = img.shape
  p = jnp.pad(img, ((1, 1), (1, 1), (0, 0)), mode='edge')
  s = sum(p[dy:dy + h, dx:dx + w] * (5.0 if (dy, dx) == (1, 1) else 1.0)
          for dy in range(3) for dx in range(3)) / 13.0
  inner = (jnp.arange(h)[:, None] % (h - 1) != 0) & (jnp.arange(w)[None, :] % (w - 1) != 0)
  return jnp.where(inner[..., None], s, img)


def _equalize_channel(v):
  """Histogram equalization of one channel v int32 [N] in [0, 255] (PIL / torchvision LUT)."""
  hist = jnp.zeros(256, jnp.int32).at[v].add(1)
  step = (v.shape[0] - hist[jnp.max(v)]) // 255
  safe = jnp.maximum(step, 1)
  lut = jnp.clip((jnp.cumsum(hist) - hist + safe // 2) // safe, 0, 255)
  return jnp.where(step == 0, v, lut[v])


def equalize(img):
  """Per-channel histogram equalization of img [H, W, C] on its 8-bit values (PIL's)."""
  h, w, c = img.shape
  v = jnp.round(img * 255.0).astype(jnp.int32).reshape(h * w, c)
  out = jax.vmap(_equalize_channel, in_axes=1, out_axes=1)(v)
  return out.reshape(h, w, c).astype(img.dtype) / 255.0


def autocontrast(img):
  """Each channel stretched to [0, 1]; constant channels unchanged."""
  lo, hi = jnp.min(img, (0, 1)), jnp.max(img, (0, 1))
  return jnp.where(hi > lo, (img - lo) / jnp.where(hi > lo, hi - lo, 1.0), img)


def posterize(img, bits):
  """Keep the top `bits` (traced float, 4..8) of each 8-bit value."""
  shift = jnp.exp2(8.0 - bits)
  return jnp.floor(jnp.round(img * 255.0) / shift) * shift / 255.0


def affine(img, matrix, shift, fill):
  """Bilinear resampling: out[p] = img[matrix @ (p - centre) + centre + shift], p = (row, col).

  img [H, W, C]; matrix [2, 2]; shift [2] pixels; corners outside the image read `fill`.
  """
  h, w, _ = img.shape
  centre = jnp.array([(h - 1) / 2.0, (w - 1) / 2.0])
  grid = jnp.stack(jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing='ij'), -1) - centre
  src = grid @ matrix.T + centre + shift                                  # [H, W, 2]
  base = jnp.floor(src)
  frac = src - base
  base = base.astype(jnp.int32)
  out = 0.0
  for dy in (0, 1):
    for dx in (0, 1):
      r, c = base[..., 0] + dy, base[..., 1] + dx
      ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
      v = jnp.where(ok[..., None], img[jnp.clip(r, 0, h - 1), jnp.clip(c, 0, w - 1)], fill)
      wt = (frac[..., 0] if dy else 1 - frac[..., 0]) * (frac[..., 1] if dx else 1 - frac[..., 1])
      out = out + wt[..., None] * v
  return out.astype(img.dtype)


def rotation(degrees):
  """[2, 2] source-from-output matrix of a counter-clockwise rotation (90 on a square = rot90)."""
  t = jnp.deg2rad(degrees)
  cos, sin = jnp.cos(t), jnp.sin(t)
  return jnp.stack([jnp.stack([cos, sin]), jnp.stack([-sin, cos])])


def rotate(img, degrees, fill):
  """Counter-clockwise rotation by `degrees` about the centre."""
  return affine(img, rotation(jnp.asarray(degrees, jnp.float32)), jnp.zeros(2), fill)


def _shear(axis):
  # shear_x (axis 1): col_src = col + v row; shear_y: row_src = row + v col
  return lambda m, s, hw: (jnp.eye(2).at[axis, 1 - axis].set(0.3 * s * m), jnp.zeros(2))


def _translate(axis):
  return lambda m, s, hw: (jnp.eye(2), jnp.zeros(2).at[axis].set(-0.3 * s * m * hw[axis]))


# name -> (m, s, (H, W)) -> (matrix [2, 2], shift [2]) of `affine`: the policy composes one
# resampling per op slot from these instead of running every geometric op under vmap.
GEOMETRIC: dict[str, Callable] = {
    'rotate': lambda m, s, hw: (rotation(30.0 * s * m), jnp.zeros(2)),
    'shear_x': _shear(1),
    'shear_y': _shear(0),
    'translate_x': _translate(1),
    'translate_y': _translate(0),
}


def _enhance(degenerate):
  return lambda img, m, s, fill: _blend(img, degenerate(img), 1.0 + 0.9 * s * m)


def _geometric(name):
  return lambda img, m, s, fill: affine(img, *GEOMETRIC[name](m, s, img.shape[:2]), fill)


# name -> op(img [H, W, C], m in [0, 1], s in {-1, 1}, fill) -> img
OPS: dict[str, Callable] = {
    'identity': lambda img, m, s, fill: img,
    'autocontrast': lambda img, m, s, fill: autocontrast(img),
    'equalize': lambda img, m, s, fill: equalize(img),
    'brightness': _enhance(jnp.zeros_like),
    'color': _enhance(lambda img: jnp.broadcast_to(_gray(img), img.shape)),
    'contrast': _enhance(lambda img: jnp.full_like(img, jnp.mean(_gray(img)))),
    'sharpness': _enhance(_smooth),
    'posterize': lambda img, m, s, fill: posterize(img, 8.0 - jnp.round(4.0 * m)),
    'solarize': lambda img, m, s, fill: jnp.where(img >= (1.0 - m) * 256.0 / 255.0, 1.0 - img, img),
    **{name: _geometric(name) for name in GEOMETRIC},
}
MAGNITUDE_FREE = ('identity', 'autocontrast', 'equalize')


def _check_ops(ops):
  names = list(OPS) if ops is None else ops
  if isinstance(names, str) or not isinstance(names, Sequence) or not names:
    raise UserError(f"augment 'randaugment': ops={ops!r} must be a non-empty list of op names "
                    f"from {', '.join(OPS)}")
  unknown = [n for n in names if n not in OPS]
  if unknown:
    raise UserError(f"augment 'randaugment': unknown op {unknown[0]!r}; ops: {', '.join(OPS)}")
  return tuple(names)


def make(*, num_ops: int = 2, magnitude: float | None = None, ops: Sequence[str] | None = None,
         cutout: int | float = 0.5, fill: float = 0.5,
         field: str = 'x') -> Callable[[jax.Array, dict], dict]:
  """fn(rng, batch): RandAugment (+ cutout) of each image of batch[field] ([B, H, W, C])."""
  num_ops = augment.whole('randaugment', 'num_ops', num_ops, 0, 16)
  if magnitude is not None:
    magnitude = augment.number('randaugment', 'magnitude', magnitude, 0.0, 1.0)
  names = _check_ops(ops)
  cutout = augment.pixels('randaugment', 'cutout', cutout)
  fill = augment.number('randaugment', 'fill', fill, 0.0, 1.0)
  identity = lambda img, m, s: img
  pixel = [identity if n in GEOMETRIC else functools.partial(OPS[n], fill=fill) for n in names]
  geometric = any(n in GEOMETRIC for n in names)

  eye = lambda m, s, hw: (jnp.eye(2), jnp.zeros(2))
  matrices = [GEOMETRIC.get(n, eye) for n in names]

  def one(img, idx, mag, sign):
    """img [H, W, C]; idx, mag, sign [num_ops]: op slot i is names[idx[i]] at (mag[i], sign[i])."""
    def slot(i, img):
      if geometric:  # one resampling per slot; the identity affine is exact on the pixel grid
        matrix, shift = jax.lax.switch(idx[i], matrices, mag[i], sign[i], img.shape[:2])
        img = affine(img, matrix, shift, fill)
      return jax.lax.switch(idx[i], pixel, img, mag[i], sign[i])
    # a loop, not unrolled: XLA:CPU fuses slot 2's four gathers with slot 1's (16x the reads)
    return jax.lax.fori_loop(0, num_ops, slot, img)

  def fn(rng: jax.Array, batch: dict) -> dict:
    x = augment.images_of('randaugment', batch, field)
    b, h, w, _ = x.shape
    k_ops, k_cut = jax.random.split(rng)
    u = augment.flat(jax.random.uniform, k_ops, (3, b, num_ops))  # one draw: op, magnitude, sign
    idx = jnp.minimum(jnp.floor(u[0] * len(names)), len(names) - 1).astype(jnp.int32)
    mag = u[1] if magnitude is None else jnp.full((b, num_ops), magnitude)
    sign = jnp.where(u[2] < 0.5, 1.0, -1.0)
    out = jax.vmap(one)(x, idx, mag, sign) if num_ops else x                # [B, H, W, C]
    cut = augment.resolve(cutout, h)
    if cut:
      out = cutout_lib.cut(out, cutout_lib.centres(k_cut, b, h, w), cut, fill)
    return augment.replaced(batch, **{field: out.astype(x.dtype)})
  return fn
