"""VAT: virtual adversarial training, the KL to the prediction at the worst small input shift.

Miyato, Maeda, Koyama, Ishii 2018, "Virtual Adversarial Training: A Regularization Method for
Supervised and Semi-Supervised Learning" (TPAMI), eqs. 8-13; USB's vat for the details:

  d     ~ N(0, I) per row, d <- d / ||d||                      (norm over all of a row's inputs)
  g     = grad_r KL(p(x_u) || p(x_u + r)) at r = xi d          (one power iteration, eq. 12)
  r_adv = eps g / ||g||                                         (sg: a constant, eq. 13)
  L     = CE(x_l) + lambda_u w(t) (1 / M) sum_u KL(p(x_u) || p(x_u + r_adv))
          + lambda_ent (1 / M) sum_u H(p(x_u))                  (entropy minimisation, "VAT+EntMin")

with p(x_u) = softmax(z(a(x_u))) sg inside the KL (the target), with gradient in the entropy term,
and w(t) = clip(t / (warmup T_total), 0, 1). Defaults (USB, except xi): xi 0 (the exact limit,
below; USB and the paper use 1e-6: pass xi=1e-6 to reproduce them), eps 6 (the paper: 8 on
CIFAR-10, 2.5 on SVHN), lambda_u 1 (the paper's alpha), lambda_ent 0.06 (USB's ent_loss_ratio;
0 gives the paper's plain VAT), warmup 0.4.

Precision: the finite difference at xi 1e-6 subtracts two float32 softmaxes whose logits differ
by ~1e-6, so its direction carries rounding noise of the order of itself (a 5-input linear model,
max |r_adv - r_exact| / eps: 0.62 at xi 1e-6, 7e-4 at xi 1e-2, 3e-7 at xi 0). `xi=0` computes
the limit the paper approximates, g = H d (H the Hessian of the KL at r = 0), exactly: a
Hessian-vector product (jax.jvp of the gradient), about one more backward pass.

For a linear model z = W x + b the direction has a closed form: g_u = W^T (softmax(W (x_u + xi d)
+ b) - softmax(W x_u + b)), and for xi -> 0 g_u ∝ W^T (diag p - p p^T) W d (tests/test_ssl_mix.py).
All three student passes on U (clean, x + xi d, x + r_adv) use one dropout key, so the finite
difference sees the input shift alone (USB draws fresh dropout for each). USB normalises d only
for 3-D and 4-D inputs; here every row is normalised, whatever its shape. Float inputs only:
integer fields (token ids) are a UserError (USB's `vat_embed`, perturbing word embeddings, would
need a model that takes embeddings).
"""
import jax
import jax.numpy as jnp

from w2s.losses import _soft_ce
from w2s.ssl import mixup
from w2s.ssl import supervised

NEEDS_TEACHER = False
INPUT_LEVEL = True  # the step calls loss(apply=, x=, u_view=, rng=, ...) (see w2s.ssl)


def _row_norm(tree) -> jax.Array:
  """[N] L2 norm of each row over every field and axis but the first."""
  sq = [jnp.sum(jnp.reshape(a.astype(jnp.float32) ** 2, (a.shape[0], -1)), axis=1)
        for a in jax.tree.leaves(tree)]
  return jnp.sqrt(sum(sq))


def unit_rows(tree):
  """Each row of `tree` divided by its norm over all fields (rows of norm 0 stay 0)."""
  norm = _row_norm(tree)
  def one(a):
    n = norm.reshape((-1,) + (1,) * (a.ndim - 1))
    return jnp.where(n > 0, a / jnp.where(n > 0, n, 1.0), 0.0).astype(a.dtype)
  return jax.tree.map(one, tree)


def random_unit(rng: jax.Array, inputs: dict) -> dict:
  """d: Gaussian rows of unit norm, shaped as `inputs` (row i from fold_in(rng_field, i))."""
  out = {}
  for f, key in enumerate(sorted(inputs)):
    a = inputs[key]
    keys = mixup.row_keys(jax.random.fold_in(rng, f), a.shape[0])
    out[key] = jax.vmap(lambda k: jax.random.normal(k, a.shape[1:], a.dtype))(keys)
  return unit_rows(out)


def kl_rows(logits_p, logits_q) -> jax.Array:
  """KL(softmax(logits_p) || softmax(logits_q)) per row [N]."""
  log_p = jax.nn.log_softmax(logits_p.astype(jnp.float32), axis=-1)
  log_q = jax.nn.log_softmax(logits_q.astype(jnp.float32), axis=-1)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def adversarial(fn, inputs: dict, logits, mask, d: dict, *, xi: float, eps: float) -> dict:
  """r_adv = eps g / ||g|| (per row, sg), g = grad_r sum_u mask_u KL(p(x_u) || p(x_u + r)) at
  r = xi d (xi = 0: g = H d, H the Hessian of that sum at r = 0); `fn(inputs) -> logits` the
  student, `logits` [M, C] its clean output (the target), d [M, ...] unit rows."""
  target = jax.lax.stop_gradient(logits)
  add = lambda r: jax.tree.map(lambda a, b: a + b.astype(a.dtype), inputs, r)

  def kl_sum(r):
    return jnp.sum(jnp.where(mask > 0, kl_rows(target, fn(add(r))), 0.0))

  if xi > 0:  # the paper's finite difference: g ~ xi H d
    g = jax.grad(kl_sum)(jax.tree.map(lambda a: xi * a, d))
  else:  # its xi -> 0 limit, exactly: H d (forward-over-reverse, no cancellation)
    g = jax.jvp(jax.grad(kl_sum), (jax.tree.map(jnp.zeros_like, d),), (d,))[1]
  return jax.tree.map(lambda a: eps * a, unit_rows(jax.lax.stop_gradient(g)))


def loss(*, apply, x, labels_x, mask_x, u_view, mask_u, rng, step, total_steps, state=None,
         index_u=None, eps: float = 6.0, xi: float = 0.0, lambda_u: float = 1.0,
         lambda_ent: float = 0.06, warmup: float = 0.4):
  """CE(x_l) + lambda_u w(t) KL(p(x_u) || p(x_u + r_adv)) + lambda_ent H(p(x_u)) (Miyato et al.).

  Args: see `w2s.ssl` (input level); eps (6), xi (0: the exact Hessian-vector product; > 0: the finite difference, USB 1e-6),
    lambda_u (1), lambda_ent (0.06), warmup (0.4 of total_steps).

  Returns:
    (loss, {'loss_x', 'loss_u' (the KL), 'loss_ent', 'weight' (lambda_u w(t)), 'r_norm' (mean
     ||r_adv|| over real rows: eps, or 0 where the gradient vanished)}, None,
     logits_x [B, C], logits_uw [M, C] (clean U)).
  """
  del state, index_u
  u = mixup.float_inputs(u_view('weak', 0), 'vat')
  k_d, k_x, k_u = jax.random.split(rng, 3)
  logits_x = apply(x, k_x)
  loss_x = supervised.labelled_ce(logits_x, labels_x, mask_x)
  logits_u = apply(u, k_u)
  fn = lambda inputs: apply(inputs, k_u)
  r_adv = adversarial(fn, u, logits_u, mask_u, random_unit(k_d, u), xi=xi, eps=eps)
  kl = kl_rows(jax.lax.stop_gradient(logits_u),
               fn(jax.tree.map(lambda a, r: a + r, u, r_adv)))
  loss_u = supervised.masked_mean(kl, mask_u)
  p_u = jax.nn.softmax(logits_u.astype(jnp.float32), axis=-1)
  loss_ent = supervised.masked_mean(_soft_ce.soft_ce(logits_u, p_u), mask_u)
  weight = lambda_u * mixup.ramp(step, total_steps, warmup)
  aux = {'loss_x': loss_x, 'loss_u': loss_u, 'loss_ent': loss_ent, 'weight': weight,
         'r_norm': supervised.masked_mean(_row_norm(r_adv), mask_u)}
  return (loss_x + weight * loss_u + lambda_ent * loss_ent, aux, None,
          jax.lax.stop_gradient(logits_x), jax.lax.stop_gradient(logits_u))
