"""logconf's `faithful` warmup switches exactly where the release's rule says, at every step."""
import fractions

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s.losses import logconf


def _release_rule(step: int, total: int, warmup_frac: float, aux_coef: float) -> float:
  """The release: coef = aux_coef if step / total > warmup_frac else step / total * aux_coef,
  decided in exact arithmetic."""
  frac = fractions.Fraction(step, total)
  return aux_coef if frac > fractions.Fraction(warmup_frac) else float(frac) * aux_coef


@pytest.mark.parametrize('total', [10, 30, 60, 97, 120, 240, 480, 510, 960, 1020, 1920, 2000])
@pytest.mark.parametrize('warmup_frac', [0.1, 0.2, 0.3])
def test_faithful_switch_is_exact_at_every_step(total, warmup_frac):
  aux_coef = 0.5

  @jax.jit  # as in the train step: the total is static, the step traced
  def alpha(step):
    return logconf.aux_coefficient(step / total, aux_coef=aux_coef, warmup_frac=warmup_frac,
                                   faithful=True, step=step, total_steps=total)

  steps = jnp.arange(total, dtype=jnp.int32)
  got = np.asarray(jax.vmap(alpha)(steps))
  want = np.array([_release_rule(s, total, warmup_frac, aux_coef) for s in range(total)])
  switched_got = got == np.float32(aux_coef)
  switched_want = want == aux_coef
  np.testing.assert_array_equal(switched_got, switched_want)  # the same step switches
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_first_step_past_and_the_trainer_passes_integer_steps():
  """3/30 is not past 0.1 (the float32 jit rule said it was); 4/30 is. The trainer gives the
  loss the integer step and total, so the switch in a real train step is the exact one."""
  assert logconf.first_step_past(0.1, 30) == 4
  assert logconf.first_step_past(0.25, 8) == 3   # 2/8 == 0.25 is not > 0.25
  from w2s import options
  names, _ = options.accepted_kwargs(logconf.loss)
  assert {'step', 'total_steps'} <= names
