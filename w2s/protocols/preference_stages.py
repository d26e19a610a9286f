"""The stages the preference protocol's judges and students share (w2s/protocols/preference.py):
pairs as tokens and trainer rows, a decoder used as it is, reward-model fits, and one seed's
fit / score / generate helpers.
"""
from typing import Mapping

import jax
import numpy as np

from w2s.generative import tokens
from w2s.protocols import generative_stages as gs
from w2s.protocols import preference_results as pr
from w2s.protocols.stages import Stage

RESPONSES = ('response_a', 'response_b')


def encode(opts, raw: Mapping) -> dict:
  """tokens.encode_pairs of raw's (prompt, response_a, response_b): [N, 2, T] arrays."""
  a, b = ([str(x) for x in raw[k]] for k in RESPONSES)
  return tokens.encode_pairs(gs.prompts_of(raw, opts.template), a, b, opts.tokenizer,
                             max_length=opts.max_length, max_prompt_length=opts.max_prompt_length,
                             ids=np.asarray(raw['id']).tolist())


def token_key(opts) -> tuple:
  """What decides a pair's tokens by id: the data, the template, the tokenizer, max_length (and
  max_prompt_length when set, so that runs without it keep their stores)."""
  key = (opts.dataset.spec(), opts.tokenizer, opts.template, opts.max_length)
  return key if opts.max_prompt_length is None else key + (opts.max_prompt_length,)



class Frozen:
  """A decoder used as it is (no pretraining stage): its checkpoint's parameters, loaded when
  first asked for; the reference of policies trained from a pretrained=DIR model."""

  def __init__(self, stage: Stage, module, length: int):
    self.stage, self.module, self.length, self._params = stage, module, length, None

  def params(self):
    if self._params is None:
      from w2s.models import hf_import
      self._params = hf_import.init_params(self.module, jax.random.PRNGKey(0),
                                           gs.init_batch(self.length))
    return self._params


def pair_rows(enc: Mapping, ids, labels, ref_logp=None) -> dict:
  """Trainer rows of pairs: 'id', the [N, 2, T] token arrays, 'label' [N, 2] (soft preference),
  'confidence' [N] = max label (wdpo) and, for policies, 'ref_logp' [N, 2]."""
  labels = np.asarray(labels, np.float32)
  rows = {'id': np.asarray(ids, np.int64), 'input_ids': enc['input_ids'],
          'attention_mask': enc['attention_mask'], 'loss_mask': enc['loss_mask'],
          'label': labels, 'confidence': labels.max(axis=-1)}
  if ref_logp is not None:
    rows['ref_logp'] = np.asarray(ref_logp, np.float32)
  return rows


def fit_rewards(stage: Stage, module, examples: dict, *, topts, mesh, init_params, val_examples,
                eval_batch_size: int, length: int, apply_fn):
  """`train.fit` of a reward-model stage (`sequence.reward_apply_fn`: rewards [B, 2] of pairs)
  in the stage's directory; the classification evaluator scores val by its loss and pairwise
  accuracy."""
  from w2s import train
  return train.fit(module, examples, cfg=topts, workdir=stage.dir, mesh=mesh,
                   init_params=init_params, name=stage.kind, fingerprint={'stage': stage.key},
                   val_examples=val_examples if topts.eval_every else None,
                   eval_batch_size=eval_batch_size, apply_fn=apply_fn,
                   init_batch=gs.init_batch(length))



class SeedContext:
  """One seed's fit / scores / generation helpers, shared by both judges."""

  def __init__(self, opts, seed, mesh, root, fns, modules):
    self.opts, self.seed, self.mesh, self.root, self.fns = opts, seed, mesh, root, fns
    self.modules, self.test_rows = modules, None

  def fit(self, stage, kind, module, init, train_rows, val_rows, section, loss):
    """A lazily trained stage: kind 'reward_model' (rewards of pairs), else token-level."""
    opts = self.opts
    topts = gs.learners.train_options(section, stage.kind, loss=loss, seed=self.seed,
                                      run=dict(opts.run))
    init_params = (lambda _targets: init.params()) if init is not None else None
    kw = dict(topts=topts, mesh=self.mesh, init_params=init_params, val_examples=val_rows,
              eval_batch_size=opts.eval_batch_size, length=opts.max_length)
    if kind != 'reward_model':
      return gs.Trained(stage, module, lambda: gs.fit_tokens(stage, module, train_rows, **kw))
    apply_fn = self.fns['reward_weak' if module is self.modules['weak'] else 'reward_strong']
    return gs.Trained(stage, module, lambda: fit_rewards(stage, module, train_rows,
                                                         apply_fn=apply_fn, **kw))

  def scores(self, trained, what, fn, name=None, key=None):
    return pr.Scores(self.root, trained, what, self.fns[fn],
                     key=token_key(self.opts) if key is None else key,
                     batch_size=self.opts.eval_batch_size, mesh=self.mesh, name=name)

  def gen(self, trained, sampling):
    return gs.Generator(self.root, trained, sampling, tokenizer=self.opts.tokenizer,
                        prompt_key=(self.opts.template,), mesh=self.mesh, seed=self.seed)

  def encode(self, raw):
    return encode(self.opts, raw)
