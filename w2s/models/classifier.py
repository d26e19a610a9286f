"""Classification head over a text backbone, and the size-preset / pretrained plumbing of `create`.

The head follows OpenAI's weak-to-strong release (Burns et al., 2023): a linear layer initialised
to zero (no bias by default) on pooled backbone features, so a fresh student starts at uniform
predictions. Decoders pool the last real token, found from the attention mask (GPT-2 pads with its
eos id, so the id itself can never tell padding apart); encoders mean-pool real tokens
(Sentence-BERT, Reimers & Gurevych 2019, the pooling of all-MiniLM-L6-v2) or take [CLS].

A backbone module (BERT, GPT-2, Llama) provides:
  config                         frozen dataclass of the architecture,
  lm_head                        bool, whether an untied LM head is part of its params,
  lora                           w2s.models.lora.LoraConfig or None (adapters on its kernels),
  __call__(input_ids, attention_mask, *, positions=None, cache=None, cache_index=0,
           token_type_ids=None, train=False) -> (hidden [B, T, D], cache),
  lm_logits(hidden)              -> [B, T, V] (decoders only).
"""
import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.models import hf_import
from w2s.models import lora as lora_lib

POOLINGS = ('last', 'mean', 'cls')


def pool(hidden: jax.Array, mask: jax.Array, pooling: str) -> jax.Array:
  """hidden [B, T, D], mask [B, T] (1 = real token) -> [B, D] float32.

  'last': the last real token (works for right and left padding); 'mean': average of real
  tokens; 'cls': the first token.
  """
  hidden = hidden.astype(jnp.float32)
  mask = mask.astype(jnp.float32)
  if pooling == 'last':
    t = hidden.shape[1]
    last = t - 1 - jnp.argmax(mask[:, ::-1], axis=1)  # rows without real tokens: T - 1
    return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
  if pooling == 'mean':
    total = jnp.einsum('btd,bt->bd', hidden, mask)
    return total / jnp.maximum(mask.sum(axis=1, keepdims=True), 1.0)
  if pooling == 'cls':
    return hidden[:, 0]
  raise UserError(f'unknown pooling {pooling!r}; use one of {POOLINGS}')


# Megatron-style tensor-parallel rules (Shoeybi et al. 2019) shared by bert, gpt2, llama/Qwen2/
# Mistral and gpt_neox, whose layers use the same names: attention q/k/v and the MLP's up
# projections split by output column over 'tensor', the attention output and the MLP's down
# projection by input row, so each block needs one all-reduce. LoRA factors follow their kernel's
# split dimension. Everything else (embeddings, norms, the head) is replicated under
# partition='tp' and FSDP-sharded under 'fsdp+tp' (w2s.partition).
_UP = r'(intermediate|c_fc|gate_proj|up_proj|dense_h_to_4h)'
_DOWN = r'(output|c_proj|down_proj|dense_4h_to_h)'
TP_RULES = (
    (r'/(q|k|v)/(kernel|lora_b)$', (None, 'tensor')),
    (r'/(q|k|v)/bias$', ('tensor',)),
    (r'/o/(kernel|lora_a)$', ('tensor', None)),
    (rf'/{_UP}/(kernel|lora_b)$', (None, 'tensor')),
    (rf'/{_UP}/bias$', ('tensor',)),
    (rf'/{_DOWN}/(kernel|lora_a)$', ('tensor', None)),
)


class TextClassifier(nn.Module):
  """Logits [B, C] of a linear head on pooled backbone features.

  Attributes:
    backbone: the family's transformer (see the module docstring).
    num_classes: C.
    pooling: 'last' (decoders), 'mean' or 'cls' (encoders).
    head_bias: add a (zero-initialised) bias to the head; the release has none.
    frozen: stop gradients at the features (the release's linear_probe without caching).
    pretrained: checkpoint directory that `hf_import.init_params` loads the backbone from.
    truncate_layers: the backbone keeps only the checkpoint's first `num_layers` layers (the
      `layers=k` option: a smaller pretrained model of the same family); the importer then
      skips the deeper layers' tensors instead of refusing them.
  """
  backbone: nn.Module
  num_classes: int
  pooling: str = 'last'
  head_bias: bool = False
  frozen: bool = False
  pretrained: str | None = None
  truncate_layers: bool = False

  @property
  def partition_rules(self):
    """Tensor-parallel rules for `train.partition='tp'` / `'fsdp+tp'` (see TP_RULES)."""
    return TP_RULES

  def features(self, batch: dict, *, train: bool = False) -> jax.Array:
    """Pooled backbone features [B, D] float32 of batch['input_ids'] / ['attention_mask'] (and
    ['token_type_ids'] of sentence pairs, read by BERT)."""
    mask = batch['attention_mask']
    hidden, _ = self.backbone(batch['input_ids'], mask, token_type_ids=batch.get('token_type_ids'),
                              train=train)
    feats = pool(hidden, mask, self.pooling)
    return jax.lax.stop_gradient(feats) if self.frozen else feats

  @nn.compact
  def __call__(self, batch: dict, *, train: bool = False) -> jax.Array:
    feats = self.features(batch, train=train)
    head = nn.Dense(self.num_classes, use_bias=self.head_bias, kernel_init=nn.initializers.zeros,
                    name='head')
    return head(feats)

  @nn.nowrap
  def trainable_mask(self, params) -> Any:
    """With LoRA, a bool tree shaped like `params` (the tree under 'params'; arrays or
    ShapeDtypeStructs): True for the adapters ('lora_a', 'lora_b') and the classification head
    'head', False for the frozen rest. None without LoRA (every parameter trains).

    For the optimizer: optax.multi_transform({'train': tx, 'freeze': optax.set_to_zero()},
    jax.tree.map(lambda t: 'train' if t else 'freeze', mask)).
    """
    if getattr(self.backbone, 'lora', None) is None:
      return None
    return lora_lib.trainable(params)

  def lm(self, input_ids, key_mask, *, positions=None, cache=None, cache_index=0):
    """Next-token logits [B, T, V] float32 (+ updated KV cache); used by w2s.models.decoding."""
    hidden, cache = self.backbone(input_ids, key_mask, positions=positions, cache=cache,
                                  cache_index=cache_index)
    return self.backbone.lm_logits(hidden).astype(jnp.float32), cache


def default_positions(mask: jax.Array) -> jax.Array:
  """Position ids [B, T] counting real tokens only: arange for right padding, shifted for left."""
  return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1, 0)


def run_blocks(blocks, x, attention_mask, positions, cache, cache_index, train: bool):
  """A decoder's layers in order: (hidden [B, T, D], per-layer KV caches or None). Each block is
  called as block(x, key_mask, positions, layer_cache, cache_index, deterministic)."""
  new_cache = []
  for i, block in enumerate(blocks):
    x, layer_cache = block(x, attention_mask, positions, None if cache is None else cache[i],
                           cache_index, not train)
    new_cache.append(layer_cache)
  return x, (new_cache if cache is not None else None)


def check_length(input_ids, cache, max_len: int) -> None:
  """UserError when a sequence is longer than a learned position table (lookups would clamp)."""
  t = input_ids.shape[1] if cache is None else cache[0]['k'].shape[1]
  if t > max_len:
    raise UserError(f'sequences of {t} tokens exceed the model\'s {max_len} learned positions; '
                    f'set the tokenizer max_length to at most {max_len}')


def make_config(family: str, config_cls, sizes: dict[str, dict], *, size: str | None,
                pretrained: str | None, from_hf: Callable[[str, dict], dict],
                overrides: dict[str, Any]):
  """(architecture config, checkpoint dir or None) from a size preset or a checkpoint's config.json.

  With `pretrained` and no `size`, the architecture is the checkpoint's; with both, the preset is
  used and a mismatching checkpoint fails at load time naming the first bad tensor. `overrides`
  set single fields (e.g. num_layers=2, dropout=0.0); `layers=k` keeps the first k layers of
  the pretrained checkpoint (a truncation: 1 <= k <= its depth).
  """
  overrides = dict(overrides)
  layers = overrides.pop('layers', None)
  fields = {f.name for f in dataclasses.fields(config_cls)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise UserError(f'{family}: unknown hparam(s) {unknown}; architecture fields are '
                    f'{sorted(fields)}')
  path = hf_import.resolve(pretrained) if pretrained else None
  if size is not None:
    if size not in sizes:
      raise UserError(f'{family}: unknown size {size!r}; known sizes: {", ".join(sizes)}')
    base = dict(sizes[size])
  elif path is not None:
    hf = hf_import.read_config(path)
    hf_import.check_family(family, path, hf)
    base = from_hf(path, hf)
  else:
    raise UserError(f'{family}: give size= (one of {", ".join(sizes)}) or pretrained=<HF directory>')
  if layers is not None:
    depth = base['num_layers']
    if path is None or size is not None:
      raise UserError(f'{family}: layers={layers} truncates a pretrained checkpoint; give '
                      'pretrained=<dir or minilm> without size')
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= depth:
      raise UserError(f'{family}: layers={layers!r} must be an int in [1, {depth}] (the '
                      f'checkpoint has {depth} layers)')
    if 'num_layers' in overrides:
      raise UserError(f'{family}: give layers= or num_layers=, not both')
    base['num_layers'] = layers
  return config_cls(**{**base, **overrides}), path


def check_pooling(family: str, pooling: str) -> str:
  if pooling not in POOLINGS:
    raise UserError(f'{family}: unknown pooling {pooling!r}; use one of {POOLINGS}')
  return pooling
