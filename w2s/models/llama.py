"""Llama / Qwen2 / Mistral decoders (Touvron et al., 2023, "LLaMA"; Qwen Team, 2024, "Qwen2
Technical Report"; Jiang et al., 2023, "Mistral 7B").

Pre-RMSNorm transformer with rotary positions (Su et al., 2021), grouped-query attention (Ainslie
et al., 2023) and a SwiGLU MLP (Shazeer, 2020); the LM head is tied to the embedding or separate.
Qwen2 is the same network with biases on q/k/v (its presets are the `qwen2*` sizes); Mistral is
Llama with sliding-window attention (`sliding_window`: each token sees itself and the W - 1
before it; None, or W >= the sequence length, is plain Llama). As a classifier it pools the last
real token, like the Qwen students of the weak-to-strong release. Imports Hugging Face
`LlamaForCausalLM` / `Qwen2ForCausalLM` / `MistralForCausalLM` checkpoints (and their bare models).

Config: dict(name='llama', size='qwen2-0.5b')            random init
        dict(name='llama', pretrained='/ckpt/Qwen2.5-0.5B', dtype='bfloat16', remat=True)
        dict(name='llama', pretrained='/ckpt/Qwen2.5-0.5B', lora=dict(rank=8))  (w2s.models.lora)
        dict(name='llama', pretrained='mistralai/Mistral-7B-v0.1')   Mistral, by hub id
"""
import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.models import classifier
from w2s.models import hf_import
from w2s.models import lora as lora_lib
from w2s.models.attention import INIT, Attention, RMSNorm, as_dtype, rope_frequencies
from w2s.models.hf_import import Entry, transpose


@dataclasses.dataclass(frozen=True)
class Config:
  vocab_size: int = 32000
  max_len: int = 4096  # informational: rotary positions have no table
  d_model: int = 4096
  num_layers: int = 32
  num_heads: int = 32
  num_kv_heads: int = 32
  head_dim: int | None = None  # None: d_model // num_heads
  mlp_dim: int = 11008
  rms_eps: float = 1e-5
  rope_theta: float = 10000.0
  rope_scaling: tuple[tuple[str, float], ...] | None = None  # Llama 3.1 'llama3' parameters
  qkv_bias: bool = False  # Qwen2: True
  out_bias: bool = False
  tie_embeddings: bool = False
  sliding_window: int | None = None  # Mistral: attend to the last W tokens; None: all
  dropout: float = 0.0

  @property
  def dh(self) -> int:
    return self.head_dim or self.d_model // self.num_heads

  @property
  def kv_cache_shape(self):
    """(layers, kv heads, head dim) of the decoding cache."""
    return self.num_layers, self.num_kv_heads, self.dh


def _llama3(factor):
  return (('factor', factor), ('high_freq_factor', 4.0), ('low_freq_factor', 1.0),
          ('original_max_position_embeddings', 8192))


def _qwen(d, mlp, layers, heads, kv, tied, vocab=151936):
  return dict(vocab_size=vocab, max_len=32768, d_model=d, num_layers=layers, num_heads=heads,
              num_kv_heads=kv, mlp_dim=mlp, rms_eps=1e-6, rope_theta=1e6, qkv_bias=True,
              tie_embeddings=tied)


def _llama(d, mlp, layers, heads, kv, tied, scaling, vocab=128256, theta=500000.0):
  return dict(vocab_size=vocab, max_len=131072, d_model=d, num_layers=layers, num_heads=heads,
              num_kv_heads=kv, mlp_dim=mlp, rms_eps=1e-5, rope_theta=theta, rope_scaling=scaling,
              tie_embeddings=tied)


SIZES = {
    'tiny': dict(vocab_size=512, max_len=256, d_model=64, num_layers=2, num_heads=4, num_kv_heads=2,
                 mlp_dim=128, rms_eps=1e-6),
    'qwen2-tiny': dict(_qwen(64, 128, 2, 4, 2, True), vocab_size=512, max_len=256),
    'qwen2-0.5b': _qwen(896, 4864, 24, 14, 2, True),  # = Qwen2.5-0.5B
    'qwen2-1.5b': _qwen(1536, 8960, 28, 12, 2, True),  # = Qwen2.5-1.5B
    'qwen2.5-3b': _qwen(2048, 11008, 36, 16, 2, True),
    'qwen2-7b': _qwen(3584, 18944, 28, 28, 4, False, vocab=152064),  # = Qwen2.5-7B
    'llama-3.2-1b': dict(_llama(2048, 8192, 16, 32, 8, True, _llama3(32.0)), head_dim=64),
    'llama-3.2-3b': dict(_llama(3072, 8192, 28, 24, 8, True, _llama3(32.0)), head_dim=128),
    'llama-3.1-8b': _llama(4096, 14336, 32, 32, 8, False, _llama3(8.0)),
    'llama-2-7b': dict(_llama(4096, 11008, 32, 32, 32, False, None, vocab=32000, theta=1e4),
                       max_len=4096),
    'mistral-tiny': dict(vocab_size=512, max_len=256, d_model=64, num_layers=2, num_heads=4,
                         num_kv_heads=2, mlp_dim=128, rms_eps=1e-5, sliding_window=8),
    'mistral-7b': dict(vocab_size=32000, max_len=32768, d_model=4096, num_layers=32, num_heads=32,
                       num_kv_heads=8, mlp_dim=14336, rms_eps=1e-5, sliding_window=4096),  # v0.1
}


class Block(nn.Module):
  """x + attn(rmsnorm(x)); x + swiglu(rmsnorm(x))."""
  config: Config
  dtype: jnp.dtype = jnp.float32
  lora: lora_lib.LoraConfig | None = None

  @nn.compact
  def __call__(self, x, key_mask, positions, cache, cache_index, deterministic):
    c = self.config
    drop = lambda y: nn.Dropout(c.dropout)(y, deterministic=deterministic)
    dense = lambda n, name: lora_lib.dense(n, use_bias=False, dtype=self.dtype, kernel_init=INIT,
                                           name=name, lora=self.lora, target='mlp',
                                           deterministic=deterministic)
    inv_freq = rope_frequencies(c.dh, c.rope_theta, dict(c.rope_scaling or ()))
    y, cache = Attention(c.num_heads, c.num_kv_heads, c.dh, causal=True, qkv_bias=c.qkv_bias,
                         out_bias=c.out_bias, inv_freq=tuple(inv_freq.tolist()),
                         sliding_window=c.sliding_window,
                         dropout=c.dropout, deterministic=deterministic, dtype=self.dtype,
                         lora=self.lora, name='self_attn')(
                             RMSNorm(c.rms_eps, self.dtype, name='input_layernorm')(x),
                             key_mask=key_mask, positions=positions, cache=cache,
                             cache_index=cache_index)
    x = x + drop(y)
    h = RMSNorm(c.rms_eps, self.dtype, name='post_attention_layernorm')(x)
    y = nn.silu(dense(c.mlp_dim, 'gate_proj')(h)) * dense(c.mlp_dim, 'up_proj')(h)
    return x + drop(dense(c.d_model, 'down_proj')(y)), cache


class Llama(nn.Module):
  """Backbone: ids [B, T] -> final-RMSNorm hidden states [B, T, D] (see classifier.py).

  `lm_head=True` adds the untied LM head ('unembed', [D, V]) to the params, for decoding; a
  classifier does not need it (it would add V x D params and their optimizer state).
  """
  config: Config
  dtype: jnp.dtype = jnp.float32
  remat: bool = False
  lm_head: bool = False
  lora: lora_lib.LoraConfig | None = None

  def setup(self):
    c = self.config
    self.embed_tokens = nn.Embed(c.vocab_size, c.d_model, embedding_init=INIT, dtype=self.dtype)
    self.drop = nn.Dropout(c.dropout)
    block = nn.remat(Block, static_argnums=(6,)) if self.remat else Block
    self.layers = [block(c, dtype=self.dtype, lora=self.lora) for _ in range(c.num_layers)]
    self.norm = RMSNorm(c.rms_eps, self.dtype)
    if self.lm_head and not c.tie_embeddings:
      self.unembed = nn.Dense(c.vocab_size, use_bias=False, dtype=self.dtype, kernel_init=INIT)

  def __call__(self, input_ids, attention_mask, *, positions=None, cache=None, cache_index=0,
               token_type_ids=None, train=False):
    del token_type_ids  # segments are a BERT notion
    if positions is None:
      positions = classifier.default_positions(attention_mask)
    x = self.drop(self.embed_tokens(input_ids), deterministic=not train)
    x, new_cache = classifier.run_blocks(self.layers, x, attention_mask, positions, cache,
                                         cache_index, train)
    x = self.norm(x)
    if self.is_initializing() and self.lm_head:
      self.lm_logits(x[:, :1])  # creates the untied head's params
    return x, new_cache

  def lm_logits(self, hidden):
    """[B, T, D] -> [B, T, V] with the tied embedding or the untied head."""
    if self.config.tie_embeddings:
      return self.embed_tokens.attend(hidden)
    if not self.lm_head:
      raise UserError('llama: this checkpoint has an untied LM head; create the model with '
                      'lm_head=True to decode')
    return self.unembed(hidden)


def create(*, num_classes: int, size: str | None = None, pretrained: str | None = None,
           pooling: str = 'last', dtype: str = 'float32', remat: bool = False,
           head_bias: bool = False, frozen: bool = False, lm_head: bool = False,
           lora: dict | None = None, **arch) -> classifier.TextClassifier:
  """Llama / Qwen2 / Mistral classifier; `arch` overrides Config fields (e.g. num_layers=2).

  Args:
    num_classes: C.
    size: a key of SIZES ('tiny', 'qwen2-0.5b', 'llama-3.2-1b', 'mistral-7b', ...); None with
      `pretrained` takes the checkpoint's config.json.
    pretrained: Hugging Face directory or hub id ('org/name', w2s.models.hub); its weights are
      loaded by `hf_import.init_params`.
    pooling: 'last' (default) or 'mean'.
    dtype: compute dtype ('float32' or 'bfloat16'); params stay float32.
    remat: rematerialise each block in the backward pass (nn.remat).
    lm_head: include an untied LM head in the params (needed to decode untied checkpoints).
    lora: dict(rank=8, alpha=16, targets=('attention', 'mlp'), dropout=0.0) adds LoRA adapters
      (w2s.models.lora); None (default) is the plain model.
  """
  config, path = classifier.make_config('llama', Config, SIZES, size=size, pretrained=pretrained,
                                        from_hf=config_from_hf, overrides=arch)
  backbone = Llama(config, dtype=as_dtype(dtype), remat=remat, lm_head=lm_head,
                   lora=lora_lib.for_model('llama', lora, frozen=frozen))
  return classifier.TextClassifier(backbone, num_classes, classifier.check_pooling('llama', pooling),
                                   head_bias=head_bias, frozen=frozen, pretrained=path,
                                   truncate_layers=arch.get('layers') is not None)


def _rope(path: str, hf: dict) -> tuple[float, tuple | None]:
  """(theta, llama3 scaling) from transformers 4 (`rope_theta`, `rope_scaling`) or 5
  (`rope_parameters`) config files."""
  params = hf.get('rope_parameters') or dict(hf.get('rope_scaling') or {},
                                              rope_theta=hf.get('rope_theta', 10000.0))
  kind = params.get('rope_type', params.get('type', 'default'))
  if kind == 'default':
    return float(params['rope_theta']), None
  if kind == 'llama3':
    keys = ('factor', 'high_freq_factor', 'low_freq_factor', 'original_max_position_embeddings')
    return float(params['rope_theta']), tuple((k, float(params[k])) for k in keys)
  raise UserError(f'{path}/config.json: rope type {kind!r} is not supported (w2s implements '
                  "'default' and 'llama3')")


def config_from_hf(path: str, hf: dict) -> dict:
  """Config fields from a Hugging Face LlamaConfig / Qwen2Config / MistralConfig dict."""
  hf_import.check_fields(path, hf, {'model_type': ('llama', 'qwen2', 'mistral'),
                                    'hidden_act': 'silu', 'mlp_bias': False,
                                    'use_sliding_window': False, 'pretraining_tp': 1})
  qwen = hf.get('model_type') == 'qwen2'
  window = hf.get('sliding_window') if hf.get('model_type') == 'mistral' else None
  if window is not None and (isinstance(window, bool) or not isinstance(window, int)
                             or window < 1):
    raise UserError(f'{path}/config.json: sliding_window={window!r} must be a whole number >= 1 '
                    'or null')
  theta, scaling = _rope(path, hf)
  return dict(vocab_size=hf['vocab_size'], max_len=hf.get('max_position_embeddings', 4096),
              d_model=hf['hidden_size'], num_layers=hf['num_hidden_layers'],
              num_heads=hf['num_attention_heads'],
              num_kv_heads=hf.get('num_key_value_heads') or hf['num_attention_heads'],
              head_dim=hf.get('head_dim'), mlp_dim=hf['intermediate_size'],
              rms_eps=hf.get('rms_norm_eps', 1e-6), rope_theta=theta, rope_scaling=scaling,
              qkv_bias=qwen or hf.get('attention_bias', False),
              out_bias=not qwen and hf.get('attention_bias', False),
              tie_embeddings=hf.get('tie_word_embeddings', False), sliding_window=window,
              dropout=hf.get('attention_dropout', 0.0))


def _entries(c: Config, lm_head: bool) -> list[Entry]:
  e = [Entry(('embed_tokens', 'embedding'), 'embed_tokens.weight')]
  for i in range(c.num_layers):
    l, p = f'layers_{i}', f'layers.{i}.'
    for n in 'qkvo':
      e.append(Entry((l, 'self_attn', n, 'kernel'), p + f'self_attn.{n}_proj.weight', transpose))
      if (c.qkv_bias and n != 'o') or (c.out_bias and n == 'o'):
        e.append(Entry((l, 'self_attn', n, 'bias'), p + f'self_attn.{n}_proj.bias'))
    for n in ('gate_proj', 'up_proj', 'down_proj'):
      e.append(Entry((l, n, 'kernel'), p + f'mlp.{n}.weight', transpose))
    for n in ('input_layernorm', 'post_attention_layernorm'):
      e.append(Entry((l, n, 'scale'), p + n + '.weight'))
  e.append(Entry(('norm', 'scale'), 'norm.weight'))
  if lm_head and not c.tie_embeddings:
    e.append(Entry(('unembed', 'kernel'), 'lm_head.weight', transpose))
  return e


def load_pretrained(path: str, *, config: Config | None = None, lm_head: bool = False,
                    place=None, truncate: bool = False):
  """Hugging Face Llama/Qwen2/Mistral directory -> (Config, backbone params in the layout of
  `Llama`).

  `lm_head=True` also reads the untied LM head (for decoding). `config` defaults to the
  checkpoint's own; a checkpoint that does not fit it is a UserError naming the first
  mismatching tensor. `place`: see `hf_import.convert` (tensors straight into device shards).
  """
  return hf_import.load_backbone(
      path, config=config, config_cls=Config, config_from_hf=config_from_hf,
      make_backbone=lambda c: Llama(c, lm_head=lm_head), prefix='model.',
      entries=lambda c: _entries(c, lm_head),
      ignore=lambda name: name == 'lm_head.weight' or name.endswith('rotary_emb.inv_freq'),
      place=place, truncate=truncate)
