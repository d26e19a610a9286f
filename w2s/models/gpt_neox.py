"""GPT-NeoX / Pythia decoders (Black et al., 2022, "GPT-NeoX-20B"; Biderman et al., 2023,
"Pythia: A Suite for Analyzing Large Language Models Across Training and Scaling").

Pre-LayerNorm transformer with rotary positions on the first `rotary_pct` of each head's dims
(Su et al., 2021; Pythia rotates a quarter), an exact-GELU MLP and, by default, the parallel
residual of GPT-J: x + attn(ln_1(x)) + mlp(ln_2(x)) (`use_parallel_residual=False`: the sequential
x' = x + attn(ln_1(x)); x' + mlp(ln_2(x'))). The LM head ('embed_out') is separate unless tied.
As a classifier it pools the last real token. Imports Hugging Face `GPTNeoXForCausalLM`
checkpoints (and the bare `GPTNeoXModel`): the fused query_key_value projection, laid out per
head as [H, (q, k, v), Dh] along its outputs, is split into the q / k / v of
`w2s.models.attention.Attention`, so LoRA, the tensor-parallel rules and the KV cache of the other
decoders apply unchanged.

Config: dict(name='gpt_neox', size='tiny')                            random init
        dict(name='gpt_neox', pretrained='EleutherAI/pythia-70m')      hub id (w2s.models.hub)
        dict(name='gpt_neox', pretrained='/ckpt/pythia-410m', lora=dict(rank=8))
"""
import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.models import classifier
from w2s.models import hf_import
from w2s.models import lora as lora_lib
from w2s.models.attention import INIT, Attention, as_dtype, rope_frequencies
from w2s.models.hf_import import Entry, transpose


@dataclasses.dataclass(frozen=True)
class Config:
  vocab_size: int = 50304
  max_len: int = 2048  # informational: rotary positions have no table
  d_model: int = 512
  num_layers: int = 6
  num_heads: int = 8
  mlp_dim: int = 2048
  ln_eps: float = 1e-5
  rotary_pct: float = 0.25  # fraction of each head's dims that rotate
  rope_theta: float = 10000.0
  parallel_residual: bool = True
  attention_bias: bool = True
  gelu_tanh: bool = False  # hidden_act 'gelu' (exact, Pythia) or a tanh approximation
  tie_embeddings: bool = False
  dropout: float = 0.0

  @property
  def dh(self) -> int:
    return self.d_model // self.num_heads

  @property
  def rotary_dim(self) -> int:
    return int(self.dh * self.rotary_pct)

  @property
  def kv_cache_shape(self):
    """(layers, kv heads, head dim) of the decoding cache."""
    return self.num_layers, self.num_heads, self.dh


def _pythia(d, layers, heads, vocab=50304):
  return dict(vocab_size=vocab, d_model=d, num_layers=layers, num_heads=heads, mlp_dim=4 * d)


SIZES = {
    'tiny': dict(_pythia(64, 2, 4), vocab_size=512, max_len=256, rotary_pct=0.5),
    'pythia-70m': _pythia(512, 6, 8),
    'pythia-160m': _pythia(768, 12, 12),
    'pythia-410m': _pythia(1024, 24, 16),
    'pythia-1b': _pythia(2048, 16, 8),
    'pythia-1.4b': _pythia(2048, 24, 16),
    'pythia-2.8b': _pythia(2560, 32, 32),
    'pythia-6.9b': _pythia(4096, 32, 32, vocab=50432),
    'pythia-12b': _pythia(5120, 36, 40, vocab=50688),
}


class Block(nn.Module):
  """Parallel: x + attn(ln_1(x)) + mlp(ln_2(x)); sequential: x += attn(ln_1(x)), then
  x += mlp(ln_2(x))."""
  config: Config
  dtype: jnp.dtype = jnp.float32
  lora: lora_lib.LoraConfig | None = None

  @nn.compact
  def __call__(self, x, key_mask, positions, cache, cache_index, deterministic):
    c = self.config
    drop = lambda y: nn.Dropout(c.dropout)(y, deterministic=deterministic)
    ln = lambda name: nn.LayerNorm(c.ln_eps, dtype=self.dtype, name=name)
    dense = lambda n, name: lora_lib.dense(n, dtype=self.dtype, kernel_init=INIT, name=name,
                                           lora=self.lora, target='mlp',
                                           deterministic=deterministic)
    inv_freq = rope_frequencies(c.rotary_dim, c.rope_theta)
    attn, cache = Attention(c.num_heads, c.num_heads, c.dh, causal=True,
                            qkv_bias=c.attention_bias, out_bias=c.attention_bias,
                            inv_freq=tuple(inv_freq.tolist()), dropout=c.dropout,
                            deterministic=deterministic, dtype=self.dtype, lora=self.lora,
                            name='attention')(
                                ln('input_layernorm')(x), key_mask=key_mask, positions=positions,
                                cache=cache, cache_index=cache_index)
    attn = drop(attn)
    mlp_in = x if c.parallel_residual else x + attn
    y = dense(c.mlp_dim, 'dense_h_to_4h')(ln('post_attention_layernorm')(mlp_in))
    y = drop(dense(c.d_model, 'dense_4h_to_h')(nn.gelu(y, approximate=c.gelu_tanh)))
    return (x + attn + y if c.parallel_residual else mlp_in + y), cache


class GPTNeoX(nn.Module):
  """Backbone: ids [B, T] -> final-LayerNorm hidden states [B, T, D] (see classifier.py).

  `lm_head=True` adds the untied LM head ('unembed', [D, V]) to the params, for decoding.
  """
  config: Config
  dtype: jnp.dtype = jnp.float32
  remat: bool = False
  lm_head: bool = False
  lora: lora_lib.LoraConfig | None = None

  def setup(self):
    c = self.config
    self.embed_in = nn.Embed(c.vocab_size, c.d_model, embedding_init=INIT, dtype=self.dtype)
    self.drop = nn.Dropout(c.dropout)
    block = nn.remat(Block, static_argnums=(6,)) if self.remat else Block
    self.layers = [block(c, dtype=self.dtype, lora=self.lora) for _ in range(c.num_layers)]
    self.final_layer_norm = nn.LayerNorm(c.ln_eps, dtype=self.dtype)
    if self.lm_head and not c.tie_embeddings:
      self.unembed = nn.Dense(c.vocab_size, use_bias=False, dtype=self.dtype, kernel_init=INIT)

  def __call__(self, input_ids, attention_mask, *, positions=None, cache=None, cache_index=0,
               token_type_ids=None, train=False):
    del token_type_ids  # segments are a BERT notion
    if positions is None:
      positions = classifier.default_positions(attention_mask)
    x = self.drop(self.embed_in(input_ids), deterministic=not train)
    x, new_cache = classifier.run_blocks(self.layers, x, attention_mask, positions, cache,
                                         cache_index, train)
    x = self.final_layer_norm(x)
    if self.is_initializing() and self.lm_head:
      self.lm_logits(x[:, :1])  # creates the untied head's params
    return x, new_cache

  def lm_logits(self, hidden):
    """[B, T, D] -> [B, T, V] with the tied embedding or the untied head ('embed_out')."""
    if self.config.tie_embeddings:
      return self.embed_in.attend(hidden)
    if not self.lm_head:
      raise UserError('gpt_neox: this checkpoint has an untied LM head (embed_out); create the '
                      'model with lm_head=True to decode')
    return self.unembed(hidden)


def create(*, num_classes: int, size: str | None = None, pretrained: str | None = None,
           pooling: str = 'last', dtype: str = 'float32', remat: bool = False,
           head_bias: bool = False, frozen: bool = False, lm_head: bool = False,
           lora: dict | None = None, **arch) -> classifier.TextClassifier:
  """GPT-NeoX / Pythia classifier; `arch` overrides Config fields (e.g. num_layers=2).

  Args:
    num_classes: C.
    size: a key of SIZES ('tiny', 'pythia-70m', ..., 'pythia-12b'); None with `pretrained` takes
      the checkpoint's config.json.
    pretrained: Hugging Face directory or hub id ('EleutherAI/pythia-70m', w2s.models.hub).
    pooling: 'last' (default) or 'mean'.
    dtype: compute dtype ('float32' or 'bfloat16'); params stay float32.
    remat: rematerialise each block in the backward pass (nn.remat).
    lm_head: include the untied LM head in the params (needed to decode untied checkpoints).
    lora: dict(rank=8, alpha=16, targets=('attention', 'mlp'), dropout=0.0) adds LoRA adapters
      (w2s.models.lora); None (default) is the plain model.
  """
  config, path = classifier.make_config('gpt_neox', Config, SIZES, size=size,
                                        pretrained=pretrained, from_hf=config_from_hf,
                                        overrides=arch)
  backbone = GPTNeoX(config, dtype=as_dtype(dtype), remat=remat, lm_head=lm_head,
                     lora=lora_lib.for_model('gpt_neox', lora, frozen=frozen))
  return classifier.TextClassifier(backbone, num_classes,
                                   classifier.check_pooling('gpt_neox', pooling),
                                   head_bias=head_bias, frozen=frozen, pretrained=path,
                                   truncate_layers=arch.get('layers') is not None)


def _rope(path: str, hf: dict) -> tuple[float, float]:
  """(theta, rotary fraction) from transformers 4 (`rotary_emb_base`, `rotary_pct`) or 5
  (`rope_parameters`) config files."""
  params = hf.get('rope_parameters') or hf.get('rope_scaling') or {}
  kind = params.get('rope_type', params.get('type', 'default'))
  if kind != 'default':
    raise UserError(f"{path}/config.json: rope type {kind!r} is not supported (w2s implements "
                    "'default' for gpt_neox)")
  theta = params.get('rope_theta', hf.get('rotary_emb_base', hf.get('rope_theta', 10000.0)))
  pct = params.get('partial_rotary_factor', hf.get('rotary_pct', 0.25))
  return float(theta), float(pct)


def config_from_hf(path: str, hf: dict) -> dict:
  """Config fields from a Hugging Face GPTNeoXConfig dict."""
  hf_import.check_fields(path, hf, {'model_type': 'gpt_neox',
                                    'hidden_act': ('gelu', 'gelu_new', 'gelu_fast',
                                                   'gelu_pytorch_tanh')})
  theta, pct = _rope(path, hf)
  heads = hf['num_attention_heads']
  if int(hf['hidden_size'] // heads * pct) % 2:
    raise UserError(f'{path}/config.json: rotary dims {int(hf["hidden_size"] // heads * pct)} per '
                    'head are odd; w2s rotates an even number of dims (a standard checkpoint)')
  return dict(vocab_size=hf['vocab_size'], max_len=hf.get('max_position_embeddings', 2048),
              d_model=hf['hidden_size'], num_layers=hf['num_hidden_layers'], num_heads=heads,
              mlp_dim=hf['intermediate_size'], ln_eps=hf.get('layer_norm_eps', 1e-5),
              rotary_pct=pct, rope_theta=theta,
              parallel_residual=hf.get('use_parallel_residual', True),
              attention_bias=hf.get('attention_bias', True),
              gelu_tanh=hf.get('hidden_act', 'gelu') != 'gelu',
              tie_embeddings=hf.get('tie_word_embeddings', False),
              dropout=hf.get('hidden_dropout', 0.0))


def _qkv(j: int, heads: int):
  """The j-th of (q, k, v) from the fused projection, whose outputs are laid out [H, 3, Dh]:
  weight [3D, D] -> kernel [D, H * Dh], bias [3D] -> [H * Dh]. Reshapes and slices only, so a
  header-only stand-in (`hf_import.check_only`) stays a zero-stride view."""
  def take(a):
    split = a.reshape(heads, 3, a.shape[0] // (3 * heads), *a.shape[1:])[:, j]
    return split.reshape(-1, *a.shape[1:]).T if a.ndim == 2 else split.reshape(-1)
  return take


def _entries(c: Config, lm_head: bool) -> list[Entry]:
  e = [Entry(('embed_in', 'embedding'), 'embed_in.weight')]
  for i in range(c.num_layers):
    l, p = f'layers_{i}', f'layers.{i}.'
    for j, n in enumerate('qkv'):
      e.append(Entry((l, 'attention', n, 'kernel'), p + 'attention.query_key_value.weight',
                     _qkv(j, c.num_heads)))
      if c.attention_bias:
        e.append(Entry((l, 'attention', n, 'bias'), p + 'attention.query_key_value.bias',
                       _qkv(j, c.num_heads)))
    e.append(Entry((l, 'attention', 'o', 'kernel'), p + 'attention.dense.weight', transpose))
    if c.attention_bias:
      e.append(Entry((l, 'attention', 'o', 'bias'), p + 'attention.dense.bias'))
    for n in ('dense_h_to_4h', 'dense_4h_to_h'):
      e += [Entry((l, n, 'kernel'), p + f'mlp.{n}.weight', transpose),
            Entry((l, n, 'bias'), p + f'mlp.{n}.bias')]
    for n in ('input_layernorm', 'post_attention_layernorm'):
      e += [Entry((l, n, 'scale'), p + n + '.weight'), Entry((l, n, 'bias'), p + n + '.bias')]
  e += [Entry(('final_layer_norm', 'scale'), 'final_layer_norm.weight'),
        Entry(('final_layer_norm', 'bias'), 'final_layer_norm.bias')]
  if lm_head and not c.tie_embeddings:
    e.append(Entry(('unembed', 'kernel'), 'embed_out.weight', transpose))
  return e


def _ignored(name: str) -> bool:
  # causal-mask and rotary buffers of older checkpoints; the LM head unless decoding needs it
  return (name == 'embed_out.weight'
          or name.endswith(('.attention.bias', '.attention.masked_bias', '.rotary_emb.inv_freq')))


def load_pretrained(path: str, *, config: Config | None = None, lm_head: bool = False,
                    place=None, truncate: bool = False):
  """Hugging Face GPT-NeoX directory -> (Config, backbone params in the layout of `GPTNeoX`).

  `lm_head=True` also reads the untied LM head (for decoding). `config` defaults to the
  checkpoint's own; a checkpoint that does not fit it is a UserError naming the first
  mismatching tensor. `place`: see `hf_import.convert` (tensors straight into device shards).
  """
  return hf_import.load_backbone(
      path, config=config, config_cls=Config, config_from_hf=config_from_hf,
      make_backbone=lambda c: GPTNeoX(c, lm_head=lm_head), prefix='gpt_neox.',
      entries=lambda c: _entries(c, lm_head), ignore=_ignored, place=place, truncate=truncate)
