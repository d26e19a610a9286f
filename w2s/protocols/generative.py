"""Generative weak-to-strong: SFT of a strong decoder on a weak decoder's generations, as stages.

Burns et al. 2023 (generative fine-tuning in their reward-modelling task); Yang et al. 2024,
"Weak-to-Strong Reasoning" (weak solutions kept where their final answer agrees with the strong
model's in-context answer, SFT, iterated). Per seed, after the weak-to-strong split of train into
A, B and val (`splits.weak_to_strong`):

* pretrain (optional, once for all seeds): each role's decoder trained as a causal LM on the
  protocol's corpus (`corpus=dict(dataset=..., num_docs=..., seq_len=...)`, the dataset module's
  `corpus` function, never stating a test problem), the strong role longer / larger;
* weak: the weak decoder SFT on A's (prompt, gold answer), selected on val's gold answers;
* weak generations: `sampling.num_samples` answers per prompt of B (temperature, top-p), greedy
  answers of val and test, kept by example id (`generative_stages.Generator`);
* filter (`filter=dict(name=...)`): 'none' (every sample), 'majority' (samples whose answer is the
  most common among the prompt's samples), 'agreement' (samples whose answer equals the strong
  pretrained model's few-shot in-context answer, W2S-Reasoning's stage I), 'confidence' (the
  `keep` fraction of samples with the highest weak mean token log-prob);
* ceiling: the strong decoder SFT on B's gold answers;
* students, one per student loss: the strong decoder SFT on the kept weak samples of B, selected on
  the weak model's answers of val (never test, never B's gold); `rounds` > 1 iterates: round r's
  student answers B (greedy) for round r + 1's fresh student.

Scores on test, by extracting answers (`answer.extractor`) from greedy generations: exact-match
accuracy of weak, ceiling and each student (or, for multiple-choice data with
`answer=dict(score='choices', choices=COLUMN, normalize='sum'|'mean')`, the choice each model
gives the highest log-prob as a response, `w2s.generative.choices`, against the gold index
`label`; training is unchanged: SFT on answers), PGR, agreement of the student's answers with the
weak model's, and accuracy where the weak model is wrong / right; means with Student-t 95%
intervals over seeds (none below 3) and paired differences between student losses. On val (the
figures a design may be chosen by, never test): `acc_weak_val` and `acc_ceiling_val`, the weak
model's and the ceiling's exact match against val's gold answers (NaN without a val split).
Truncated prompts and responses are counted in the results, never silent.
"""
import collections
import dataclasses
import sys
from typing import Any, Mapping

import jax
import numpy as np

from w2s import options, registry
from w2s.data import splits as splits_lib
from w2s.data import text
from w2s.errors import UserError
from w2s.generative import answers as answers_lib, choices as choices_lib, templates, tokens
from w2s.protocols import generative_stages as gs
from w2s.protocols import results as results_lib
from w2s.protocols.stages import Stage, number_stages

TOP_KEYS = ('protocol', 'dataset', 'splits', 'tokenizer', 'template', 'answer', 'max_length',
            'corpus', 'weak', 'strong', 'sampling', 'filter', 'student', 'student_losses',
            'rounds', 'seeds', 'eval_batch_size', 'log_every', 'checkpoint_every',
            'keep_checkpoints', 'mesh', 'shared_dir', 'smoke')
FILTERS = ('none', 'majority', 'agreement', 'confidence')
SCORES = ('extract', 'choices')
CORPUS_KEYS = ('dataset', 'num_docs', 'seed', 'seq_len', 'options')
METRICS = ('acc_weak', 'acc_student', 'acc_ceiling', 'pgr', 'agreement', 'acc_weak_wrong',
           'acc_weak_right', 'acc_weak_val', 'acc_ceiling_val')


@dataclasses.dataclass(frozen=True)
class Options(gs.RunFields):
  dataset: options.Plugin
  splits: Mapping[str, Any]
  tokenizer: str
  template: str
  answer_field: str
  extractor: str
  score: str            # 'extract' (exact match of greedy answers) or 'choices' (log-prob pick)
  choices_field: str    # score='choices': the [N, K] column of candidate answers
  normalize: str        # score='choices': 'sum' or 'mean' over the choice's tokens
  max_length: int
  corpus: Mapping[str, Any] | None
  weak: gs.DecoderRole
  strong: gs.DecoderRole
  sampling: gs.Sampling
  filter: Mapping[str, Any]
  student_train: Mapping[str, Any]
  students: tuple[tuple[str, options.Plugin], ...]
  rounds: int


def resolve(config) -> Options:
  c = options.plain(config)
  options.check_keys(c, TOP_KEYS, 'config')
  gs.require(c, ('dataset', 'splits', 'tokenizer', 'template', 'weak', 'strong', 'student_losses',
              'seeds', 'eval_batch_size'), 'generative')
  answer = dict(c.get('answer') or {})
  options.check_keys(answer, ('field', 'extractor', 'score', 'choices', 'normalize'), 'answer')
  extractor = answer.get('extractor', 'last_number')
  answers_lib.extractor(extractor)  # an unknown one fails now
  score = answer.get('score', 'extract')
  if score not in SCORES:
    raise UserError(f"answer.score={score!r}; choose 'extract' (exact match of generated answers) "
                    "or 'choices' (the candidate answer with the highest log-prob)")
  if score != 'choices' and ('choices' in answer or 'normalize' in answer):
    raise UserError("answer.choices and answer.normalize are read with answer.score='choices' "
                    'only; set it or drop them')
  normalize = answer.get('normalize', 'sum')
  if normalize not in choices_lib.NORMALIZE:
    raise UserError(f'answer.normalize={normalize!r} is not one of {choices_lib.NORMALIZE}')
  weak = gs.DecoderRole.from_section('weak', c['weak'])
  strong = gs.DecoderRole.from_section('strong', c['strong'])
  losses = c['student_losses']
  if not losses:
    raise UserError('student_losses is empty; name one, e.g. dict(sft=dict(name="sft"))')
  students = tuple((n, options.plugin('losses', losses[n], f'student_losses.{n}'))
                   for n in sorted(losses))
  student = dict(c.get('student') or {})
  options.check_keys(student, ('train',), 'student')
  flt = dict(c.get('filter') or {'name': 'none'})
  options.check_keys(flt, ('name', 'keep', 'shots'), 'filter')
  if flt.get('name') not in FILTERS:
    raise UserError(f'filter.name={flt.get("name")!r}; choose one of {FILTERS}')
  corpus = c.get('corpus')
  if corpus is not None:
    options.check_keys(corpus, CORPUS_KEYS, 'corpus')
  for role in (weak, strong):
    if (role.pretrain is None) != (corpus is None):
      raise UserError(f'{role.role}.pretrain and corpus go together: give both (pretraining '
                      'on the corpus) or neither (the model as it is, e.g. pretrained=DIR)')
  return Options(
      dataset=options.plugin('datasets', c['dataset'], 'dataset'), splits=c['splits'],
      tokenizer=str(c['tokenizer']), template=str(c['template']),
      answer_field=answer.get('field', 'answer'), extractor=extractor, score=score,
      choices_field=str(answer.get('choices', 'choices')), normalize=normalize,
      max_length=options.positive(c.get('max_length', 64), 'max_length'), corpus=corpus,
      weak=weak, strong=strong, sampling=gs.Sampling.from_section(c.get('sampling'), 'sampling'),
      filter=flt, student_train=student.get('train') or strong.train, students=students,
      rounds=options.positive(c.get('rounds', 1), 'rounds'), **gs.run_options(c))


def check(config):
  """(Options, dataset, modules): everything checked that can be without training (--dry_run)."""
  from w2s import train
  opts = resolve(config)
  dataset = options.build(opts.dataset, 'dataset')
  sample = {k: np.asarray(v)[:4] for k, v in dataset.splits['train'].items()}
  templates.check(opts.template, sample.keys())
  if opts.answer_field not in sample:
    raise UserError(f'answer.field={opts.answer_field!r} is not a field of {opts.dataset.name}; '
                    f'it has {sorted(sample)}')
  weak, strong = gs.make_decoder(opts.weak), gs.make_decoder(opts.strong)
  gs.check_decoders(weak, strong, 'weak and strong decoders')
  tok = text.load_tokenizer(opts.tokenizer)
  if tok.get_vocab_size() > gs.vocab_size(strong):
    raise UserError(f'tokenizer {opts.tokenizer} has {tok.get_vocab_size()} tokens but the models '
                    f'only {gs.vocab_size(strong)}; set the models\' vocab_size or the tokenizer')
  # prompts that fill max_length (or text the tokenizer cannot take) fail here
  tokens.encode_sft(gs.prompts_of(sample, opts.template),
                    [str(a) for a in sample[opts.answer_field]], opts.tokenizer,
                    max_length=opts.max_length)
  if opts.score == 'choices':
    test = {k: np.asarray(v)[:4] for k, v in dataset.splits['test'].items()}
    for field in (opts.choices_field, 'label'):
      if field not in test:
        raise UserError(f"answer.score='choices' needs the test field {field!r} "
                        f'({opts.dataset.name} has {sorted(test)}); e.g. arithmetic view=\'choice\'')
    choices_lib.encode_choices(gs.prompts_of(test, opts.template),
                               choices_lib.choice_texts(test, opts.choices_field), opts.tokenizer,
                               max_length=opts.max_length)
  for role, module in ((opts.weak, weak), (opts.strong, strong)):
    limit = getattr(module.backbone.config, 'position_limit', None)
    if limit is not None and opts.max_length > limit:
      raise UserError(f'max_length={opts.max_length} exceeds {role.role}\'s {limit} positions')
    train.check_loss(role.loss, num_classes=1, where=f'{role.role}.loss', expect='tokens')
  for name, loss in opts.students:
    train.check_loss(loss, num_classes=1, where=f'student_losses.{name}', expect='tokens')
  gs.check_train_sections(_trains(opts), opts, opts.splits)
  return opts, dataset, weak, strong


def _trains(opts):
  sft = options.plugin('losses', {'name': 'sft'}, 'loss')
  for role in (opts.weak, opts.strong):
    if role.pretrain is not None:
      yield f'{role.role}.pretrain', role.pretrain, sft
    yield f'{role.role}.train', role.train, role.loss
  for name, loss in opts.students:
    yield 'student.train', opts.student_train, loss


def stage_plan(opts: Options, root: str, seed: int) -> dict:
  base = (opts.dataset.spec(), options.plain(opts.splits), opts.tokenizer, opts.template,
          opts.answer_field, opts.max_length, seed)
  plan = {'pretrain': {}}
  for role in (opts.weak, opts.strong):
    if role.pretrain is not None:
      plan['pretrain'][role.role] = Stage(root, f'pretrain_{role.role}', opts.corpus,
                                          opts.tokenizer, role.pretrain_spec())
  plan['weak'] = Stage(root, 'weak', base, opts.weak.spec(), seed=seed)
  plan['ceiling'] = Stage(root, 'ceiling', base, opts.strong.spec(), seed=seed)
  sampling = dataclasses.asdict(opts.sampling)
  plan['students'] = {}
  for name, loss in opts.students:
    key, rounds = plan['weak'].key, []
    for r in range(opts.rounds):
      kind = f'student_{name}' + (f'_round{r}' if r else '')
      rounds.append(Stage(root, kind, base, opts.strong.spec(), options.plain(opts.student_train),
                          loss.spec(), sampling, options.plain(opts.filter), opts.extractor, key,
                          seed=seed))
      key = rounds[-1].key
    plan['students'][name] = rounds
  trained = [plan['weak'], plan['ceiling'], *sum(plan['students'].values(), [])]
  number_stages(trained, opts.seeds.index(seed), len(opts.seeds))
  return plan


def _corpus_rows(opts: Options, test) -> dict | None:
  if opts.corpus is None:
    return None
  c = dict(opts.corpus)
  module = registry.get('datasets', c.get('dataset', opts.dataset.name))
  source = sys.modules[module.__module__]  # the dataset's own module (registry-loaded)
  corpus_fn = getattr(source, 'corpus', None)
  if corpus_fn is None:
    raise UserError(f'corpus.dataset={c.get("dataset")!r} has no corpus(num_docs, seed) function')
  kw = dict(c.get('options') or {})
  problems = getattr(source, 'problems', None)
  if problems is not None:  # never state a test problem in pretraining
    kw['exclude'] = problems(test)
  docs = corpus_fn(int(c.get('num_docs', 20000)), int(c.get('seed', 0)), **kw)
  return tokens.pack_documents(docs, opts.tokenizer, seq_len=int(c.get('seq_len', 64)))


def run(*, config, workdir: str) -> dict:
  opts, dataset, weak_m, strong_m = check(config)
  mesh = gs.mesh_of(opts.num_devices, opts.mesh_shape)
  root = opts.shared_dir or workdir
  run_kw = dict(opts.run)
  full = dataset.splits.get('test')
  corpus = _corpus_rows(opts, full)
  per_seed, pre = [], {}
  for seed in opts.seeds:
    plan = stage_plan(opts, root, seed)
    for role, module in ((opts.weak, weak_m), (opts.strong, strong_m)):
      if role.role in plan['pretrain'] and role.role not in pre:
        pre[role.role] = gs.pretrain(plan['pretrain'][role.role], role, module, corpus,
                                     run=run_kw, mesh=mesh, eval_batch_size=opts.eval_batch_size)
    per_seed.append(_seed(opts, dataset, seed, plan, pre, weak_m, strong_m, mesh, root))
    print(_seed_line(per_seed[-1], [n for n, _ in opts.students]), flush=True)
  names = [n for n, _ in opts.students]
  results = results_lib.summarize(per_seed, names, config.to_dict(), metrics=METRICS)
  results['protocol'] = 'generative'
  if jax.process_index() == 0:
    results_lib.plot(results, workdir, stage_root=root)
    print(results_lib.table(results).replace('weak-to-strong results',
                                             'generative weak-to-strong results (exact match)'),
          flush=True)
  return results


def _seed_line(record, names):
  first = record[names[0]]
  parts = [f'seed {record["seed"]}: weak {first["acc_weak"]:.4f}  ceiling '
           f'{first["acc_ceiling"]:.4f}']
  for n in names:
    pgr = 'undefined' if record[n].get('pgr_undefined') else f'{record[n]["pgr"]:.2f}'
    parts.append(f'{n} {record[n]["acc_student"]:.4f} (PGR {pgr})')
  return '[generative] ' + '  '.join(parts)


def _seed(opts, dataset, seed, plan, pre, weak_m, strong_m, mesh, root) -> dict:
  from w2s.protocols import generative_filters as filters
  parts = splits_lib.weak_to_strong(dataset, seed=seed, **opts.splits)
  a, b, test = (parts.splits[k] for k in ('weak_train', 'strong_train', 'test'))
  val = parts.splits.get('val')
  gold = lambda raw: [str(x) for x in raw[opts.answer_field]]
  prompts = lambda raw: gs.prompts_of(raw, opts.template)
  truncated = collections.Counter()

  def sft_rows(raw, responses, ids=None, weights=None):
    enc = tokens.encode_sft(prompts(raw) if ids is None else raw['prompts'], responses,
                            opts.tokenizer, max_length=opts.max_length)
    truncated['prompts'] += int(enc['truncated_prompts'])
    truncated['responses'] += int(enc['truncated_responses'])
    return gs.token_examples(enc, raw['id'] if ids is None else ids, weights)

  def stage_fit(stage, role, module, init, train_ex, val_ex, section, loss):
    topts = gs.learners.train_options(section, f'{role.role}.train', loss=loss, seed=seed,
                                      run=dict(opts.run))
    init_params = (lambda _targets: init.params()) if init is not None else None
    return gs.Trained(stage, module, lambda: gs.fit_tokens(
        stage, module, train_ex, topts=topts, mesh=mesh, init_params=init_params,
        val_examples=val_ex, eval_batch_size=opts.eval_batch_size, length=opts.max_length))

  def gen(trained, sampling, name=None, prompt_key=(opts.template,)):
    return gs.Generator(root, trained, sampling, tokenizer=opts.tokenizer, prompt_key=prompt_key,
                        mesh=mesh, seed=seed, name=name)
  greedy = opts.sampling.greedy()
  val_gold = sft_rows(val, gold(val)) if val is not None else None
  weak = stage_fit(plan['weak'], opts.weak, weak_m, pre.get('weak'), sft_rows(a, gold(a)),
                   val_gold, opts.weak.train, opts.weak.loss)
  ceiling = stage_fit(plan['ceiling'], opts.strong, strong_m, pre.get('strong'),
                      sft_rows(b, gold(b)), val_gold, opts.strong.train, opts.strong.loss)

  def evaluate(trained, raw):
    """(right float [N], answers [N] str | None) of a trained stage's greedy answers (kept by
    id), or with score='choices' of its log-prob pick among raw's candidate answers."""
    if opts.score == 'extract':
      texts = gen(trained, greedy).texts(raw, prompts(raw))[:, 0]
      return (gs.exact_match(texts, gold(raw), opts.extractor),
              gs.answers_of(texts, opts.extractor))
    cands = choices_lib.choice_texts(raw, opts.choices_field)
    out = choices_lib.score_choices(
        trained.module, trained.params(), prompts(raw), cands, opts.tokenizer,
        max_length=opts.max_length, mesh=mesh, batch_size=opts.eval_batch_size,
        normalize=opts.normalize)
    truncated['choices'] += int(out['num_truncated'])
    return (choices_lib.correct(out['choice'], raw['label']),
            [str(cands[i, k]) for i, k in enumerate(out['choice'])])
  record = {'seed': seed, 'n_weak_train': len(a['id']), 'n_strong_train': len(b['id']),
            'n_val': 0 if val is None else len(val['id']), 'n_test': len(test['id']),
            'stages': gs.stage_dirs(root, [plan['weak'], plan['ceiling'],
                                           *sum(plan['students'].values(), [])])}
  weak_right, weak_answers = evaluate(weak, test)
  acc_c = float(evaluate(ceiling, test)[0].mean())
  val_acc = {'acc_weak_val': float('nan'), 'acc_ceiling_val': float('nan')}
  if val is not None:  # the weak store's val answers are the students' val labels too
    for key, trained in (('acc_weak_val', weak), ('acc_ceiling_val', ceiling)):
      val_acc[key] = float(evaluate(trained, val)[0].mean())
  for name, loss in opts.students:
    teacher, info = weak, {}
    for r, stage in enumerate(plan['students'][name]):
      sampling = opts.sampling if r == 0 else greedy
      samples = gen(teacher, sampling).texts(b, prompts(b))          # [N_B, n]
      val_teacher = gen(teacher, greedy).texts(val, prompts(val))[:, 0] if val is not None else None
      keep, info = filters.apply(opts.filter, b, samples, extractor=opts.extractor,
                                 teacher=teacher, strong_pre=pre.get('strong'), gen=gen,
                                 prompts=prompts, tokenizer=opts.tokenizer, a=a, gold=gold,
                                 max_length=opts.max_length, eval_batch_size=opts.eval_batch_size,
                                 mesh=mesh, greedy=greedy)
      rows, texts = np.nonzero(keep)
      if not len(rows):
        raise UserError(f'{stage.kind}: filter {opts.filter["name"]!r} kept none of the '
                        f'{samples.size} weak samples of B; loosen it (filter.keep) or use none')
      sub = {'id': b['id'][rows], 'prompts': [prompts(b)[i] for i in rows]}
      ids = np.asarray(b['id'], np.int64)[rows] * 64 + texts
      train_ex = sft_rows(sub, [samples[i, j] for i, j in zip(rows, texts)], ids=ids)
      val_ex = sft_rows(val, list(val_teacher)) if val is not None else None
      teacher = stage_fit(stage, opts.strong, strong_m, pre.get('strong'), train_ex, val_ex,
                          opts.student_train, loss)
      info['label_accuracy'] = float(gs.exact_match(
          [samples[i, j] for i, j in zip(rows, texts)], [gold(b)[i] for i in rows],
          opts.extractor).mean())  # reported only: B's gold never reaches a student
    record[name] = {**_score(weak_right, weak_answers, *evaluate(teacher, test), acc_c),
                    **val_acc}
    record[name]['filter'] = info
  record['truncated'] = dict(truncated)
  return record


def _score(weak_right, weak_answers, right, s_ans, acc_c) -> dict:
  """The student's test metrics from the weak model's and its own right [N] and answers [N]."""
  from w2s import scores
  acc_w, acc_s = float(weak_right.mean()), float(right.mean())
  p = scores.pgr(acc_w, acc_s, acc_c)
  agree = np.mean([x is not None and answers_lib.normalize(x) == answers_lib.normalize(y)
                   for x, y in zip(s_ans, weak_answers)])
  wrong = weak_right == 0
  mean = lambda m: float(right[m].mean()) if m.any() else float('nan')
  return {'acc_weak': acc_w, 'acc_student': acc_s, 'acc_ceiling': acc_c, 'pgr': p.value,
          'pgr_undefined': p.reason, 'agreement': float(agree), 'acc_weak_wrong': mean(wrong),
          'acc_weak_right': mean(~wrong), 'n_weak_wrong': int(wrong.sum()),
          'n_weak_right': int((~wrong).sum())}
