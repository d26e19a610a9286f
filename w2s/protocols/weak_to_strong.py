"""The weak-to-strong protocol (Burns et al. 2023, "Weak-to-Strong Generalization"), as stages.

Per seed: split train into A (weak_train) and B (strong_train) -> weak supervisor on A's ground
truth -> weak soft labels on B and test -> strong ceiling on B's ground truth -> for each student
loss, the strong student on B's weak labels (optionally through a bootstrapping chain of
intermediate models, and strong-to-strong relabelling rounds) -> test accuracy, PGR and the
diagnostics of `w2s.scores`. Over seeds: means with bootstrap 95% CIs, `results.json`, a table and
plots. Every stage's outputs are keyed by the config that produced them (`stages.py`), so a rerun
skips finished stages and all students share one set of weak labels. No stage selects models with
B's ground truth: training lengths are fixed by the config.
"""
import os

import jax
import numpy as np
from ml_collections import ConfigDict

from w2s import ensemble, registry, sharding, train
from w2s.data import splits as splits_lib
from w2s.errors import UserError
from w2s.protocols import learners, results as results_lib
from w2s.protocols.stages import Stage, join_by_id


def _softmax(logits):
  z = logits - logits.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def _train_and_predict(stage: Stage, learner, train_raw, labels, predict_on: dict, *, cfg, mesh,
                       eval_batch_size, num_classes, extras=None) -> dict:
  """Runs one stage unless done: fit on (train_raw, labels), then probabilities on `predict_on`.

  A learner with `ensemble=dict(size=K > 1, bagging=...)` trains K members in one vmapped step;
  its outputs add the members' probabilities ('<split>_member_probs' [N, K, C]) to their mean.
  """
  if stage.done():
    print(f'[{stage.kind}] done earlier, skipped ({stage.dir})', flush=True)
    return stage.outputs()
  ens = dict(learner.spec.get('ensemble') or {})
  size = int(ens.get('size', 1))
  train_ex = learner.examples(train_raw, labels, extras)
  if size > 1:
    state, last = ensemble.fit_ensemble(
        learner.module, train_ex, cfg=cfg, seeds=ensemble.member_seeds(cfg.seed, size),
        workdir=stage.dir, mesh=mesh, bagging=bool(ens.get('bagging', False)), name=stage.kind)
  else:
    state, last = train.fit(learner.module, train_ex, cfg=cfg, workdir=stage.dir, mesh=mesh,
                            init_params=learner.init_params, name=stage.kind)
  outputs = {}
  for split, raw in predict_on.items():
    ex = learner.examples(raw, learners.soft_labels(raw, num_classes))
    name = f'{stage.kind} labels {split}'
    if size > 1:
      pred = ensemble.predict_ensemble(learner.module, state.params, ex,
                                       batch_size=eval_batch_size, mesh=mesh, name=name)
      members = _softmax(pred['member_logits'])
      outputs[f'{split}_member_probs'] = members
      outputs[f'{split}_probs'] = members.mean(axis=1)
    else:
      pred = train.predict(learner.module, state.params, ex, batch_size=eval_batch_size,
                           mesh=mesh, name=name)
      outputs[f'{split}_probs'] = _softmax(pred['logits'])
    outputs[f'{split}_id'] = pred['id']
  stage.finish(outputs, {'train_metrics': last, 'steps': int(np.max(state.step))})
  return outputs


def _teacher_extras(teacher: dict, raw: dict) -> dict | None:
  """'member_probs' [N, K, C] of an ensemble teacher on B (for the reliability loss), by id."""
  if 'strong_train_member_probs' not in teacher:
    return None
  return {'member_probs': join_by_id(raw['id'], teacher['strong_train_id'],
                                     teacher['strong_train_member_probs'], 'ensemble members')}


def _probs_on(outputs: dict, split: str, raw: dict, what: str) -> np.ndarray:
  return join_by_id(raw['id'], outputs[f'{split}_id'], outputs[f'{split}_probs'], what)


def _validate(config) -> None:
  """Resolves every plug-in name before any stage writes (bad names fail with nothing written)."""
  seeds = tuple(config.seeds)
  if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
    raise UserError(f'seeds={seeds!r} must be a non-empty tuple of ints, e.g. '
                    "--config.seeds='(0, 1, 2)'")
  if not config.student_losses:
    raise UserError('student_losses is empty; name at least one, e.g. dict(xent=dict(name="xent"))')
  for spec in config.student_losses.values():
    registry.get('losses', spec.name)
  for role in ('weak', 'strong'):
    registry.get('losses', config[role].loss.name)


def run(*, config, workdir: str) -> dict:
  mesh = sharding.make_mesh(config.mesh.num_devices)
  dataset = registry.build('datasets', config.dataset)
  _validate(config)
  tok = config.tokenizer.to_dict()
  common = dict(dataset=dataset, eval_batch_size=config.eval_batch_size, mesh=mesh,
                cache_dir=os.path.join(workdir, 'features'))

  def make(role, spec):  # a role's own `tokenizer` section (e.g. GPT-2 weak, Qwen strong) wins
    role_tok = dict(spec['tokenizer']) if spec.get('tokenizer') else tok
    return learners.make(role, spec, tokenizer=role_tok, **common)

  weak, strong = make('weak', config.weak), make('strong', config.strong)
  chain = [make(f'chain{i}', spec) for i, spec in enumerate(config.chain)]
  C = dataset.num_classes
  fit_kw = dict(mesh=mesh, eval_batch_size=config.eval_batch_size, num_classes=C)
  per_seed = []
  for seed in config.seeds:
    parts = splits_lib.weak_to_strong(dataset, seed=seed, **config.splits.to_dict())
    a, b, test = (parts.splits[k] for k in ('weak_train', 'strong_train', 'test'))
    base = (config.dataset, config.splits, tok, seed)
    weak_stage = Stage(workdir, 'weak', base, config.weak)
    weak_out = _train_and_predict(
        weak_stage, weak, a, learners.soft_labels(a, C), {'strong_train': b, 'test': test},
        cfg=learners.train_cfg(config, config.weak, loss=config.weak.loss, seed=seed), **fit_kw)
    ceiling_out = _train_and_predict(
        Stage(workdir, 'ceiling', base, config.strong), strong, b, learners.soft_labels(b, C),
        {'test': test}, cfg=learners.train_cfg(config, config.strong, loss=config.strong.loss,
                                               seed=seed), **fit_kw)
    teacher, teacher_key = weak_out, weak_stage.key
    for i, learner in enumerate(chain):  # bootstrapping: weak -> intermediate -> ... -> strong
      stage = Stage(workdir, f'chain{i}', base, learner.spec, teacher_key)
      teacher = _train_and_predict(
          stage, learner, b, _probs_on(teacher, 'strong_train', b, stage.kind),
          {'strong_train': b, 'test': test},
          cfg=learners.train_cfg(config, learner.spec, loss=learner.spec['loss'], seed=seed), **fit_kw)
      teacher_key = stage.key
    record = {'seed': seed, 'n_weak_train': len(a['id']), 'n_strong_train': len(b['id']),
              'n_test': len(test['id'])}
    weak_test = _probs_on(weak_out, 'test', test, 'weak test labels')
    for name, loss in config.student_losses.items():
      student_out = _student(name, loss, strong, b, test, teacher, teacher_key, base, config,
                             workdir, fit_kw, seed)
      record[name] = results_lib.score_seed(
          weak_test, _probs_on(student_out, 'test', test, 'student'),
          _probs_on(ceiling_out, 'test', test, 'ceiling'), test['label'])
    per_seed.append(record)
    print(results_lib.seed_line(record, list(config.student_losses)), flush=True)
  results = results_lib.summarize(per_seed, list(config.student_losses), config.to_dict())
  if jax.process_index() == 0:
    train.write_json_atomic(os.path.join(workdir, 'results.json'), results)
    results_lib.plot(results, workdir)
    print(results_lib.table(results), flush=True)
  return results


def _student(name, loss, strong, b, test, teacher, teacher_key, base, config, workdir, fit_kw,
             seed):
  """The strong student on the teacher's labels of B, then `relabel_rounds` strong-to-strong rounds
  (each student relabels B for a fresh student)."""
  out, key = teacher, teacher_key
  for r in range(config.relabel_rounds + 1):
    kind = f'student_{name}' + (f'_round{r}' if r else '')
    stage = Stage(workdir, kind, base, config.strong, loss, key)
    predict_on = {'test': test, **({'strong_train': b} if r < config.relabel_rounds else {})}
    out = _train_and_predict(
        stage, strong, b, _probs_on(out, 'strong_train', b, f'{kind} labels'), predict_on,
        cfg=learners.train_cfg(config, config.strong, loss=ConfigDict(loss).to_dict(), seed=seed),
        extras=_teacher_extras(out, b), **fit_kw)
    key = stage.key
  return out
