"""DeFixMatch: FixMatch's unlabelled term minus the same term computed on the labelled batch.

Schmutz, Humbert, Mattei 2023, "Don't fear the unlabelled: safe semi-supervised learning via
debiasing" (ICLR); USB's defixmatch:

  L_fix(S) = (1 / |S|) sum_{x in S} 1(max q(a(x)) >= tau) H(q^(a(x)), p(A(x)))
  L = (CE(a(x_l)) + CE(A(x_l))) / 2 + lambda_u (L_fix(U) - L_fix(L))

with q = sg(softmax(z)), q^ = onehot(argmax q). The labelled rows' own pseudo-label term has the
same expectation as the unlabelled one when L and U come from the same distribution, so the
difference is an unbiased (zero-mean) correction of the supervised risk: whatever the
pseudo-labels' quality, the objective is the supervised risk plus a control variate
(doubly-robust in spirit, compare `w2s.ssl.doubly_robust`).

Interface: L_fix(L) needs the student's logits on a strong view A(x_l) of the labelled batch:
the module sets NEEDS_LABELLED_STRONG, so the SSL step (w2s/ssl_step.py) passes them as
`logits_xs` [B, C] and the loss is the exact form above. A caller without them (logits_xs=None)
gets a weaker variant: the labelled CE is the weak view's alone and L_fix(L) uses the weak view as
target and prediction, L_fix(L) = (1 / B) sum_l 1(max q(a(x_l)) >= tau) H(q^(a(x_l)), p(a(x_l))),
whose expectation is no longer that of L_fix(U) (the correction is weaker than the paper's).

Defaults (USB = the paper): tau 0.95, lambda_u 1, hard labels (`hard=False`: softmax(z / T),
T 0.5, as `w2s.ssl.fixmatch`; USB's code feeds probabilities, i.e. T = 1).
"""
from w2s.ssl import fixmatch
from w2s.ssl import supervised

NEEDS_TEACHER = False
NEEDS_LABELLED_STRONG = True  # the step passes logits_xs = z(A(x_l))


def loss(*, logits_x, labels_x, mask_x, logits_uw, logits_us, mask_u, step=None,
         total_steps=None, state=None, index_u=None, logits_ut=None, logits_xs=None,
         tau: float = 0.95, lambda_u: float = 1.0, hard: bool = True, T: float = 0.5):
  """CE(x_l) + lambda_u * (L_fix(U) - L_fix(L)) (Schmutz et al. 2023).

  Args: see `w2s.ssl`; logits_xs [B, C] (optional) student logits on a strong view of the
    labelled batch; tau (0.95), lambda_u (1), hard (True), T (0.5, soft targets only).

  Returns:
    (loss, {'loss_x', 'loss_u' (= L_fix(U) - L_fix(L)), 'loss_fix_u', 'loss_fix_x',
     'mask_rate' (unlabelled), 'mask_rate_x' (labelled)}, None).
  """
  del step, total_steps, state, index_u, logits_ut
  loss_x = supervised.labelled_ce(logits_x, labels_x, mask_x)
  pred_x = logits_x
  if logits_xs is not None:
    loss_x = 0.5 * (loss_x + supervised.labelled_ce(logits_xs, labels_x, mask_x))
    pred_x = logits_xs
  conf_u, _ = fixmatch.confidence(logits_uw)
  keep_u = conf_u >= tau
  fix_u = fixmatch.masked_ce(logits_us, logits_uw, keep_u, mask_u, hard=hard, T=T)
  conf_x, _ = fixmatch.confidence(logits_x)
  keep_x = conf_x >= tau
  fix_x = fixmatch.masked_ce(pred_x, logits_x, keep_x, mask_x, hard=hard, T=T)
  aux = {'loss_x': loss_x, 'loss_u': fix_u - fix_x, 'loss_fix_u': fix_u, 'loss_fix_x': fix_x,
         'mask_rate': supervised.masked_mean(keep_u.astype(fix_u.dtype), mask_u),
         'mask_rate_x': supervised.masked_mean(keep_x.astype(fix_u.dtype), mask_x)}
  return loss_x + lambda_u * (fix_u - fix_x), aux, None
