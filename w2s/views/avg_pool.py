"""Average-pooled images: a low-resolution view of every image (`dict(name='avg_pool', size=4)`).

Each `size` x `size` block of pixels (per channel) becomes its mean, rounded half up to uint8.
With `resize=True` (default) the pooled image is upsampled back to H x W by repeating each value
over its block, so a model built for the full images takes the view unchanged; `resize=False`
returns the small [N, ceil(H/size), ceil(W/size), C] images. When `size` does not divide H (or
W), the blocks of the last row (column) are smaller and average only the pixels they cover.

A coarse view of the input as a weak supervisor's handicap: in the spirit of the "weak
supervisor sees less" settings of Burns et al. (2023), "Weak-to-Strong Generalization".
"""
import numpy as np

from w2s import views


def apply(raw: dict, *, input_kind: str, size, resize: bool = True) -> dict:
  """Pooled images of `raw` ('image' uint8 [N, H, W, C]).

  Args:
    raw: Examples with 'image'; other fields pass through.
    input_kind: must be 'image'.
    size: block side in pixels, an int or an (h, w) pair.
    resize: upsample back to H x W (True) or return the pooled images.
  """
  x = views.images_of('avg_pool', raw, input_kind)
  sh, sw = views.pair('avg_pool', 'size', size)
  n, h, w, c = x.shape
  gh, gw = -(-h // sh), -(-w // sw)  # pooled grid, ceil
  padded = x
  if (gh * sh, gw * sw) != (h, w):
    padded = np.pad(x, ((0, 0), (0, gh * sh - h), (0, gw * sw - w), (0, 0)))
  sums = padded.reshape(n, gh, sh, gw, sw, c).sum(axis=(2, 4), dtype=np.int64)  # [N, gh, gw, C]
  counts = np.pad(np.ones((h, w), np.int64), ((0, gh * sh - h), (0, gw * sw - w)))
  counts = counts.reshape(gh, sh, gw, sw).sum(axis=(1, 3))[None, :, :, None]  # [1, gh, gw, 1]
  pooled = ((2 * sums + counts) // (2 * counts)).astype(np.uint8)  # mean, rounded half up
  if resize:
    pooled = np.repeat(np.repeat(pooled, sh, axis=1), sw, axis=2)[:, :h, :w]
  return views.replaced(raw, 'image', np.ascontiguousarray(pooled))
