"""Delta-learning pairs, the preference protocol's `judge=dict(name='delta')`.

Geng et al. 2025, "The Delta Learning Hypothesis: Preference Tuning on Weak Data can Yield Strong
Gains": DPO on pairs of two weak models' responses, chosen = the larger weak model's, teaches a
stronger model even where SFT on the same responses hurts; what carries the signal is the
relative quality (the delta) of the two, not the absolute quality of either.

Per seed: the two weak decoders, `weak` (the larger) and `weak_small`, are each fine-tuned (SFT,
`generative_stages`) on A's (prompt, gold answer `judge.answer`), selected on val's gold answers
(as the generative protocol's weak model), and answer the prompts of B and val greedily
(`generative_stages.Generator`, kept by example id). Each prompt gives the pair (the larger's
answer, the smaller's) with label = the index of the larger's, in an order drawn per example id;
identical answers carry no preference and are dropped (counted). The students train on B's pairs
and are selected on val's (never test, never B's gold). The judge's own pairwise prediction on the
gold test pairs is the delta of the two models, r(y) = log p_large(y|x) - log p_small(y|x) (the
larger's implicit reward with the smaller as its reference): the judge's accuracy, PGR and the
Super(ficial)-alignment split use it. Reported only (gold answers of B and val never reach a
stage or a selection): the share of kept pairs whose chosen / rejected answer is correct
(`judge.extractor`; None: not reported).
"""
import collections

import numpy as np

from w2s import options
from w2s.errors import UserError
from w2s.generative import answers as answers_lib, tokens
from w2s.protocols import generative_stages as gs
from w2s.protocols import preference_results as pr

JUDGES = ('reward_model', 'delta')
JUDGE_KEYS = {'reward_model': ('name',), 'delta': ('name', 'answer', 'extractor', 'max_new_tokens')}
DELTA_DEFAULTS = {'answer': 'answer', 'extractor': 'last_number', 'max_new_tokens': 16}
_ORDER_SALT = 6007


def resolve_judge(section) -> dict:
  """The judge section with its defaults; the reward-model judge is the default."""
  j = dict(options.plain(section or {}) or {'name': 'reward_model'})
  if j.get('name') not in JUDGES:
    raise UserError(f'judge.name={j.get("name")!r}; choose one of {JUDGES}')
  options.check_keys(j, JUDGE_KEYS[j['name']], 'judge')
  if j['name'] == 'reward_model':
    return j
  j = {**DELTA_DEFAULTS, **j}
  options.positive(j['max_new_tokens'], 'judge.max_new_tokens')
  if j['extractor'] is not None:
    answers_lib.extractor(j['extractor'])  # an unknown one fails now
  return j


def sampling(judge: dict, batch_size: int) -> gs.Sampling:
  """Greedy answers of at most judge.max_new_tokens tokens."""
  return gs.Sampling(max_new_tokens=int(judge['max_new_tokens']), batch_size=batch_size)


def pairs(raw: dict, large, small, *, seed: int) -> tuple[dict, dict]:
  """(raw's rows whose two answers differ, with 'response_a' / 'response_b' = the larger's and the
  smaller's answer in an order drawn per id and 'label' int64 [M] = the index of the larger's;
  counts {'pairs': M, 'identical': rows dropped}). `large`, `small`: N answers of raw's rows."""
  large, small = [str(x) for x in large], [str(x) for x in small]
  keep = np.array([i for i in range(len(large)) if large[i] != small[i]], np.int64)
  out = {k: np.asarray(v)[keep] for k, v in raw.items()}
  ids = out['id'].tolist()
  label = np.array([int(np.random.default_rng([seed, _ORDER_SALT, i]).integers(2)) for i in ids],
                   np.int64)
  ab = [(large[i], small[i]) if y == 0 else (small[i], large[i]) for i, y in zip(keep, label)]
  out.update(response_a=np.array([p[0] for p in ab], dtype=object),
             response_b=np.array([p[1] for p in ab], dtype=object), label=label)
  return out, {'pairs': len(keep), 'identical': len(large) - len(keep)}


def correct_shares(pairs_raw: dict, gold_answers, extractor: str) -> dict:
  """REPORTING ONLY: shares of Delta pairs whose chosen (the larger's) / rejected answer equals the
  gold answer [M] (`generative_stages.exact_match`), and whose delta is right (chosen correct,
  rejected wrong) / wrong (the reverse)."""
  y = np.asarray(pairs_raw['label'])
  resp = np.stack([np.asarray(pairs_raw['response_a']), np.asarray(pairs_raw['response_b'])], 1)
  rows = np.arange(len(y))
  chosen = gs.exact_match(resp[rows, y], gold_answers, extractor)
  rejected = gs.exact_match(resp[rows, 1 - y], gold_answers, extractor)
  return {'chosen_correct': float(chosen.mean()), 'rejected_correct': float(rejected.mean()),
          'delta_right': float((chosen * (1 - rejected)).mean()),
          'delta_wrong': float(((1 - chosen) * rejected).mean())}


def teach(ctx, opts, raw: dict, plan: dict, pre: dict, modules: dict, seed: int,
          truncated: collections.Counter):
  """The Delta judge of one seed. ctx: the seed's `fit(stage, kind, module, init, rows, val_rows,
  section, loss)`, `scores(trained, what, fn, name=None, key=None)`, `gen(trained, sampling)`
  and `encode(raw)` (pairs). Returns ({part: (raw pairs, encoded)} for 'b' (and 'val'), the key
  of their construction (for the reference's store), judge test predictions [N_test], record)."""
  j = opts.judge
  prompts = lambda r: gs.prompts_of(r, opts.template)
  answers = lambda r: [str(x) for x in r[j['answer']]]

  def sft_rows(r):
    enc = tokens.encode_sft(prompts(r), answers(r), opts.tokenizer, max_length=opts.max_length,
                            max_prompt_length=opts.max_prompt_length)
    truncated['prompts'] += int(enc['truncated_prompts'])
    truncated['responses'] += int(enc['truncated_responses'])
    return gs.token_examples(enc, r['id'])

  a_rows, val_rows = sft_rows(raw['a']), sft_rows(raw['val']) if 'val' in raw else None
  trained = {role.role: ctx.fit(plan[role.role], 'tokens', modules[role.role], pre.get(role.role),
                                a_rows, val_rows, role.train, role.loss)
             for role in (opts.weak, opts.weak_small)}
  greedy = sampling(j, opts.eval_batch_size)
  made, record = {}, {'name': 'delta'}
  for part in ('b', 'val'):
    if part not in raw:
      continue
    large, small = (ctx.gen(trained[r], greedy).texts(raw[part], prompts(raw[part]))[:, 0]
                    for r in ('weak', 'weak_small'))
    kept, counts = pairs(raw[part], large, small, seed=seed)
    if not counts['pairs']:
      raise UserError(f'judge delta: the weak and weak_small decoders give identical answers to '
                      f'all {counts["identical"]} prompts of {part}; no pair carries a preference '
                      '(make the two weak models differ more)')
    made[part] = (kept, ctx.encode(kept))
    record[f'n_pairs_{part}'] = counts['pairs']
    record[f'n_identical_{part}'] = counts['identical']
    if part == 'b' and j['extractor'] is not None:  # B's gold answers: reported, never used
      gold = np.asarray(raw['b'][j['answer']])[np.isin(raw['b']['id'], kept['id'])]
      record.update(correct_shares(kept, [str(x) for x in gold], j['extractor']))
  test_rows = ctx.test_rows
  logp = {r: ctx.scores(trained[r], 'logp', f'logp_{r}', name=r).of(test_rows)
          for r in ('weak', 'weak_small')}
  judge_pred = pr.preferred(pr.implicit_rewards(logp['weak'], logp['weak_small']))
  key = (plan['weak'].key, plan['weak_small'].key, options.plain(j))
  return made, key, judge_pred, record
