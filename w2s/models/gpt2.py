"""GPT-2 decoder (Radford et al., 2019, "Language Models are Unsupervised Multitask Learners").

Pre-LayerNorm transformer with learned absolute positions, tanh-GELU MLP and an LM head tied to
the token embedding. As a classifier it pools the last real token (the weak-to-strong release's
GPT-2 weak supervisors). Imports Hugging Face GPT-2 checkpoints (`GPT2Model` or `GPT2LMHeadModel`).

Config: dict(name='gpt2', size='small')                       random init, 124M
        dict(name='gpt2', pretrained='/ckpt/gpt2-medium')        architecture from config.json
        dict(name='gpt2', size='small', lora=dict(rank=8))       LoRA adapters (w2s.models.lora)
"""
import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from w2s.models import classifier
from w2s.models import hf_import
from w2s.models import lora as lora_lib
from w2s.models.attention import INIT, Attention, as_dtype
from w2s.models.hf_import import Entry, columns


@dataclasses.dataclass(frozen=True)
class Config:
  vocab_size: int = 50257
  max_len: int = 1024
  d_model: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  ln_eps: float = 1e-5
  dropout: float = 0.1

  @property
  def position_limit(self) -> int:
    """Tokens a sequence may hold (the learned position table)."""
    return self.max_len

  @property
  def kv_cache_shape(self):
    """(layers, kv heads, head dim) of the decoding cache."""
    return self.num_layers, self.num_heads, self.d_model // self.num_heads


def _size(d, layers, heads):
  return dict(d_model=d, num_layers=layers, num_heads=heads, mlp_dim=4 * d)


SIZES = {
    'tiny': dict(_size(64, 2, 4), vocab_size=512, max_len=256),
    'small': _size(768, 12, 12),
    'medium': _size(1024, 24, 16),
    'large': _size(1280, 36, 20),
    'xl': _size(1600, 48, 25),
}


class Block(nn.Module):
  """x + attn(ln_1(x)); x + mlp(ln_2(x))."""
  config: Config
  dtype: jnp.dtype = jnp.float32
  lora: lora_lib.LoraConfig | None = None

  @nn.compact
  def __call__(self, x, key_mask, positions, cache, cache_index, deterministic):
    del positions  # learned positions are added to the embeddings
    c = self.config
    # GPT-2 scales the residual projections' init by 1/sqrt(2 * layers)
    out_init = nn.initializers.normal(0.02 / (2 * c.num_layers) ** 0.5)
    drop = lambda y: nn.Dropout(c.dropout)(y, deterministic=deterministic)
    ln = lambda name: nn.LayerNorm(c.ln_eps, dtype=self.dtype, name=name)
    y, cache = Attention(c.num_heads, c.num_heads, c.d_model // c.num_heads, causal=True,
                         dropout=c.dropout, deterministic=deterministic, dtype=self.dtype,
                         out_init=out_init, lora=self.lora, name='attn')(
                             ln('ln_1')(x), key_mask=key_mask, cache=cache, cache_index=cache_index)
    x = x + drop(y)
    dense = lambda n, init, name: lora_lib.dense(n, dtype=self.dtype, kernel_init=init, name=name,
                                                 lora=self.lora, target='mlp',
                                                 deterministic=deterministic)
    y = dense(c.mlp_dim, INIT, 'c_fc')(ln('ln_2')(x))
    y = nn.gelu(y, approximate=True)  # GPT-2's "gelu_new"
    y = dense(c.d_model, out_init, 'c_proj')(y)
    return x + drop(y), cache


class GPT2(nn.Module):
  """Backbone: ids [B, T] -> final-LayerNorm hidden states [B, T, D] (see classifier.py)."""
  config: Config
  dtype: jnp.dtype = jnp.float32
  remat: bool = False
  lm_head: bool = False  # GPT-2's LM head is the tied embedding: nothing extra to hold
  lora: lora_lib.LoraConfig | None = None

  def setup(self):
    c = self.config
    self.wte = nn.Embed(c.vocab_size, c.d_model, embedding_init=INIT, dtype=self.dtype)
    self.wpe = nn.Embed(c.max_len, c.d_model, embedding_init=nn.initializers.normal(0.01),
                        dtype=self.dtype)
    self.drop = nn.Dropout(c.dropout)
    block = nn.remat(Block, static_argnums=(6,)) if self.remat else Block
    self.h = [block(c, dtype=self.dtype, lora=self.lora) for _ in range(c.num_layers)]
    self.ln_f = nn.LayerNorm(c.ln_eps, dtype=self.dtype)

  def __call__(self, input_ids, attention_mask, *, positions=None, cache=None, cache_index=0,
               token_type_ids=None, train=False):
    del token_type_ids  # segments are a BERT notion
    classifier.check_length(input_ids, cache, self.config.max_len)
    if positions is None:
      positions = classifier.default_positions(attention_mask)
    x = self.drop(self.wte(input_ids) + self.wpe(positions), deterministic=not train)
    x, new_cache = classifier.run_blocks(self.h, x, attention_mask, positions, cache,
                                         cache_index, train)
    return self.ln_f(x), new_cache

  def lm_logits(self, hidden):
    """[B, T, D] -> [B, T, V] via the tied token embedding."""
    return self.wte.attend(hidden)


def create(*, num_classes: int, size: str | None = None, pretrained: str | None = None,
           pooling: str = 'last', dtype: str = 'float32', remat: bool = False,
           head_bias: bool = False, frozen: bool = False, lm_head: bool = False,
           lora: dict | None = None, **arch) -> classifier.TextClassifier:
  """GPT-2 classifier; `arch` overrides Config fields (e.g. num_layers=2, dropout=0.0).

  Args:
    num_classes: C.
    size: a key of SIZES; None with `pretrained` takes the checkpoint's config.json.
    pretrained: Hugging Face directory; its weights are loaded by `hf_import.init_params`.
    pooling: 'last' (default, the release's choice), 'mean' or 'cls'.
    dtype: compute dtype ('float32' or 'bfloat16'); params stay float32.
    remat: rematerialise each block in the backward pass (nn.remat) to save memory.
    lm_head: accepted for symmetry with llama (GPT-2's LM head is always the tied embedding).
    lora: dict(rank=8, alpha=16, targets=('attention', 'mlp'), dropout=0.0) adds LoRA adapters
      (w2s.models.lora); None (default) is the plain model.
  """
  del lm_head
  config, path = classifier.make_config('gpt2', Config, SIZES, size=size, pretrained=pretrained,
                                        from_hf=config_from_hf, overrides=arch)
  backbone = GPT2(config, dtype=as_dtype(dtype), remat=remat,
                  lora=lora_lib.for_model('gpt2', lora, frozen=frozen))
  return classifier.TextClassifier(backbone, num_classes, classifier.check_pooling('gpt2', pooling),
                                   head_bias=head_bias, frozen=frozen, pretrained=path,
                                   truncate_layers=arch.get('layers') is not None)


def config_from_hf(path: str, hf: dict) -> dict:
  """Config fields from a Hugging Face GPT2Config dict."""
  hf_import.check_fields(path, hf, {'activation_function': ('gelu_new', 'gelu_pytorch_tanh'),
                                    'scale_attn_by_inverse_layer_idx': False,
                                    'reorder_and_upcast_attn': False})
  d = hf['n_embd']
  return dict(vocab_size=hf['vocab_size'], max_len=hf['n_positions'], d_model=d,
              num_layers=hf['n_layer'], num_heads=hf['n_head'], mlp_dim=hf.get('n_inner') or 4 * d,
              ln_eps=hf.get('layer_norm_epsilon', 1e-5), dropout=hf.get('resid_pdrop', 0.1))


def _entries(c: Config) -> list[Entry]:
  e = [Entry(('wte', 'embedding'), 'wte.weight'), Entry(('wpe', 'embedding'), 'wpe.weight')]
  for i in range(c.num_layers):
    h, p = f'h_{i}', f'h.{i}.'
    for ln in ('ln_1', 'ln_2'):
      e += [Entry((h, ln, 'scale'), p + ln + '.weight'), Entry((h, ln, 'bias'), p + ln + '.bias')]
    for j, name in enumerate('qkv'):  # Conv1D weights are already [in, out]
      e += [Entry((h, 'attn', name, 'kernel'), p + 'attn.c_attn.weight', columns(j, 3)),
            Entry((h, 'attn', name, 'bias'), p + 'attn.c_attn.bias', columns(j, 3))]
    e += [Entry((h, 'attn', 'o', 'kernel'), p + 'attn.c_proj.weight'),
          Entry((h, 'attn', 'o', 'bias'), p + 'attn.c_proj.bias')]
    for name in ('c_fc', 'c_proj'):
      e += [Entry((h, name, 'kernel'), p + f'mlp.{name}.weight'),
            Entry((h, name, 'bias'), p + f'mlp.{name}.bias')]
  return e + [Entry(('ln_f', 'scale'), 'ln_f.weight'), Entry(('ln_f', 'bias'), 'ln_f.bias')]


def _ignored(name: str) -> bool:
  # causal-mask buffers of old checkpoints; the LM head duplicates wte
  return name.endswith(('.attn.bias', '.attn.masked_bias')) or name == 'lm_head.weight'


def load_pretrained(path: str, *, config: Config | None = None, lm_head: bool = False,
                    place=None, truncate: bool = False):
  """Hugging Face GPT-2 directory -> (Config, backbone params in the Flax layout of `GPT2`).

  `config` defaults to the checkpoint's own; a checkpoint that does not fit it is a UserError
  naming the first mismatching tensor. `place`: see `hf_import.convert` (tensors straight into
  device shards).
  """
  del lm_head
  return hf_import.load_backbone(path, config=config, config_cls=Config,
                                 config_from_hf=config_from_hf, make_backbone=GPT2,
                                 prefix='transformer.', entries=_entries, ignore=_ignored,
                                 place=place, truncate=truncate)
