"""BERT encoder (Devlin et al., 2019), including all-MiniLM-L6-v2 (Wang et al., 2020, MiniLM;
Reimers & Gurevych, 2019, Sentence-BERT mean pooling).

Post-LayerNorm transformer with learned absolute positions and exact-GELU MLP. As a classifier it
mean-pools the real tokens by default (how all-MiniLM-L6-v2 makes sentence embeddings) or takes
[CLS]. Imports Hugging Face BERT checkpoints (`BertModel`, `BertFor*`).

Config: dict(name='bert')                            all-MiniLM-L6-v2 shipped with w2s (pretrained)
        dict(name='bert', size='tiny')               random init
        dict(name='bert', pretrained='/ckpt/bert-base-uncased', pooling='cls')
        dict(name='bert', lora=dict(rank=8))              LoRA adapters (w2s.models.lora)
"""
import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.models import classifier
from w2s.models import hf_import
from w2s.models import lora as lora_lib
from w2s.models.attention import INIT, Attention, as_dtype
from w2s.models.hf_import import Entry, transpose


@dataclasses.dataclass(frozen=True)
class Config:
  vocab_size: int = 30522
  max_len: int = 512
  type_vocab_size: int = 2
  d_model: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  ln_eps: float = 1e-12
  dropout: float = 0.1


def _size(d, layers, heads):
  return dict(d_model=d, num_layers=layers, num_heads=heads, mlp_dim=4 * d)


SIZES = {
    'tiny': _size(64, 2, 4),
    'minilm-l6': _size(384, 6, 12),  # all-MiniLM-L6-v2 (pretrained='minilm' loads its weights)
    'base': _size(768, 12, 12),
    'large': _size(1024, 24, 16),
}


class Layer(nn.Module):
  """x = ln(x + attn(x)); x = ln(x + mlp(x))."""
  config: Config
  dtype: jnp.dtype = jnp.float32
  lora: lora_lib.LoraConfig | None = None

  @nn.compact
  def __call__(self, x, key_mask, deterministic):
    c = self.config
    drop = lambda y: nn.Dropout(c.dropout)(y, deterministic=deterministic)
    ln = lambda name: nn.LayerNorm(c.ln_eps, dtype=self.dtype, name=name)
    y, _ = Attention(c.num_heads, c.num_heads, c.d_model // c.num_heads, causal=False,
                     dropout=c.dropout, deterministic=deterministic, dtype=self.dtype,
                     lora=self.lora, name='attention')(x, key_mask=key_mask)
    x = ln('attention_ln')(x + drop(y))
    dense = lambda n, name: lora_lib.dense(n, dtype=self.dtype, kernel_init=INIT, name=name,
                                           lora=self.lora, target='mlp',
                                           deterministic=deterministic)
    y = nn.gelu(dense(c.mlp_dim, 'intermediate')(x), approximate=False)
    y = dense(c.d_model, 'output')(y)
    return ln('output_ln')(x + drop(y))


class Bert(nn.Module):
  """Backbone: ids [B, T] -> last hidden states [B, T, D] (see classifier.py)."""
  config: Config
  dtype: jnp.dtype = jnp.float32
  remat: bool = False
  lm_head: bool = False  # an encoder has none
  lora: lora_lib.LoraConfig | None = None

  @nn.compact
  def __call__(self, input_ids, attention_mask, *, positions=None, cache=None, cache_index=0,
               token_type_ids=None, train=False):
    c = self.config
    if cache is not None:
      raise ValueError('BERT is an encoder: it has no KV cache and cannot decode')
    classifier.check_length(input_ids, cache, self.config.max_len)
    if positions is None:
      positions = classifier.default_positions(attention_mask)
    embed = lambda n, name: nn.Embed(n, c.d_model, embedding_init=INIT, dtype=self.dtype, name=name)
    x = (embed(c.vocab_size, 'word_embeddings')(input_ids)
         + embed(c.max_len, 'position_embeddings')(positions)
         + embed(c.type_vocab_size, 'token_type_embeddings')(
             jnp.zeros_like(input_ids) if token_type_ids is None else token_type_ids))
    x = nn.LayerNorm(c.ln_eps, dtype=self.dtype, name='embeddings_ln')(x)
    x = nn.Dropout(c.dropout)(x, deterministic=not train)
    layer = nn.remat(Layer, static_argnums=(3,)) if self.remat else Layer
    for i in range(c.num_layers):
      x = layer(c, dtype=self.dtype, lora=self.lora, name=f'layer_{i}')(x, attention_mask,
                                                                       not train)
    return x, None


def create(*, num_classes: int, size: str | None = None, pretrained: str | None = None,
           pooling: str = 'mean', dtype: str = 'float32', remat: bool = False,
           head_bias: bool = False, frozen: bool = False, lm_head: bool = False,
           lora: dict | None = None, **arch) -> classifier.TextClassifier:
  """BERT classifier; with neither size nor pretrained, the embedded all-MiniLM-L6-v2.

  Args:
    num_classes: C.
    size: a key of SIZES; None with `pretrained` takes the checkpoint's config.json.
    pretrained: 'minilm' (shipped with w2s) or a Hugging Face directory; loaded by
      `hf_import.init_params`.
    pooling: 'mean' (default, Sentence-BERT) or 'cls'.
    dtype: compute dtype ('float32' or 'bfloat16'); params stay float32.
    remat: rematerialise each layer in the backward pass (nn.remat).
    lora: dict(rank=8, alpha=16, targets=('attention', 'mlp'), dropout=0.0) adds LoRA adapters
      (w2s.models.lora); None (default) is the plain model.
    arch: Config field overrides (e.g. num_layers=2, dropout=0.0).
  """
  if lm_head:
    raise UserError('bert: an encoder has no LM head; drop lm_head=True')
  if size is None and pretrained is None:
    pretrained = 'minilm'
  config, path = classifier.make_config('bert', Config, SIZES, size=size, pretrained=pretrained,
                                        from_hf=config_from_hf, overrides=arch)
  backbone = Bert(config, dtype=as_dtype(dtype), remat=remat,
                  lora=lora_lib.for_model('bert', lora, frozen=frozen))
  return classifier.TextClassifier(backbone, num_classes, classifier.check_pooling('bert', pooling),
                                   head_bias=head_bias, frozen=frozen, pretrained=path,
                                   truncate_layers=arch.get('layers') is not None)


def config_from_hf(path: str, hf: dict) -> dict:
  """Config fields from a Hugging Face BertConfig dict."""
  hf_import.check_fields(path, hf, {'hidden_act': 'gelu', 'position_embedding_type': 'absolute'})
  return dict(vocab_size=hf['vocab_size'], max_len=hf['max_position_embeddings'],
              type_vocab_size=hf.get('type_vocab_size', 2), d_model=hf['hidden_size'],
              num_layers=hf['num_hidden_layers'], num_heads=hf['num_attention_heads'],
              mlp_dim=hf['intermediate_size'], ln_eps=hf.get('layer_norm_eps', 1e-12),
              dropout=hf.get('hidden_dropout_prob', 0.1))


def _dense(path: tuple[str, ...], name: str) -> list[Entry]:
  return [Entry(path + ('kernel',), name + '.weight', transpose),
          Entry(path + ('bias',), name + '.bias')]


def _ln(path: tuple[str, ...], name: str) -> list[Entry]:
  return [Entry(path + ('scale',), name + '.weight'), Entry(path + ('bias',), name + '.bias')]


def _entries(c: Config) -> list[Entry]:
  e = [Entry((n, 'embedding'), f'embeddings.{n}.weight')
       for n in ('word_embeddings', 'position_embeddings', 'token_type_embeddings')]
  e += _ln(('embeddings_ln',), 'embeddings.LayerNorm')
  for i in range(c.num_layers):
    l, p = f'layer_{i}', f'encoder.layer.{i}.'
    for ours, theirs in (('q', 'query'), ('k', 'key'), ('v', 'value')):
      e += _dense((l, 'attention', ours), p + 'attention.self.' + theirs)
    e += _dense((l, 'attention', 'o'), p + 'attention.output.dense')
    e += _ln((l, 'attention_ln'), p + 'attention.output.LayerNorm')
    e += _dense((l, 'intermediate'), p + 'intermediate.dense')
    e += _dense((l, 'output'), p + 'output.dense')
    e += _ln((l, 'output_ln'), p + 'output.LayerNorm')
  return e


def _ignored(name: str) -> bool:
  # buffers, the NSP pooler, and the heads of BertFor* checkpoints are not part of the encoder
  return (name.endswith('position_ids') or name.startswith(('pooler.', 'cls.', 'classifier.'))
          or not name.startswith(('embeddings.', 'encoder.')))


def load_pretrained(path: str, *, config: Config | None = None, lm_head: bool = False,
                    place=None, truncate: bool = False):
  """Hugging Face BERT directory (or 'minilm') -> (Config, backbone params in the layout of `Bert`).

  `config` defaults to the checkpoint's own; a checkpoint that does not fit it is a UserError
  naming the first mismatching tensor. `place`: see `hf_import.convert` (tensors straight into
  device shards).
  """
  del lm_head
  return hf_import.load_backbone(path, config=config, config_cls=Config,
                                 config_from_hf=config_from_hf, make_backbone=Bert,
                                 prefix='bert.', entries=_entries, ignore=_ignored,
                                 place=place, truncate=truncate)
