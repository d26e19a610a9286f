"""Input views: what one role of a study sees of each example (registry kind 'views').

A view is a module `w2s/views/<name>.py` with `apply(raw, *, input_kind, **hparams) -> raw`: a pure,
deterministic function of the raw Examples (the same example always gives the same view), applied
before featurizing. A weak supervisor of a W2S study often sees a degraded input (pooled pixels,
truncated text, a subset of features): `weak.input = dict(name='avg_pool', size=4)`.
"""
