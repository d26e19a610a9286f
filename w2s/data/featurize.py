"""Raw Examples -> batch-ready numpy fields (the host side of the Batch contract in common docs).

  text:   'input_ids', 'attention_mask' int32 [N, L] (+ 'token_type_ids' for pair datasets), via
          `w2s.data.text.tokenize`; 'text_pair' (when present) is encoded as the second segment.
  image:  'x' float32 [N, H, W, C] = uint8 pixels / 255, in [0, 1].
  vector: 'x' float32 [N, D] unchanged.
'id' and 'label' pass through (int64 [N]); other raw fields ('text', 'group', ...) are dropped.
The batch pipeline (`w2s.data.pipeline`) turns labels into one-hot floats and adds 'mask'.
"""
import numpy as np

from w2s.data import base
from w2s.data import text as text_lib
from w2s.errors import UserError


def featurize(dataset: base.Dataset, examples: base.Examples, *, tokenizer=None,
              max_length: int = 128, truncation: str = 'right') -> dict[str, np.ndarray]:
  """Featurizes `examples` (one split of `dataset`) for the model.

  Args:
    dataset: gives the input kind.
    examples: Examples with 'id', 'label' and the input field.
    tokenizer: path to a tokenizer.json (or its directory), or a `tokenizers.Tokenizer`;
      required for text datasets.
    max_length: L, tokens per text example (longer ones are truncated and counted in the log).
    truncation: 'right' keeps the first L tokens, 'left' the last L.
  """
  out = {'id': np.asarray(examples['id'], np.int64), 'label': np.asarray(examples['label'])}
  kind = dataset.input_kind
  if kind == 'text':
    if tokenizer is None:
      raise UserError(f'dataset {dataset.name!r} is text: pass tokenizer= (a tokenizer.json path, '
                      'e.g. w2s.assets.minilm_dir())')
    pairs = examples.get('text_pair')
    out.update(text_lib.tokenize(list(examples['text']), tokenizer, max_length,
                                 None if pairs is None else list(pairs), truncation))
  elif kind == 'image':
    out['x'] = np.asarray(examples['image'], np.float32) / np.float32(255.0)
  elif kind == 'vector':
    out['x'] = np.asarray(examples['x'], np.float32)
  else:
    raise UserError(f'dataset {dataset.name!r} has unknown input_kind {kind!r}')
  return out
