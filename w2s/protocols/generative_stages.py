"""The stages the generative protocols share: decoder roles, causal-LM pretraining on a corpus,
SFT, generation kept by example id, and exact-match evaluation.

A decoder role (`weak`, `strong`) is a model section plus an optional `pretrain` section (a
`train` section for causal-LM training on the protocol's corpus, a stage keyed by the corpus, the
model and that section, shared by every seed and every student), a `train` section for its
fine-tuning stages and their loss (default 'sft'). Every trained stage is the one trainer's
`fit` with the token-level apply function (`w2s.models.sequence.lm_apply_fn`) and resumes like
any stage; generations live in `ByIdStore`s keyed by the stage that produced them and the
sampling options, so a rerun, another student or another seed reads instead of generating.
"""
import dataclasses
import os
import time
from typing import Any, Callable, Mapping

import jax
import numpy as np

from w2s import metrics, options, sharding, train
from w2s.errors import UserError
from w2s.generative import answers as answers_lib
from w2s.data import text
from w2s.generative import sampling, templates, tokens
from w2s.models import sequence
from w2s.protocols import by_id_store, learners
from w2s.protocols.stages import Stage

ROLE_KEYS = ('model', 'pretrain', 'train', 'loss')
SAMPLING_KEYS = ('num_samples', 'temperature', 'top_p', 'max_new_tokens', 'batch_size')
GREEDY = {'num_samples': 1, 'temperature': 0.0, 'top_p': 1.0}


@dataclasses.dataclass(frozen=True)
class DecoderRole:
  """A decoder role: its model, optional pretraining section, fine-tuning section and loss."""
  role: str
  model: options.Plugin
  pretrain: Mapping[str, Any] | None
  train: Mapping[str, Any]
  loss: options.Plugin

  @classmethod
  def from_section(cls, role: str, section, *, default_loss: str = 'sft') -> 'DecoderRole':
    s = options.plain(section)
    if not isinstance(s, dict):
      raise UserError(f'{role} must be a section dict(model=..., pretrain=..., train=...)')
    options.check_keys(s, ROLE_KEYS, role)
    if 'model' not in s or 'train' not in s:
      raise UserError(f'{role} needs model=dict(name=...) and train=dict(...)')
    return cls(role, options.plugin('models', s['model'], f'{role}.model'), s.get('pretrain'),
               s['train'], options.plugin('losses', s.get('loss') or {'name': default_loss},
                                          f'{role}.loss'))

  def pretrain_spec(self) -> dict:
    return {'model': self.model.spec(), 'pretrain': self.pretrain}

  def spec(self) -> dict:
    return {**self.pretrain_spec(), 'train': self.train, 'loss': self.loss.spec()}


def make_decoder(role: DecoderRole, num_classes: int = 1):
  """The role's model as a decoder TextClassifier (LM head on: `lm` gives [B, T, V] logits); an
  encoder or a model without a KV cache is a UserError naming the decoder families."""
  hp = {k: v for k, v in role.model.hparams.items() if k != 'lm_head'}
  not_decoder = UserError(f'{role.role}.model {role.model.name!r} is not a decoder; generative '
                          'stages need gpt2, llama (Qwen2, Mistral) or gpt_neox')
  try:
    module = options.build(dataclasses.replace(role.model, hparams=hp), f'{role.role}.model',
                           num_classes=num_classes, lm_head=True)
  except UserError as e:
    if 'encoder' in str(e) or 'lm_head' in str(e):  # bert: "an encoder has no LM head"
      raise not_decoder from e
    raise
  backbone = getattr(module, 'backbone', None)
  if not hasattr(getattr(backbone, 'config', None), 'kv_cache_shape'):
    raise not_decoder
  return module


def vocab_size(module) -> int:
  return int(module.backbone.config.vocab_size)


def init_batch(length: int) -> dict:
  """What `module.init` reads (the classification call on [1, T] tokens), whatever the rows."""
  return {'input_ids': np.zeros((1, length), np.int32),
          'attention_mask': np.ones((1, length), np.int32)}


def token_examples(enc: Mapping, ids, weights=None) -> dict:
  """Trainer rows from `tokens.encode_sft` output: 'id', the token arrays and 'label' [N, 1]
  (the sequence weights, 1 by default)."""
  n = len(ids)
  w = np.ones(n, np.float32) if weights is None else np.asarray(weights, np.float32)
  return {'id': np.asarray(ids, np.int64), 'input_ids': enc['input_ids'],
          'attention_mask': enc['attention_mask'], 'loss_mask': enc['loss_mask'],
          'label': w[:, None]}


class Trained:
  """A stage's parameters, trained (or restored from its finished checkpoint) only when first
  asked for: a rerun whose generations are all stored never builds them."""

  def __init__(self, stage: Stage, module, fit_fn: Callable[[], Any]):
    self.stage, self.module, self._fit = stage, module, fit_fn
    self._params = None
    self.last: dict = {}

  def params(self):
    if self._params is None:
      with self.stage.lock(), metrics.stage(self.stage.position):
        state, self.last = self._fit()
        self._params = state.params
        if not self.stage.done():
          self.stage.finish({'steps': np.int64(np.max(state.step))},
                            {'train_metrics': self.last, 'steps': int(np.max(state.step))})
    return self._params


def fit_tokens(stage: Stage, module, examples: dict, *, topts, mesh, init_params=None,
               val_examples: dict | None = None, eval_batch_size: int, length: int):
  """`train.fit` of a token-level stage in the stage's directory (resumes; a finished stage
  returns its final state)."""
  return train.fit(module, examples, cfg=topts, workdir=stage.dir, mesh=mesh,
                   init_params=init_params, name=stage.kind, fingerprint={'stage': stage.key},
                   val_examples=val_examples if topts.eval_every else None,
                   eval_batch_size=eval_batch_size, apply_fn=sequence.lm_apply_fn(module),
                   init_batch=init_batch(length))


def pretrain(stage: Stage, role: DecoderRole, module, corpus_rows: dict, *, run: dict, mesh,
             eval_batch_size: int) -> Trained:
  """The role's causal-LM pretraining on the corpus rows (`tokens.pack_documents`), lazily."""
  topts = learners.train_options(role.pretrain, f'{role.role}.pretrain',
                                 loss=options.plugin('losses', {'name': 'sft'}, 'pretrain.loss'),
                                 seed=0, run=run)
  ex = token_examples(corpus_rows, np.arange(len(corpus_rows['input_ids'])))
  length = corpus_rows['input_ids'].shape[1]
  return Trained(stage, module, lambda: fit_tokens(stage, module, ex, topts=topts, mesh=mesh,
                                                   eval_batch_size=eval_batch_size, length=length))


@dataclasses.dataclass(frozen=True)
class Sampling:
  num_samples: int = 1
  temperature: float = 0.0
  top_p: float = 1.0
  max_new_tokens: int = 16
  batch_size: int = 64

  @classmethod
  def from_section(cls, section, where: str) -> 'Sampling':
    s = options.plain(section or {})
    options.check_keys(s, SAMPLING_KEYS, where)
    out = cls(**s)
    options.positive(out.num_samples, f'{where}.num_samples')
    options.positive(out.max_new_tokens, f'{where}.max_new_tokens')
    options.positive(out.batch_size, f'{where}.batch_size')
    options.positive(out.temperature, f'{where}.temperature', kind=float, allow_zero=True)
    if not 0 < out.top_p <= 1:
      raise UserError(f'{where}.top_p={out.top_p} must be in (0, 1]')
    if out.num_samples > 1 and out.temperature == 0:
      raise UserError(f'{where}: num_samples={out.num_samples} greedy samples are identical; '
                      'set temperature > 0 or num_samples=1')
    return out

  def greedy(self) -> 'Sampling':
    return dataclasses.replace(self, **GREEDY)


class Generator:
  """Continuations of prompts by one trained stage, kept by example id (one store per stage and
  sampling options)."""

  def __init__(self, root: str, trained: Trained, sampling_opts: Sampling, *, tokenizer: str,
               prompt_key, mesh, seed: int = 0, name: str | None = None):
    self.trained, self.opts, self.tokenizer, self.mesh = trained, sampling_opts, tokenizer, mesh
    spec = dataclasses.asdict(sampling_opts)
    self.store = by_id_store.ByIdStore(
        root, 'generations', name or trained.stage.kind, ('texts',),
        (trained.stage.key, spec, prompt_key, seed), spec={'stage': trained.stage.kind, **spec})
    self.seed = seed
    self.new_tokens = 0

  def texts(self, raw: Mapping, prompts: list[str]) -> np.ndarray:
    """[N, num_samples] generated texts (end-of-text dropped) for `raw`'s ids."""
    by_id = dict(zip(np.asarray(raw['id'], np.int64).tolist(), prompts))
    what = f'generations {self.store.name}'

    def produce(sub):
      return {'id': sub['id'], 'texts': self._generate([by_id[int(i)] for i in sub['id']],
                                                       sub['id'], what)}
    return self.store.get(raw, produce, chunk=max(self.opts.batch_size * 4, 256),
                          what=what)['texts']

  def _generate(self, prompts: list[str], ids, what: str) -> np.ndarray:
    o = self.opts
    module, params = self.trained.module, self.trained.params()
    enc = tokens.encode_prompts(prompts, self.tokenizer, max_length=max_prompt_tokens(module, o))
    encoded = [row[m.astype(bool)].tolist() for row, m in zip(enc['input_ids'],
                                                               enc['attention_mask'])]
    tok = text.load_tokenizer(self.tokenizer)
    eos, pad = tokens.eos_id(tok), text.pad_token(tok)[0]
    progress = metrics.Progress(what, len(prompts) * o.num_samples, unit='prompt',
                                min_interval_s=5.0)
    done, t0 = [0], time.perf_counter()

    def on_batch(rows, new):
      done[0] += rows
      self.new_tokens += new
      progress.update(done[0], extra=f'{self.new_tokens / max(time.perf_counter() - t0, 1e-9):.0f}'
                                     ' tok/s')
    out = np.empty((len(prompts), o.num_samples), dtype=object)
    base = jax.random.key(self.seed)
    for j in range(o.num_samples):
      seqs = sampling.generate_rows(
          module, params, encoded, sampling.row_keys(base, ids, j), mesh=self.mesh,
          batch_size=o.batch_size, max_new_tokens=o.max_new_tokens, temperature=o.temperature,
          top_p=o.top_p, eos_id=eos, pad_id=pad, on_batch=on_batch)
      for i, t in enumerate(tok.decode_batch(seqs, skip_special_tokens=False)):
        out[i, j] = t
    return out.astype(str)


def max_prompt_tokens(module, o: Sampling) -> int:
  """Prompt tokens that fit the model's learned positions with max_new_tokens after them."""
  limit = getattr(module.backbone.config, 'position_limit', None)
  return (limit - o.max_new_tokens) if limit is not None else 4096


def prompts_of(raw: Mapping, template: str) -> list[str]:
  return templates.render_all(template, {k: np.asarray(v) for k, v in raw.items()})


def answers_of(texts, extractor: str) -> list:
  """The extracted answer of each text (None where it has none), never raising: a model that
  answers nothing scores 0 (the weak generations a student learns from are checked with
  `answers.extract`, which refuses an extractor that matches none)."""
  fn = answers_lib.extractor(extractor)
  return [fn(str(t)) for t in texts]


def exact_match(texts, gold, extractor: str) -> np.ndarray:
  """[N] 1.0 where the extracted answer of a (greedy) generation equals the gold answer's."""
  return np.asarray(answers_lib.exact_match(answers_of(texts, extractor),
                                            answers_of(gold, extractor)), np.float64)


def check_decoders(a, b, what: str) -> None:
  """Two decoders that must share a vocabulary (a policy and its reference, weak and strong
  samples read by each other)."""
  if vocab_size(a) != vocab_size(b):
    raise UserError(f'{what}: vocabularies differ ({vocab_size(a)} vs {vocab_size(b)} tokens); '
                    'use models with one tokenizer')


@dataclasses.dataclass(frozen=True)
class RunFields:
  """The run-level fields of every generative protocol's Options (`run_options` fills them)."""
  seeds: tuple[int, ...]
  eval_batch_size: int
  run: Mapping[str, int]
  num_devices: int
  mesh_shape: Any
  shared_dir: str


def check_train_sections(trains, opts: RunFields, splits: Mapping) -> None:
  """Every (where, train section, loss) of a protocol's stages checked as its fit will read it;
  held-out evaluation (`eval_every`) needs a val slice."""
  for where, section, loss in trains:
    topts = learners.train_options(section, where, loss=loss, seed=0, run=dict(opts.run))
    if topts.eval_every and not splits.get('val_fraction'):
      raise UserError(f'{where}.eval_every needs splits.val_fraction > 0')


def require(c: Mapping, keys, protocol: str) -> None:
  """A UserError naming the first of `keys` the config lacks."""
  for key in keys:
    if key not in c:
      raise UserError(f'config.{key} is required by the {protocol} protocol')


def run_options(c: Mapping) -> dict:
  """The run-level fields every generative protocol's Options has, checked: seeds,
  eval_batch_size, run (log / checkpoint settings), num_devices, mesh_shape, shared_dir."""
  mesh = c.get('mesh') or {}
  options.check_keys(mesh, ('num_devices', 'shape'), 'mesh')
  shared = c.get('shared_dir') or ''
  if not isinstance(shared, str):
    raise UserError(f'shared_dir={shared!r} must be a directory path (or empty: the workdir)')
  return dict(seeds=options.seeds_of(c['seeds']),
              eval_batch_size=options.positive(c['eval_batch_size'], 'eval_batch_size'),
              run=options.run_settings(c),
              num_devices=options.positive(mesh.get('num_devices', 0), 'mesh.num_devices',
                                           allow_zero=True),
              mesh_shape=mesh.get('shape'),
              shared_dir=os.path.abspath(os.path.expanduser(shared)) if shared else '')


def mesh_of(num_devices: int, shape) -> Any:
  return sharding.make_mesh(num_devices, shape)


def stage_dirs(root: str, stages) -> dict[str, str]:
  return {st.kind: os.path.relpath(st.dir, root) for st in stages}
