"""The weak ensemble members' probabilities a multi-teacher loss reads: batch['member_probs']."""
import jax
import jax.numpy as jnp

from w2s.errors import UserError


def member_probs(batch, logits: jax.Array, loss: str, *, fix: str,
                 teachers: int | None = None) -> jax.Array:
  """batch['member_probs'] [B, K, C] as float32, checked against logits [B, C] (and K = teachers
  when given); one UserError line naming `loss` and `fix` (how to supply the members) otherwise."""
  if batch is None or 'member_probs' not in batch:
    raise UserError(f"loss '{loss}' needs batch['member_probs'] [B, K, C] (the K weak teachers' "
                    f'probabilities); {fix} or pick another loss')
  probs = batch['member_probs']
  k = 'K' if teachers is None else f'K={teachers}'
  if (probs.ndim != 3 or probs.shape[::2] != logits.shape
      or (teachers is not None and probs.shape[1] != teachers)):
    raise UserError(f"{loss}: batch['member_probs'] has shape {tuple(probs.shape)}, expected "
                    f'[B, {k}, C] with [B, C] = {tuple(logits.shape)}'
                    + (f"; set {loss}'s teachers to the weak ensemble size" if teachers else ''))
  return probs.astype(jnp.float32)
