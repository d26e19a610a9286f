"""Online semi-supervised algorithms as pure functions, one module per algorithm.

Every module `w2s.ssl.<name>` has the same interface, which the SSL train step calls:

  NEEDS_TEACHER: bool
      True (Mean Teacher): the step keeps an EMA copy of the student (decay: the module's
      `EMA_DECAY`) and passes its logits on the weak view as `logits_ut`.
  NEEDS_LABELLED_STRONG: bool (optional, default False)
      True (DeFixMatch): the step also runs the student on a strong view A(x_l) of the labelled
      batch and passes those logits as `logits_xs` [B, C].
  PROJECTION: int (optional, default 0)
      > 0 (SimMatch): the model gets a projection head of that width on its pooled features
      (`w2s.ssl_heads`; models with `features`: cnn, resnet, the text classifiers), and `loss`
      also gets feats_x [B, D], feats_uw [M, D], feats_us [M, D] (unit-norm embeddings of the
      same passes as logits_x, logits_uw, logits_us; with gradient) and index_x [B] int32 (rows
      of L); `init_state` also gets num_labelled (|L|) and rng (a key).
  init_state(*, num_classes, num_unlabelled, **hparams) -> dict        (stateful modules only)
      The algorithm's state (a pytree of arrays), kept by the step across steps and checkpoints.
  loss(*, logits_x, labels_x, mask_x, logits_uw, logits_us, mask_u, step, total_steps,
       state=None, index_u=None, logits_ut=None, **hparams) -> (loss, aux, new_state)

Args of `loss`:
  logits_x   [B, C] student logits on the labelled batch (weak view a(x_l)).
  labels_x   [B, C] soft or one-hot labels.
  mask_x     [B]    1 real row, 0 padding.
  logits_uw  [M, C] student logits on the weak view a(x_u), with gradient.
  logits_us  [M, C] student logits on the strong view A(x_u), with gradient.
  mask_u     [M]    1 real row, 0 padding.
  step       int32 scalar (may be traced); total_steps: python int (static).
  state      the dict from `init_state` (None for stateless algorithms).
  index_u    [M] int32 rows of the unlabelled split U (per-example state, FlexMatch);
             real rows of one batch must be distinct.
  logits_ut  [M, C] EMA-teacher logits on the weak view (NEEDS_TEACHER only, else None).
Each algorithm applies `jax.lax.stop_gradient` where its paper does (pseudo-labels and
thresholds come from sg(softmax(logits_uw)); Mean Teacher's target is the teacher).

Returns:
  loss       float32 scalar: mean supervised CE over the real labelled rows + the weighted
             unsupervised term, averaged over the real unlabelled rows as the paper defines it.
  aux        dict of float32 scalars for logging: always 'loss_x' and 'loss_u'; 'mask_rate'
             (share of real unlabelled rows passing the confidence threshold) where there is a
             threshold; plus per-algorithm extras (ramp weight, thresholds). Pseudo-label
             accuracy needs the hidden labels of U and is the step's job.
  new_state  the updated state (same structure as `state`), or None.

Padding rows never change the loss, the aux or the state. Everything is jittable; batch
statistics (FreeMatch's EMAs, FlexMatch's counts) are global under jit on sharded arrays.
`dist_align` is a shared piece (distribution alignment, SoftMatch / AdaMatch / ReMixMatch), not an
algorithm; so is `mixup` (sharpening, MixUp, the float-input check of the input-level ones).

Input-level algorithms (MixMatch, ReMixMatch, VAT, Arazo et al.) mix or perturb the inputs
themselves, which logits cannot express. Such a module sets
  INPUT_LEVEL: bool = True
and its `loss` takes the student and the views instead of logits:
  loss(*, apply, x, labels_x, mask_x, u_view, mask_u, rng, step, total_steps, state=None,
       index_u=None, **hparams) -> (loss, aux, new_state, logits_x, logits_uw)
  apply      apply(inputs: dict, key) -> [N, C] logits of the student (train mode, dropout from
             key; key None: eval mode), differentiable w.r.t. the params and the inputs.
  x          dict of the labelled batch's input fields [B, ...] (weak view a(x_l)).
  u_view     u_view(kind, k) -> dict [M, ...]: the k-th 'weak' or 'strong' view of U (k = 0 is
             the one the logit-level algorithms get; each k has its own key).
  rng        a key of the algorithm's own (MixUp's lambda and pairing, VAT's d, dropout).
  logits_x, logits_uw  [B, C], [M, C] sg logits of the unmixed labelled batch and of the first
             weak view of U, for the step's 'accuracy' and 'pseudo_acc' metrics only.
The other arguments, the aux, the state and the padding rule are as above; float input fields
only (integer token ids are a UserError). NEEDS_TEACHER, NEEDS_LABELLED_STRONG and PROJECTION do
not apply.
`defixmatch.loss` also takes logits_xs [B, C] (a strong view of x_l), which the step does not pass.
"""

ALGORITHMS = ('supervised', 'pseudo_label', 'pi_model', 'mean_teacher', 'fixmatch', 'uda',
              'flexmatch', 'freematch', 'doubly_robust', 'softmatch', 'adamatch', 'dash',
              'defixmatch', 'mixmatch', 'remixmatch', 'vat', 'arazo', 'adsh', 'simmatch')
