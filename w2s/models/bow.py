"""fastText-style bag of n-grams classifier, trained from scratch: a deliberately weak text model.

Joulin et al. 2017, "Bag of Tricks for Efficient Text Classification": token (and hashed bigram)
embeddings averaged over the real tokens (attention_mask), then a linear layer. It is the weak
supervisor of the offline weak-to-strong demo; it needs no pretrained weights.
"""
import flax.linen as nn
import jax.numpy as jnp

from w2s.errors import UserError

SIZES = {
    'tiny': dict(dim=16),
    'small': dict(dim=64),
    'base': dict(dim=128, bigram_buckets=100_003),
}


class BagOfNgrams(nn.Module):
  num_classes: int
  vocab_size: int = 30_522  # the BERT/MiniLM WordPiece vocabulary
  dim: int = 64
  bigram_buckets: int = 0   # 0: unigrams only
  dropout: float = 0.0

  @nn.compact
  def __call__(self, batch, *, train: bool = False):
    ids = jnp.asarray(batch['input_ids'])                       # [B, T]
    mask = jnp.asarray(batch['attention_mask'], jnp.float32)    # [B, T]
    emb = nn.Embed(self.vocab_size, self.dim, name='unigram')(ids)
    summed = jnp.einsum('btd,bt->bd', emb, mask)
    count = mask.sum(-1, keepdims=True)
    if self.bigram_buckets:
      pair = (ids[:, :-1].astype(jnp.uint32) * 1_000_003 + ids[:, 1:].astype(jnp.uint32))
      big = nn.Embed(self.bigram_buckets, self.dim, name='bigram')(pair % self.bigram_buckets)
      pair_mask = mask[:, :-1] * mask[:, 1:]
      summed += jnp.einsum('btd,bt->bd', big, pair_mask)
      count += pair_mask.sum(-1, keepdims=True)
    x = summed / jnp.maximum(count, 1.0)                        # [B, D]
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name='head')(x)


def create(*, num_classes: int, size: str | None = None, **hparams) -> BagOfNgrams:
  """size: 'tiny' | 'small' (default) | 'base'; hparams: vocab_size, dim, bigram_buckets, dropout."""
  if size is not None and size not in SIZES:
    raise UserError(f'unknown bow size {size!r}; known: {", ".join(SIZES)}')
  return BagOfNgrams(num_classes=num_classes, **{**SIZES[size or 'small'], **hparams})
