"""A box of every image: `dict(name='crop', size=14)` (centred) or `box=(top, left, h, w)`.

With `keep_shape=True` (default) the pixels outside the box are set to 0 and the image keeps its
H x W, so the same model takes the view; `keep_shape=False` returns the [N, h, w, C] crops. A
centred box of an odd margin puts the extra pixel below / right of the box: top = (H - h) // 2.
The weak supervisor then sees only part of each image (e.g. the centre of a digit).
"""
import numpy as np

from w2s import views
from w2s.errors import UserError


def apply(raw: dict, *, input_kind: str, size=None, box=None, keep_shape: bool = True) -> dict:
  """Cropped images of `raw` ('image' uint8 [N, H, W, C]).

  Args:
    raw: Examples with 'image'; other fields pass through.
    input_kind: must be 'image'.
    size: side of a centred box, an int or an (h, w) pair; or
    box: (top, left, height, width) in pixels (exactly one of size / box).
    keep_shape: zero outside the box (True) or return just the box.
  """
  x = views.images_of('crop', raw, input_kind)
  _, height, width, _ = x.shape
  if (size is None) == (box is None):
    raise UserError("view 'crop': give exactly one of size=<side or (h, w)> (a centred box) or "
                    'box=(top, left, height, width)')
  if size is not None:
    h, w = views.pair('crop', 'size', size)
    top, left = (height - h) // 2, (width - w) // 2
  else:
    if not isinstance(box, (list, tuple)) or len(box) != 4:
      raise UserError(f"view 'crop': box={box!r} must be (top, left, height, width)")
    top, left = (views.whole('crop', 'box top/left', v, minimum=0) for v in box[:2])
    h, w = (views.whole('crop', 'box height/width', v) for v in box[2:])
  if top < 0 or left < 0 or top + h > height or left + w > width:
    raise UserError(f"view 'crop': the box (top={top}, left={left}, height={h}, width={w}) does "
                    f'not fit the {height}x{width} images; make it smaller')
  if keep_shape:
    out = np.zeros_like(x)
    out[:, top:top + h, left:left + w] = x[:, top:top + h, left:left + w]
  else:
    out = np.ascontiguousarray(x[:, top:top + h, left:left + w])
  return views.replaced(raw, 'image', out)
