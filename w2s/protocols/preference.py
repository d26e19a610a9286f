"""Preference weak-to-strong: DPO-family policies and reward models taught by a weak judge.

Burns et al. 2023 (weak-to-strong reward modelling: a weak reward model's soft labels
sigmoid(r_weak(y_0) - r_weak(y_1)) supervise a strong one); Rafailov et al. 2023 (DPO), Azar et
al. 2023 (IPO), Mitchell 2023 (conservative DPO), confidence-weighted DPO (methods.md), Yang et
al. 2024 ("Super(ficial)-alignment": does the strong model do well only where the weak judge can
check?). Data: a dataset's preference pairs (prompt, response_a, response_b, gold 'label' = the
index of the preferred response; the arithmetic task's view='pairs', Anthropic HH-RLHF's
mode='prompt_pairs'). Per seed, after the weak-to-strong split of train into A, B and val
(`splits.weak_to_strong`):

* pretrain (optional, once for all seeds): each role's decoder as a causal LM on the protocol's
  corpus, the stages of the generative protocol (`generative_stages.pretrain`; same corpus, model
  and section = the same stage directory, shared under one `shared_dir`);
* weak judge (`judge.name`): 'reward_model' (default): the weak decoder with a scalar head
  (pooling 'last') trained as a reward model with `weak.loss` (Bradley-Terry) on A's gold pairs,
  selected on val's gold pairs; it labels B and val with soft labels softmax(r_weak) and is scored
  on test (acc_weak). 'delta' (Geng et al. 2025, `preference_delta`): `weak` and a smaller
  `weak_small` decoder, each SFT on A's gold answers, answer B's and val's prompts; the students
  train on those pairs, chosen = the larger's answer;
* reference: the strong pretrained decoder; its sequence log-probs of both responses of every
  pair, log pi_ref(y|x) [N, 2], computed once per example id (a `ByIdStore` keyed by the
  reference stage and the tokenization) and reused by every student, seed and rerun;
* students, one per `student_losses` entry, of one of two kinds (`student_kinds`, else from the
  loss: a 'pairs' loss trains a policy, a classification-shaped one a reward model):
  'policy' - the strong decoder trained on B's judged pairs with a DPO-family loss
  (dpo, ipo, cdpo, wdpo; batch 'ref_logp' [N, 2] and 'confidence' = max label [N]);
  'reward_model' - the strong decoder with a scalar head trained with Bradley-Terry on them;
  selected on the weak labels of val (never test, never B's gold);
* ceilings, one per student kind present: the same kind trained on B's gold pairs
  (`ceiling.policy`, default DPO beta 0.1; `ceiling.reward_model`, default Bradley-Terry).

Scores on test: pairwise accuracy (a reward model: r(correct) > r(wrong); a policy: its implicit
reward beta * (log pi - log pi_ref) prefers the correct response) of the weak judge, each student
and its ceiling; PGR; agreement with the judge; accuracy where the judge is right / wrong and their
difference (the Super(ficial)-alignment deception measure). Means with Student-t 95% intervals over
seeds (none below 3) and paired differences between students. Prompts longer than
`max_prompt_length` tokens (if set) keep their end, responses that do not fit max_length lose
theirs; both are counted in each seed's 'truncated'; pairs a dataset skipped (`dataset.notes`)
are in the results' 'dataset_notes'.
"""
import collections
import dataclasses
from typing import Any, Mapping

import jax
import numpy as np

from w2s import options
from w2s.data import splits as splits_lib
from w2s.data import text
from w2s.errors import UserError
from w2s.generative import templates, tokens
from w2s.models import sequence
from w2s.protocols import generative_stages as gs
from w2s.protocols import preference_delta as delta
from w2s.protocols import preference_results as pr
from w2s.protocols import preference_stages as ps
from w2s.protocols.preference_stages import pair_rows, token_key
from w2s.protocols import results as results_lib
from w2s.protocols.generative import _corpus_rows
from w2s.protocols.stages import Stage, number_stages

TOP_KEYS = ('protocol', 'dataset', 'splits', 'tokenizer', 'template', 'max_length',
            'max_prompt_length', 'corpus', 'judge', 'weak', 'weak_small', 'strong', 'reward_train', 'ceiling', 'student_losses', 'student_kinds',
            'seeds', 'eval_batch_size', 'log_every', 'checkpoint_every', 'keep_checkpoints',
            'mesh', 'shared_dir', 'smoke')
CORPUS_KEYS = ('dataset', 'num_docs', 'seed', 'seq_len', 'options')
KINDS = ('policy', 'reward_model')
CEILINGS = {'policy': {'name': 'dpo', 'beta': 0.1}, 'reward_model': {'name': 'bradley_terry'}}
RESPONSES = ps.RESPONSES
METRICS = pr.METRICS


@dataclasses.dataclass(frozen=True)
class Options(gs.RunFields):
  dataset: options.Plugin
  splits: Mapping[str, Any]
  tokenizer: str
  template: str
  max_length: int
  max_prompt_length: int | None
  corpus: Mapping[str, Any] | None
  judge: Mapping[str, Any]                        # preference_delta.resolve_judge
  weak: gs.DecoderRole
  weak_small: gs.DecoderRole | None               # judge 'delta' only
  strong: gs.DecoderRole
  trains: Mapping[str, Any]                       # kind -> the strong decoder's train section
  ceilings: Mapping[str, options.Plugin]          # kind -> ceiling loss
  students: tuple[tuple[str, options.Plugin], ...]
  kinds: Mapping[str, str]                        # student name -> kind


def resolve(config) -> Options:
  c = options.plain(config)
  options.check_keys(c, TOP_KEYS, 'config')
  gs.require(c, ('dataset', 'splits', 'tokenizer', 'template', 'weak', 'strong', 'student_losses',
              'seeds', 'eval_batch_size'), 'preference')
  judge = delta.resolve_judge(c.get('judge'))
  is_delta = judge['name'] == 'delta'
  weak = gs.DecoderRole.from_section('weak', c['weak'],
                                     default_loss='sft' if is_delta else 'bradley_terry')
  weak_small = None
  if is_delta:
    if not c.get('weak_small'):
      raise UserError("judge 'delta' needs weak_small=dict(model=..., train=...): the smaller "
                      'weak decoder whose answers are the rejected ones')
    weak_small = gs.DecoderRole.from_section('weak_small', c['weak_small'])
  elif c.get('weak_small'):
    raise UserError("weak_small is read only by judge=dict(name='delta'); drop it or set the judge")
  if 'loss' in (c['strong'] or {}):
    raise UserError('strong.loss is not used by the preference protocol; name the students\' '
                    'losses in student_losses and the ceilings\' in ceiling=dict(policy=..., '
                    'reward_model=...)')
  strong = gs.DecoderRole.from_section('strong', c['strong'], default_loss='dpo')
  losses = c['student_losses'] or {}
  if not losses:
    raise UserError('student_losses is empty; name one, e.g. dict(dpo=dict(name="dpo"))')
  students = tuple((n, options.plugin('losses', losses[n], f'student_losses.{n}'))
                   for n in sorted(losses))
  declared = dict(c.get('student_kinds') or {})
  for n, kind in declared.items():
    if n not in losses or kind not in KINDS:
      raise UserError(f'student_kinds.{n}={kind!r}: give a student of student_losses '
                      f'({sorted(losses)}) one of {KINDS}')
  kinds = {n: declared.get(n) or _kind_of(loss) for n, loss in students}
  ceiling = dict(c.get('ceiling') or {})
  options.check_keys(ceiling, KINDS, 'ceiling')
  ceilings = {k: options.plugin('losses', ceiling.get(k) or CEILINGS[k], f'ceiling.{k}')
              for k in KINDS}
  corpus = c.get('corpus')
  if corpus is not None:
    options.check_keys(corpus, CORPUS_KEYS, 'corpus')
  for role in (weak, weak_small, strong):
    if role is not None and (role.pretrain is None) != (corpus is None):
      raise UserError(f'{role.role}.pretrain and corpus go together: give both (pretraining '
                      'on the corpus) or neither (the model as it is, e.g. pretrained=DIR)')
  return Options(
      dataset=options.plugin('datasets', c['dataset'], 'dataset'), splits=c['splits'],
      tokenizer=str(c['tokenizer']), template=str(c['template']),
      max_length=options.positive(c.get('max_length', 64), 'max_length'),
      max_prompt_length=_max_prompt_length(c), corpus=corpus, judge=judge, weak=weak,
      weak_small=weak_small, strong=strong,
      trains={'policy': strong.train, 'reward_model': c.get('reward_train') or strong.train},
      ceilings=ceilings, students=students, kinds=kinds, **gs.run_options(c))


def _max_prompt_length(c) -> int | None:
  m, length = c.get('max_prompt_length'), c.get('max_length', 64)
  if m is None:
    return None
  m = options.positive(m, 'max_prompt_length')
  if m >= length:
    raise UserError(f'max_prompt_length={m} leaves no room for a response in max_length={length}; '
                    'make it smaller than max_length')
  return m


def roles(opts: 'Options') -> list[gs.DecoderRole]:
  """The decoder roles the run trains or reads: weak (, weak_small), strong."""
  return [r for r in (opts.weak, opts.weak_small, opts.strong) if r is not None]


def _kind_of(loss: options.Plugin) -> str:
  """A classification-shaped loss (rewards [B, 2]) trains a reward model, any other a policy
  (`check` then refuses what a policy cannot train, e.g. a 'tokens' loss)."""
  return 'reward_model' if getattr(loss.entry(), 'inputs', None) is None else 'policy'


def _expect(kind: str):
  return 'pairs' if kind == 'policy' else None


def check(config):
  """(Options, dataset, weak module, strong module): everything checked that can be without
  training (--dry_run): sections and plug-ins, the pairs (identical responses, prompts that fill
  max_length), the vocabularies and positions of the decoders, every loss against its stage."""
  from w2s import train
  opts = resolve(config)
  dataset = options.build(opts.dataset, 'dataset')
  templates.check(opts.template, dataset.splits['train'].keys())
  for split in ('train', 'test'):
    raw = dataset.splits[split]
    missing = [k for k in RESPONSES if k not in raw]
    if missing:
      raise UserError(f'dataset {opts.dataset.name!r} has no {missing[0]!r} field; the preference '
                      'protocol needs pairs (prompt, response_a, response_b, label), e.g. '
                      'arithmetic view=\'pairs\'')
    gold = np.asarray(raw['label'])
    if gold.ndim != 1 or not np.isin(gold, (0, 1)).all():
      raise UserError(f'dataset {opts.dataset.name!r} {split} labels must be 0 or 1 (the index '
                      'of the preferred response)')
    ps.encode(opts, raw)  # identical responses, prompts that fill max_length: a UserError now
  modules = {r.role: gs.make_decoder(r, num_classes=1) for r in roles(opts)}
  weak, strong = modules['weak'], modules['strong']
  for role in roles(opts)[:-1]:
    gs.check_decoders(modules[role.role], strong, f'{role.role} and strong decoder (they read '
                      'the same tokens)')
  if opts.weak_small is not None:
    _check_delta(opts, dataset)
  tok = text.load_tokenizer(opts.tokenizer)
  if tok.get_vocab_size() > gs.vocab_size(strong):
    raise UserError(f'tokenizer {opts.tokenizer} has {tok.get_vocab_size()} tokens but the models '
                    f'only {gs.vocab_size(strong)}; set the models\' vocab_size or the tokenizer')
  for role in roles(opts):
    limit = getattr(modules[role.role].backbone.config, 'position_limit', None)
    if limit is not None and opts.max_length > limit:
      raise UserError(f'max_length={opts.max_length} exceeds {role.role}\'s {limit} positions; '
                      'lower max_length or give the model more positions (max_len)')
  if opts.weak_small is None:
    train.check_loss(opts.weak.loss, num_classes=2, where='weak.loss', expect=None)
  else:  # Delta: both weak decoders are SFT'd on gold answers
    for role in roles(opts)[:-1]:
      train.check_loss(role.loss, num_classes=1, where=f'{role.role}.loss', expect='tokens')
  for name, loss in opts.students:
    kind = opts.kinds[name]
    train.check_loss(loss, num_classes=2, where=f'student_losses.{name} (a {kind} student)',
                     expect=_expect(kind))
  for kind in KINDS:
    train.check_loss(opts.ceilings[kind], num_classes=2, where=f'ceiling.{kind}',
                     expect=_expect(kind))
  gs.check_train_sections(_trains(opts), opts, opts.splits)
  return opts, dataset, weak, strong


def _check_delta(opts, dataset) -> None:
  """The Delta judge's SFT data: the answer field, prompts that fit max_length."""
  field = opts.judge['answer']
  sample = {k: np.asarray(v)[:64] for k, v in dataset.splits['train'].items()}
  if field not in sample:
    raise UserError(f'judge.answer={field!r} is not a field of {opts.dataset.name}; it has '
                    f'{sorted(sample)} (the Delta judge fine-tunes the weak decoders on it)')
  tokens.encode_sft(gs.prompts_of(sample, opts.template), [str(a) for a in sample[field]],
                    opts.tokenizer, max_length=opts.max_length,
                    max_prompt_length=opts.max_prompt_length)


def _trains(opts):
  sft = options.plugin('losses', {'name': 'sft'}, 'loss')
  for role in roles(opts):
    if role.pretrain is not None:
      yield f'{role.role}.pretrain', role.pretrain, sft
  for role in roles(opts)[:-1]:
    yield f'{role.role}.train', role.train, role.loss
  for kind in set(opts.kinds.values()):
    yield ('strong.train' if kind == 'policy' else 'reward_train'), opts.trains[kind], \
        opts.ceilings[kind]
  for name, loss in opts.students:
    yield f'student {name}', opts.trains[opts.kinds[name]], loss


def stage_plan(opts: Options, root: str, seed: int) -> dict:
  base = (opts.dataset.spec(), options.plain(opts.splits), *token_key(opts)[1:], seed)
  plan = {'pretrain': {}}
  for role in roles(opts):
    if role.pretrain is not None:
      plan['pretrain'][role.role] = Stage(root, f'pretrain_{role.role}', opts.corpus,
                                          opts.tokenizer, role.pretrain_spec())
  plan['reference'] = plan['pretrain'].get('strong') or Stage(
      root, 'reference', opts.strong.pretrain_spec())
  if opts.weak_small is None:  # the reward-model judge (keys as before the Delta judge existed)
    plan['weak'] = Stage(root, 'weak', base, opts.weak.spec(), seed=seed)
    teacher = plan['weak'].key
  else:  # Delta: both weak decoders SFT on the answer field; students keyed by both and the judge
    for role in roles(opts)[:-1]:
      plan[role.role] = Stage(root, role.role, base, role.spec(), opts.judge['answer'], seed=seed)
    teacher = (plan['weak'].key, plan['weak_small'].key, options.plain(opts.judge))
  strong = opts.strong.pretrain_spec()
  kinds = sorted(set(opts.kinds.values()))
  plan['ceilings'] = {k: Stage(root, 'ceiling' if k == 'policy' else 'ceiling_rm', base, strong,
                               k, options.plain(opts.trains[k]), opts.ceilings[k].spec(),
                               seed=seed) for k in kinds}
  plan['students'] = {n: Stage(root, f'student_{n}', base, strong, opts.kinds[n],
                               options.plain(opts.trains[opts.kinds[n]]), loss.spec(),
                               teacher, seed=seed) for n, loss in opts.students}
  judges = [plan[r.role] for r in roles(opts)[:-1]]
  trained = [*judges, *plan['ceilings'].values(), *plan['students'].values()]
  number_stages(trained, opts.seeds.index(seed), len(opts.seeds))
  plan['trained'] = trained
  return plan


def run(*, config, workdir: str) -> dict:
  opts, dataset, weak_m, strong_m = check(config)
  mesh = gs.mesh_of(opts.num_devices, opts.mesh_shape)
  root = opts.shared_dir or workdir
  corpus = _corpus_rows(opts, dataset.splits.get('test'))
  modules = {'weak': weak_m, 'strong': strong_m}
  # one apply function per (module, use): predict's and the evaluators' jit caches key on it
  fns = {'reward_weak': sequence.reward_apply_fn(weak_m),
         'reward_strong': sequence.reward_apply_fn(strong_m),
         'logp': sequence.logprob_apply_fn(strong_m)}
  if opts.weak_small is not None:
    modules['weak_small'] = gs.make_decoder(opts.weak_small, num_classes=1)
    fns.update({f'logp_{r}': sequence.logprob_apply_fn(modules[r]) for r in ('weak', 'weak_small')})
  per_seed, pre = [], {}
  for seed in opts.seeds:
    plan = stage_plan(opts, root, seed)
    for role in roles(opts):
      if role.role in plan['pretrain'] and role.role not in pre:
        pre[role.role] = gs.pretrain(plan['pretrain'][role.role], role, modules[role.role],
                                     corpus, run=dict(opts.run), mesh=mesh,
                                     eval_batch_size=opts.eval_batch_size)
    reference = pre.get('strong') or ps.Frozen(plan['reference'], strong_m, opts.max_length)
    per_seed.append(_seed(opts, dataset, seed, plan, pre, reference, modules, mesh, root, fns))
    print(pr.seed_line(per_seed[-1], [n for n, _ in opts.students]), flush=True)
  names = [n for n, _ in opts.students]
  results = results_lib.summarize(per_seed, names, config.to_dict(), metrics=METRICS)
  results['protocol'] = 'preference'
  results['kinds'] = dict(opts.kinds)
  results['judge'] = opts.judge['name']
  results['delta'] = pr.delta_summary(per_seed)
  if dataset.notes:
    results['dataset_notes'] = dataset.notes
  if jax.process_index() == 0:
    pr.plot(results, workdir, stage_root=root)
    print(pr.table(results), flush=True)
  return results


def _pair_data(opts, dataset, seed) -> tuple[dict, dict, dict]:
  """The seed's parts 'a', 'b', 'val' (if any), 'test': (raw examples, encoded pairs, gold [N])."""
  parts = splits_lib.weak_to_strong(dataset, seed=seed, **opts.splits)
  names = {'a': 'weak_train', 'b': 'strong_train', 'val': 'val', 'test': 'test'}
  raw = {k: parts.splits[v] for k, v in names.items() if v in parts.splits}
  enc = {k: ps.encode(opts, r) for k, r in raw.items()}
  return raw, enc, {k: np.asarray(r['label'], np.int64) for k, r in raw.items()}


def _seed(opts, dataset, seed, plan, pre, reference, modules, mesh, root, fns) -> dict:
  raw, enc, gold = _pair_data(opts, dataset, seed)
  onehot = {k: np.eye(2, dtype=np.float32)[g] for k, g in gold.items()}
  truncated = collections.Counter(
      prompts=sum(int(e['truncated_prompts']) for e in enc.values()),
      responses=sum(int(e['truncated_responses']) for e in enc.values()))
  rows = lambda k, labels, ref=None: pair_rows(enc[k], raw[k]['id'], labels, ref)
  has_val = 'val' in raw
  ctx = ps.SeedContext(opts, seed, mesh, root, fns, modules)
  ctx.test_rows = rows('test', onehot['test'])
  kinds = set(opts.kinds.values())
  # the reference's log-probs, once per example id (and per Delta construction); only policies
  # read them
  gold_ref = ctx.scores(reference, 'ref_logp', 'logp', name='reference')
  ref = {k: gold_ref.of(rows(k, onehot[k])) for k in raw if k != 'a'} if 'policy' in kinds else {}
  judge_info = {}
  if opts.weak_small is None:
    # the weak judge: a reward model on A's gold pairs; its soft labels of B and val
    judge = ctx.fit(plan['weak'], 'reward_model', modules['weak'], pre.get('weak'),
                    rows('a', onehot['a']), rows('val', onehot['val']) if has_val else None,
                    opts.weak.train, opts.weak.loss)
    judged = {k: ctx.scores(judge, 'rewards', 'reward_weak').of(rows(k, onehot[k]))
              for k in raw if k != 'a'}
    weak_labels = {k: pr.soft_preference(r) for k, r in judged.items()}
    judge_test = pr.preferred(judged['test'])
    judge_info = {'acc_b': float(np.mean(pr.preferred(judged['b']) == gold['b'])),
                  'confidence_b': float(weak_labels['b'].max(-1).mean())}
    taught = {k: (enc[k], raw[k]['id'], weak_labels[k], ref.get(k)) for k in ('b', 'val')
              if k in raw}
  else:  # Delta: pairs of the two weak decoders' answers, chosen = the larger's
    made, key, judge_test, judge_info = delta.teach(ctx, opts, raw, plan, pre, modules, seed,
                                                    truncated)
    delta_ref = ctx.scores(reference, 'ref_logp', 'logp', name='reference_delta',
                           key=(token_key(opts), 'delta', key))
    taught = {}
    for k, (kept, e) in made.items():
      truncated['prompts'] += int(e['truncated_prompts'])
      truncated['responses'] += int(e['truncated_responses'])
      labels = np.eye(2, dtype=np.float32)[kept['label']]
      taught[k] = (e, kept['id'], labels, delta_ref.of(pair_rows(e, kept['id'], labels))
                   if 'policy' in kinds else None)

  def trained_rows(kind, k, labels):
    return rows(k, labels, ref.get(k) if kind == 'policy' else None)

  def taught_rows(kind, k):
    e, ids, labels, ref_logp = taught[k]
    return pair_rows(e, ids, labels, ref_logp if kind == 'policy' else None)

  def test_pred(kind, trained):
    if kind == 'reward_model':
      return pr.preferred(ctx.scores(trained, 'rewards', 'reward_strong').of(ctx.test_rows))
    s = ctx.scores(trained, 'logp', 'logp')
    return pr.preferred(pr.implicit_rewards(s.of(ctx.test_rows), ref['test']))

  acc_ceiling = {}
  for kind, stage in plan['ceilings'].items():
    ceiling = ctx.fit(stage, kind, modules['strong'], pre.get('strong'),
                      trained_rows(kind, 'b', onehot['b']),
                      trained_rows(kind, 'val', onehot['val']) if has_val else None,
                      opts.trains[kind], opts.ceilings[kind])
    acc_ceiling[kind] = float(np.mean(test_pred(kind, ceiling) == gold['test']))
  record = {'seed': seed, 'n_weak_train': len(gold['a']), 'n_strong_train': len(gold['b']),
            'n_val': len(gold.get('val', ())), 'n_test': len(gold['test']),
            'stages': gs.stage_dirs(root, plan['trained']),
            'judge': {'acc_test': float(np.mean(judge_test == gold['test'])), **judge_info}}
  for name, loss in opts.students:
    kind = opts.kinds[name]
    student = ctx.fit(plan['students'][name], kind, modules['strong'], pre.get('strong'),
                      taught_rows(kind, 'b'), taught_rows(kind, 'val') if has_val else None,
                      opts.trains[kind], loss)
    record[name] = pr.score(judge_test, test_pred(kind, student), gold['test'],
                            acc_ceiling[kind])
    record[name]['kind'] = kind
  record['truncated'] = dict(truncated)
  return record
