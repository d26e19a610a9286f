"""Weak-to-strong search as a protocol: a frozen large decoder guided at test time by a small one.

Zhou et al. 2024, "Weak-to-Strong Search: Align Large Language Models via Searching over Small
Language Models". The arithmetic world and the pretraining stages are the generative protocol's
(w2s/protocols/generative.py); roles:

* `large`: a decoder pretrained on the corpus (or loaded, `pretrained=DIR`) and never fine-tuned;
* `small`: the untuned small model is its pretraining stage (or the loaded checkpoint), the tuned
  one its SFT on A's gold answers (`splits.weak_to_strong`), selected on val's gold answers. The
  stage kinds and keys are the generative protocol's (`pretrain_strong`, `pretrain_weak`, `weak`),
  so the two protocols share those stages under one shared_dir.

Per seed (the split seed), on the test prompts [N] (`search` section: beam_width W,
samples_per_beam K, chunk_length L, max_new_tokens, temperature, top_p, batch_size):

* guided: `w2s.generative.search` of the large model by tuned / untuned small;
* unguided: the large model's own sample drawn chunk by chunk with the same keys (the search with
  W = K = 1 and no scoring: a paired comparison), and its greedy answer;
* tuned small: the small tuned model's greedy answer.

Every prompt is searched with its own key (`sampling.row_keys(key(seed), id)`; `search_rows` vmaps
the search over the prompts of a batch), so a row's answer depends only on the row: the answers
live in `ByIdStore`s keyed by the stages and settings that produced them, and a rerun or a
preempted run produces only the missing rows. Scores: exact-match accuracy of the extracted answers
(`answer.extractor`), the guided - unguided paired difference over seeds (Student-t intervals, none
below 3 seeds) and the mean guided score log pi_tuned(y | x) - log pi_untuned(y | x).
"""
import dataclasses
import functools
import time
from typing import Any, Mapping

import jax
import numpy as np

from w2s import metrics, options, scores, sharding
from w2s.data import splits as splits_lib
from w2s.data import text
from w2s.errors import UserError
from w2s.generative import answers as answers_lib, sampling, templates, tokens
from w2s.generative import search as search_lib
from w2s.models import hf_import
from w2s.protocols import by_id_store, generative
from w2s.protocols import generative_stages as gs
from w2s.protocols import results as results_lib
from w2s.protocols.stages import Stage, number_stages

TOP_KEYS = ('protocol', 'dataset', 'splits', 'tokenizer', 'template', 'answer', 'max_length',
            'corpus', 'large', 'small', 'search', 'seeds', 'eval_batch_size', 'log_every',
            'checkpoint_every', 'keep_checkpoints', 'mesh', 'shared_dir', 'smoke')
METRICS = ('acc_guided', 'acc_unguided', 'acc_greedy', 'acc_tuned', 'score_guided')
PAIRED = (('guided - unguided', 'acc_guided', 'acc_unguided'),
          ('guided - greedy', 'acc_guided', 'acc_greedy'))
NO_POSITION_LIMIT = 4096  # prompt tokens read for models with no learned position table


@dataclasses.dataclass(frozen=True)
class Settings:
  """The `search` section: W, K, L, the answer length and the large model's sampling."""
  beam_width: int = 4
  samples_per_beam: int = 4
  chunk_length: int = 2
  max_new_tokens: int = 16
  temperature: float = 0.7
  top_p: float = 1.0
  batch_size: int = 64

  @classmethod
  def from_section(cls, section) -> 'Settings':
    s = options.plain(section or {})
    options.check_keys(s, [f.name for f in dataclasses.fields(cls)], 'search')
    out = cls(**s)
    for name in ('beam_width', 'samples_per_beam', 'chunk_length', 'max_new_tokens', 'batch_size'):
      value = getattr(out, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f'search.{name}={value!r} must be an integer >= 1')
    if out.chunk_length > out.max_new_tokens:
      raise UserError(f'search.chunk_length={out.chunk_length} exceeds search.max_new_tokens='
                      f'{out.max_new_tokens}; use chunks of at most the answer length')
    if not out.temperature > 0 or not 0 < out.top_p <= 1:
      raise UserError(f'search samples: need search.temperature > 0 and 0 < search.top_p <= 1, '
                      f'got {out.temperature}, {out.top_p}')
    return out

  def rounded(self) -> int:
    """Response slots of the search: max_new_tokens rounded up to whole chunks."""
    return -(-self.max_new_tokens // self.chunk_length) * self.chunk_length


@dataclasses.dataclass(frozen=True)
class Options(gs.RunFields):
  dataset: options.Plugin
  splits: Mapping[str, Any]
  tokenizer: str
  template: str
  answer_field: str
  extractor: str
  max_length: int
  corpus: Mapping[str, Any] | None
  large: gs.DecoderRole
  small: gs.DecoderRole
  search: Settings


def resolve(config) -> Options:
  c = options.plain(config)
  options.check_keys(c, TOP_KEYS, 'config')
  gs.require(c, ('dataset', 'splits', 'tokenizer', 'template', 'large', 'small', 'search', 'seeds',
              'eval_batch_size'), 'search')
  answer = dict(c.get('answer') or {})
  options.check_keys(answer, ('field', 'extractor'), 'answer')
  extractor = answer.get('extractor', 'last_number')
  answers_lib.extractor(extractor)  # an unknown one fails now
  large = dict(c['large'] or {})
  options.check_keys(large, ('model', 'pretrain'), 'large')  # frozen: no train section
  if 'model' not in large:
    raise UserError('large needs model=dict(name=...) (the frozen large decoder)')
  sft = options.plugin('losses', {'name': 'sft'}, 'loss')
  large = gs.DecoderRole('large', options.plugin('models', large['model'], 'large.model'),
                         large.get('pretrain'), {}, sft)
  small = gs.DecoderRole.from_section('small', c['small'])
  corpus = c.get('corpus')
  if corpus is not None:
    options.check_keys(corpus, generative.CORPUS_KEYS, 'corpus')
  for role in (large, small):
    if (role.pretrain is None) != (corpus is None):
      raise UserError(f'{role.role}.pretrain and corpus go together: give both (pretraining '
                      'on the corpus) or neither (the model as it is, e.g. pretrained=DIR)')
  return Options(
      dataset=options.plugin('datasets', c['dataset'], 'dataset'), splits=c['splits'],
      tokenizer=str(c['tokenizer']), template=str(c['template']),
      answer_field=answer.get('field', 'answer'), extractor=extractor,
      max_length=options.positive(c.get('max_length', 64), 'max_length'), corpus=corpus,
      large=large, small=small, search=Settings.from_section(c['search']),
      **gs.run_options(c))


def check(config):
  """(Options, dataset, large module, small module, prompt width): everything checked that can be
  without training (--dry_run). The prompt width is the longest test prompt in tokens."""
  from w2s import train
  opts = resolve(config)
  dataset = options.build(opts.dataset, 'dataset')
  sample = {k: np.asarray(v)[:4] for k, v in dataset.splits['train'].items()}
  templates.check(opts.template, sample.keys())
  if opts.answer_field not in sample:
    raise UserError(f'answer.field={opts.answer_field!r} is not a field of {opts.dataset.name}; '
                    f'it has {sorted(sample)}')
  large, small = gs.make_decoder(opts.large), gs.make_decoder(opts.small)
  gs.check_decoders(large, small, 'large and small decoders (weak-to-strong search scores the '
                    "large model's tokens with the small ones)")
  tok = text.load_tokenizer(opts.tokenizer)
  if tok.get_vocab_size() > gs.vocab_size(large):
    raise UserError(f'tokenizer {opts.tokenizer} has {tok.get_vocab_size()} tokens but the models '
                    f'only {gs.vocab_size(large)}; set the models\' vocab_size or the tokenizer')
  tokens.encode_sft(gs.prompts_of(sample, opts.template),
                    [str(a) for a in sample[opts.answer_field]], opts.tokenizer,
                    max_length=opts.max_length)
  if 'test' not in dataset.splits:
    raise UserError(f'dataset {opts.dataset.name} has no test split; the search answers test '
                    'prompts')
  width = _prompt_width(opts, dataset.splits['test'], (large, small))
  limit = getattr(small.backbone.config, 'position_limit', None)
  if limit is not None and opts.max_length > limit:
    raise UserError(f'max_length={opts.max_length} exceeds small\'s {limit} positions')
  train.check_loss(opts.small.loss, num_classes=1, where='small.loss', expect='tokens')
  gs.check_train_sections(_trains(opts), opts, opts.splits)
  return opts, dataset, large, small, width


def _prompt_width(opts: Options, test, modules) -> int:
  """The longest test prompt in tokens; a prompt the search's slots do not fit is a UserError."""
  limits = [getattr(m.backbone.config, 'position_limit', None) for m in modules]
  limit = min((x for x in limits if x is not None), default=None)
  slots = opts.search.rounded()
  room = (limit if limit is not None else NO_POSITION_LIMIT + slots) - slots
  why = (f'search.max_new_tokens={opts.search.max_new_tokens} rounded up to whole chunks of '
         f'{opts.search.chunk_length} ({slots} tokens)')
  if room < 1:
    raise UserError(f'{why} fill the models\' {limit} positions; lower search.max_new_tokens')
  try:
    enc = tokens.encode_prompts(gs.prompts_of(test, opts.template), opts.tokenizer, room)
  except UserError as e:
    raise UserError(f'test prompts + {why} exceed the models\' {limit} positions ({e}); shorten '
                    'the prompts or lower search.max_new_tokens') from e
  return int(enc['attention_mask'].sum(axis=1).max())


def _trains(opts):
  sft = options.plugin('losses', {'name': 'sft'}, 'loss')
  for role in (opts.large, opts.small):
    if role.pretrain is not None:
      yield f'{role.role}.pretrain', role.pretrain, sft
  yield 'small.train', opts.small.train, opts.small.loss


def stage_plan(opts: Options, root: str, seed: int) -> dict:
  """The stages, keyed as the generative protocol keys them (its strong / weak roles)."""
  base = (opts.dataset.spec(), options.plain(opts.splits), opts.tokenizer, opts.template,
          opts.answer_field, opts.max_length, seed)
  plan = {'pretrain': {}}
  for role, shared in ((opts.large, 'strong'), (opts.small, 'weak')):
    if role.pretrain is not None:
      plan['pretrain'][role.role] = Stage(root, f'pretrain_{shared}', opts.corpus,
                                          opts.tokenizer, role.pretrain_spec())
  plan['tuned'] = Stage(root, 'weak', base, opts.small.spec(), seed=seed)
  number_stages([plan['tuned']], opts.seeds.index(seed), len(opts.seeds))
  return plan


class Loaded:
  """A model used as it is (no pretraining stage: a `pretrained=DIR` checkpoint), with the
  interface of `gs.Trained` (`stage`, `module`, `params()`), loaded only when first asked for."""

  def __init__(self, root: str, role: gs.DecoderRole, module, mesh):
    self.stage = Stage(root, f'loaded_{role.role}', role.model.spec())
    self.module, self.mesh, self._params = module, mesh, None

  def params(self):
    if self._params is None:  # on the devices once, not with every batch
      host = hf_import.init_params(self.module, jax.random.key(0), gs.init_batch(8))
      self._params = jax.device_put(host, sharding.replicated(self.mesh))
    return self._params


_library_search = search_lib._search  # pylint: disable=protected-access  # its B = 1 case, vmapped
_corpus_rows = generative._corpus_rows  # pylint: disable=protected-access  # the same corpus


@functools.partial(jax.jit, static_argnames=('large', 'small', 'settings'))
def search_rows(large_params, tuned_params, untuned_params, input_ids, attention_mask, key_data,
                *, large, small, settings):
  """`search_lib.search` of each prompt on its own (vmapped), row b drawing with key b.

  input_ids, attention_mask int32 [B, T] right-padded; key_data uint32 [B, 2] (raw keys of
  `sampling.row_keys`); small None: the unguided draw (settings W = K = 1). settings: sorted
  (name, value) pairs of `_search`'s keyword arguments. Returns tokens int32 [B, N], mask int32
  [B, N], score float32 [B] (0 unguided). The library's search takes one key per batch (row r of
  round c draws with fold_in(fold_in(key, c), r)), which ties a prompt's answer to its batch;
  vmapping its B = 1 case gives each prompt its own key, so stored rows never depend on batching.
  """
  keys = jax.random.wrap_key_data(key_data)

  def one(ids, mask, key):
    out = _library_search(large, large_params, small, tuned_params, small, untuned_params,
                          ids[None], mask[None], key, **dict(settings))
    return tuple(x[0, 0] for x in out)
  return jax.vmap(one)(input_ids, attention_mask, keys)


class Searcher:
  """Guided or unguided answers of test prompts, kept by example id (one store per producer)."""

  def __init__(self, opts: Options, root: str, name: str, large, tuned, untuned, *, seed: int,
               mesh, width: int):
    s, tok = opts.search, text.load_tokenizer(opts.tokenizer)
    guided = tuned is not None
    self.opts, self.mesh, self.width, self.seed = opts, mesh, width, seed
    self.large, self.tuned, self.untuned = large, tuned, untuned
    self.settings = dict(
        beam_width=s.beam_width if guided else 1, samples_per_beam=s.samples_per_beam if guided
        else 1, chunk_length=s.chunk_length, max_new_tokens=s.max_new_tokens,
        temperature=float(s.temperature), top_p=float(s.top_p), eos_id=tokens.eos_id(tok),
        pad_id=text.pad_token(tok)[0])
    producers = [x.stage.key for x in (large, tuned, untuned) if x is not None]
    self.store = by_id_store.ByIdStore(
        root, 'search', name, ('texts', 'score'),
        (producers, self.settings, opts.tokenizer, opts.template, seed),
        spec={'stages': [x.stage.kind for x in (large, tuned, untuned) if x is not None],
              **self.settings, 'seed': seed})

  def get(self, raw: Mapping, prompts: list[str]) -> dict[str, np.ndarray]:
    """{'id', 'texts' [N] answers (end-of-text dropped), 'score' float32 [N]} for raw's ids."""
    by_id = dict(zip(np.asarray(raw['id'], np.int64).tolist(), prompts))
    what = f'search {self.store.name}'

    def produce(sub):
      return self._produce(sub['id'], [by_id[int(i)] for i in sub['id']], what)
    return self.store.get(raw, produce, chunk=self.opts.search.batch_size * 4, what=what)

  def _produce(self, ids, prompts: list[str], what: str) -> dict:
    b = self.opts.search.batch_size
    enc = tokens.encode_prompts(prompts, self.opts.tokenizer, self.width)
    keys = np.asarray(jax.random.key_data(sampling.row_keys(jax.random.key(self.seed), ids)))
    params = [x.params() if x is not None else None for x in (self.large, self.tuned,
                                                               self.untuned)]
    small = self.tuned.module if self.tuned is not None else None
    progress = metrics.Progress(what, len(ids), unit='prompt', min_interval_s=5.0)
    procs, p = jax.process_count(), jax.process_index()
    cols = {'tokens': [], 'mask': [], 'score': []}
    for start in range(0, len(ids), b):
      rows = np.arange(start, min(start + b, len(ids)))
      filled = np.concatenate([rows, np.repeat(rows[:1], b - len(rows))])  # a fixed batch shape
      local = slice(p * b // procs, (p + 1) * b // procs)  # this process's share of the rows
      batch = sharding.host_batch_to_global(
          {'input_ids': enc['input_ids'][filled][local],
           'attention_mask': enc['attention_mask'][filled][local], 'keys': keys[filled][local]},
          self.mesh)
      out = sharding.to_host(search_rows(
          *params, batch['input_ids'], batch['attention_mask'], batch['keys'],
          large=self.large.module, small=small, settings=tuple(sorted(self.settings.items()))))
      for k, v in zip(cols, out):
        cols[k].append(v[:len(rows)])
      progress.update(int(rows[-1]) + 1)
    tok, mask = np.concatenate(cols['tokens']), np.concatenate(cols['mask'])
    return {'id': np.asarray(ids, np.int64), 'score': np.concatenate(cols['score']),
            'texts': np.asarray(tokens.decode(tok, mask, self.opts.tokenizer), str)}


def run(*, config, workdir: str) -> dict:
  t0 = time.time()
  opts, dataset, large_m, small_m, width = check(config)
  mesh = gs.mesh_of(opts.num_devices, opts.mesh_shape)
  sharding.check_batch_size(opts.search.batch_size, mesh, 'search.batch_size')
  root = opts.shared_dir or workdir
  corpus = _corpus_rows(opts, dataset.splits.get('test'))
  per_seed, frozen = [], {}
  for seed in opts.seeds:
    plan = stage_plan(opts, root, seed)
    for role, module in ((opts.large, large_m), (opts.small, small_m)):
      if role.role not in frozen:
        frozen[role.role] = (
            gs.pretrain(plan['pretrain'][role.role], role, module, corpus, run=dict(opts.run),
                        mesh=mesh, eval_batch_size=opts.eval_batch_size)
            if role.role in plan['pretrain'] else Loaded(root, role, module, mesh))
    per_seed.append(_seed(opts, dataset, seed, plan, frozen, small_m, mesh, root, width))
    print(_seed_line(per_seed[-1]), flush=True)
  results = summarize(per_seed, config.to_dict())
  results['wall_s'] = time.time() - t0
  if jax.process_index() == 0:
    print(table(results), flush=True)
  return results


def _seed(opts, dataset, seed, plan, frozen, small_m, mesh, root, width) -> dict:
  t0 = time.time()
  parts = splits_lib.weak_to_strong(dataset, seed=seed, **opts.splits)
  a, test, val = (parts.splits.get(k) for k in ('weak_train', 'test', 'val'))
  gold = lambda raw: [str(x) for x in raw[opts.answer_field]]
  prompts = lambda raw: gs.prompts_of(raw, opts.template)
  truncated = {'prompts': 0, 'responses': 0}

  def sft_rows(raw):
    enc = tokens.encode_sft(prompts(raw), gold(raw), opts.tokenizer, max_length=opts.max_length)
    for k in truncated:
      truncated[k] += int(enc[f'truncated_{k}'])
    return gs.token_examples(enc, raw['id'])

  untuned, large = frozen['small'], frozen['large']
  topts = gs.learners.train_options(opts.small.train, 'small.train', loss=opts.small.loss,
                                    seed=seed, run=dict(opts.run))
  init = (lambda _targets: untuned.params()) if opts.small.pretrain is not None else None
  train_ex, val_ex = sft_rows(a), sft_rows(val) if val is not None else None
  tuned = gs.Trained(plan['tuned'], small_m, lambda: gs.fit_tokens(
      plan['tuned'], small_m, train_ex, topts=topts, mesh=mesh, init_params=init,
      val_examples=val_ex, eval_batch_size=opts.eval_batch_size, length=opts.max_length))
  greedy = gs.Sampling(max_new_tokens=opts.search.max_new_tokens,
                       batch_size=opts.search.batch_size)
  kw = dict(seed=seed, mesh=mesh, width=width)
  searchers = {'guided': Searcher(opts, root, 'guided', large, tuned, untuned, **kw),
               'unguided': Searcher(opts, root, 'unguided', large, None, None, **kw)}
  searched = {k: s.get(test, prompts(test)) for k, s in searchers.items()}
  texts = {k: v['texts'] for k, v in searched.items()}
  for name, trained in (('greedy', large), ('tuned', tuned)):
    texts[name] = gs.Generator(root, trained, greedy, tokenizer=opts.tokenizer,
                               prompt_key=(opts.template,), mesh=mesh,
                               seed=seed).texts(test, prompts(test))[:, 0]
  record = {'seed': seed, 'n_tuned_train': len(a['id']), 'n_test': len(test['id']),
            'score_guided': float(np.mean(searched['guided']['score'])),
            'stages': gs.stage_dirs(root, [plan['tuned'], *plan['pretrain'].values()]),
            'truncated': truncated, 'seconds': {'seed': time.time() - t0, **{
                k: s.store.seconds for k, s in searchers.items()}}}  # a rerun's search: 0
  for name, t in texts.items():
    record[f'acc_{name}'] = float(gs.exact_match(t, gold(test), opts.extractor).mean())
  record['examples'] = [{'prompt': p, 'gold': g, **{k: str(t[i]) for k, t in texts.items()}}
                        for i, (p, g) in enumerate(zip(prompts(test)[:3], gold(test)[:3]))]
  return record


def summarize(per_seed: list[dict], config: dict) -> dict:
  """{'per_seed', 'summary': {metric: SeedSummary dict}, 'paired': {'guided - unguided': ...,
  'guided - greedy': ...} (per-seed accuracy differences), 'seeds', 'config', 'protocol'}."""
  summary = {m: scores.summarize_seeds([r[m] for r in per_seed])._asdict() for m in METRICS}
  paired = {name: scores.paired_difference([r[x] for r in per_seed],
                                           [r[y] for r in per_seed])._asdict()
            for name, x, y in PAIRED}
  return {'protocol': 'search', 'per_seed': per_seed, 'summary': summary, 'paired': paired,
          'seeds': [r['seed'] for r in per_seed], 'config': config}


def _seed_line(r: dict) -> str:
  return (f'[search] seed {r["seed"]}: guided {r["acc_guided"]:.4f}  unguided '
          f'{r["acc_unguided"]:.4f}  greedy {r["acc_greedy"]:.4f}  tuned small '
          f'{r["acc_tuned"]:.4f}  guided score {r["score_guided"]:.3f}')


def table(results: dict) -> str:
  """Exact match (%) per method, mean [95% t-interval] over seeds, then the paired differences."""
  fmt, s = scores.fmt_summary, results['summary']
  rows = [('method', 'exact match (%)'),
          ('large, weak-to-strong search', fmt(s['acc_guided'], 100)),
          ('large, own sample (same keys)', fmt(s['acc_unguided'], 100)),
          ('large, greedy', fmt(s['acc_greedy'], 100)),
          ('small tuned, greedy', fmt(s['acc_tuned'], 100))]
  width = max(len(r[0]) for r in rows)
  lines = [f'{a.ljust(width)}  {b}' for a, b in rows]
  lines.insert(1, f'{"-" * width}  {"-" * len(rows[0][1])}')
  lines.append(f'mean guided score log pi_tuned - log pi_untuned: {fmt(s["score_guided"], 1, 3)}')
  lines += [f'paired difference {name} (same seeds): {fmt(d, 100)} points'
            for name, d in results['paired'].items()]
  return (f'{results_lib.smoke_note(results.get("config"))}weak-to-strong search results, test '
          f'set, {results_lib.interval_note(len(results["seeds"]))}:\n' + '\n'.join(lines))
