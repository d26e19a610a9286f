"""The MNIST pixel debate (Irving, Christiano & Amodei 2018, "AI safety via debate", Sec. 3) and a
weak-to-strong step built on it, as stages (game and strategies: `w2s.debate.pixel`).

Per seed, train is split into A and B (`splits.weak_to_strong`), then:

* strong: the `strong` role (a full-image classifier) on A's ground truth; its probabilities on
  B and test. ceiling: the same role on B's ground truth.
* per k in `pixels`, judge_k: the `judge` role on A's ground truth, its input [image * m, m] with
  masks m of k pixels drawn per example and step (`augment.sparse_pixels`; nonzero pixels only
  with `nonzero=True`, as the paper's judge). Shown k random pixels of each test and B image (one
  seeded draw per image) it gives the plain judge's accuracy and labels.
* debate_k (per strategy and liar): precommitted debates on test, honest = the true label
  against the liar `runner_up` (the strong classifier's most probable wrong class: one game per
  image) or `all` (every wrong class in turn; the honest side wins an image only by winning all
  C - 1 games: the worst case over lies, i.e. the strongest precommitted liar).
* debate_labels_k (per strategy): debates on B between the strong classifier's top-2 classes
  (nobody knows B's truth, so the roles are claim 1 vs claim 2); B's debate-aided label is the
  judge's softmax restricted to the two claims at the end of the game. It can only be right
  where the truth is among the debaters' top 2.
* students (the strong role on B): from the plain judge's labels, from the debate-aided labels,
  and from the strong classifier's own soft labels of B (`strong_labels`: what the debaters
  alone would teach). Who moves first (`debate.first`): the honest side / claim 1, the liar /
  claim 2, or a seeded coin per game, the same for every strategy.

Results: judge accuracy from k random pixels vs after debate, label accuracy on B, student test
accuracy and PGR (weak = the plain judge on test, ceiling = the student on B's ground truth),
mean and bootstrap 95% CI over seeds (`pixel_debate_results`), and `debate_games.png`.
"""
import os

import jax
import numpy as np

from w2s import options, scores, sharding, train
from w2s.augment import sparse_pixels
from w2s.data import featurize as featurize_lib
from w2s.data import splits as splits_lib
from w2s.debate import pixel
from w2s.errors import UserError
from w2s.protocols import learners, pixel_debate_results as results_lib, role_check
from w2s.protocols.pixel_debate_options import FIRST, LIARS, Options, judge_options, resolve
from w2s.protocols.stages import Stage, join_by_id
from w2s.protocols.weak_to_strong import train_and_predict



def check(config):
  """(Options, dataset, mesh): every section checked, the first seed's splits drawn, the judge
  traced on [1, H, W, 2] inputs with each k's masks, the strong role on the images (what
  --dry_run runs; nothing is trained)."""
  r = resolve(config)
  dataset = options.build(r.dataset, 'dataset')
  r = resolve(config, dataset.input_kind)
  if dataset.input_kind != 'image':
    raise UserError(f'the pixel_debate protocol needs an image dataset (mnist_5k, mnist); '
                    f'{dataset.name!r} is {dataset.input_kind}')
  shape = np.shape(dataset.split('test')['image'])[1:]
  if len(shape) != 3 or shape[-1] != 1:
    raise UserError(f'pixel_debate reveals pixels of one-channel images; {dataset.name!r} images '
                    f'are {shape}')
  try:
    splits_lib.weak_to_strong(dataset, seed=r.seeds[0], **r.splits)
  except UserError as e:
    raise UserError(f'splits: {e}') from e
  num = shape[0] * shape[1]
  judge_in = {'x': jax.ShapeDtypeStruct((1, shape[0], shape[1], 2), np.float32),
              'label': jax.ShapeDtypeStruct((1, dataset.num_classes), np.float32)}
  for k in r.pixels:
    if k > num:
      raise UserError(f'pixels={k} is more than the {num} pixels of an image')
    role_check.augmentations(judge_options(r, k, 0), judge_in, 'judge.train')
  strong = learners.train_options(r.strong.train, 'strong.train', loss=r.strong.loss, seed=0,
                                  run=r.run)
  role_check.role(r.strong, strong, dataset)
  for strategy in r.debate['strategies']:
    pixel.check_strategy(strategy, r.debate['top_n'], num)
  module = options.build(r.judge.model, 'judge.model', num_classes=dataset.num_classes)
  learners._trace(module, {'x': judge_in['x']}, dataset.num_classes,
                  'judge.model (input [B, H, W, 2]: masked image, mask)')
  mesh = sharding.make_mesh(options.positive(r.mesh.get('num_devices', 0), 'mesh.num_devices',
                                             allow_zero=True), r.mesh.get('shape'))
  sharding.check_batch_size(r.eval_batch_size, mesh, 'eval_batch_size')
  return r, dataset, mesh


def _cached(stage: Stage, compute) -> dict:
  """The stage's outputs: read back if done, else `compute() -> (outputs, record)` and saved."""
  with stage.lock():
    if stage.done():
      print(f'[{stage.kind}] done earlier, skipped ({stage.dir})', flush=True)
      return stage.outputs()
    outputs, record = compute()
    stage.finish(outputs, record)
    return outputs


def _images(dataset, raw) -> np.ndarray:
  """float32 [N, H, W] in [0, 1]."""
  return featurize_lib.featurize(dataset, raw)['x'][..., 0]


def _softmax(z):
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


class _Seed:
  """One seed's splits, stages and shared state (the judge of each k, loaded when needed)."""

  def __init__(self, r: Options, dataset, mesh, root: str, seed: int):
    self.r, self.dataset, self.mesh, self.root, self.seed = r, dataset, mesh, root, seed
    self.parts = splits_lib.weak_to_strong(dataset, seed=seed, **r.splits).splits
    self.base = (r.dataset.spec(), options.plain(r.splits), seed)
    self.C = dataset.num_classes
    self.img = {s: _images(dataset, self.parts[s]) for s in ('weak_train', 'strong_train', 'test')}
    self.y = {s: np.asarray(self.parts[s]['label']) for s in self.img}
    self.stages = {}

  def stage(self, kind: str, *parts) -> Stage:
    st = Stage(self.root, kind, self.base, *parts, seed=self.seed)
    self.stages[kind] = os.path.relpath(st.dir, self.root)
    return st

  def allowed(self, split: str) -> np.ndarray:
    img = self.img[split]
    return img > 0 if self.r.nonzero else np.ones(img.shape, bool)

  def coins(self, tag: int, n: int) -> np.ndarray:
    """Who moves first in each of n games: 0 (honest / claim 1), 1, or a seeded coin."""
    first = self.r.debate['first']
    if first != 'random':
      return np.full(n, FIRST.index(first), np.int32)
    return np.random.default_rng([self.seed, tag]).integers(0, 2, n).astype(np.int32)

  # --- stages -------------------------------------------------------------------------------
  def strong_and_ceiling(self, learner) -> None:
    """The strong classifier on A (probabilities on B and test) and the ceiling on B."""
    r, parts = self.r, self.parts
    lab = lambda s: learners.soft_labels(parts[s], self.C)
    self.strong_stage = self.stage('strong', r.strong.spec())
    out = train_and_predict(self.strong_stage, learner, parts['weak_train'], lab('weak_train'),
                            {s: parts[s] for s in ('strong_train', 'test')}, opts=self.opts(),
                            mesh=self.mesh, eval_batch_size=r.eval_batch_size, num_classes=self.C)
    self.strong_probs = {s: join_by_id(parts[s]['id'], out[f'{s}_id'], out[f'{s}_probs'],
                                       f'strong {s}') for s in ('strong_train', 'test')}
    self.ceiling_probs = self.student('ceiling', lab('strong_train'), None, learner)

  def opts(self) -> options.TrainOptions:
    return learners.train_options(self.r.strong.train, 'strong.train', loss=self.r.strong.loss,
                                  seed=self.seed, run=self.r.run)

  def student(self, kind: str, labels: np.ndarray, source: str | None, learner) -> np.ndarray:
    """Test probabilities of the strong role trained on B with `labels` [N_B, C]."""
    st = self.stage(kind, self.r.strong.spec(), source)
    test = self.parts['test']
    out = train_and_predict(st, learner, self.parts['strong_train'], labels.astype(np.float32),
                            {'test': test}, opts=self.opts(), mesh=self.mesh,
                            eval_batch_size=self.r.eval_batch_size, num_classes=self.C)
    return join_by_id(test['id'], out['test_id'], out['test_probs'], kind)

  def judge(self, k: int):
    """(stage, judge game functions, outputs, params loader) of the judge for k pixels."""
    r, part = self.r, self.parts['weak_train']
    st = self.stage(f'judge_k{k}', r.judge.spec(), k, r.nonzero)
    module = options.build(r.judge.model, 'judge.model', num_classes=self.C)
    a = self.img['weak_train']
    ex = {'id': part['id'], 'x': np.stack([a, np.ones_like(a)], -1),
          'label': learners.soft_labels(part, self.C)}
    loaded = {}

    def fit():
      if 'state' not in loaded:  # a finished judge restores from its checkpoint
        loaded['state'], loaded['last'] = train.fit(
            module, ex, cfg=judge_options(r, k, self.seed), workdir=st.dir, mesh=self.mesh,
            name=st.kind, fingerprint={'stage': st.key})
      return loaded['state']

    def compute():
      state = fit()
      out = self.random_k(module, state.params, k)
      acc = float(np.mean(out['test_probs'].argmax(-1) == self.y['test']))
      print(f'[{st.kind}] judge from {k} random pixels: test accuracy {acc:.4f}', flush=True)
      return out, {'train_metrics': loaded['last'], 'steps': int(state.step), 'acc_test': acc}

    out = _cached(st, compute)
    return st, pixel.make_judge(module, self.img['test'].shape[1:]), out, lambda: fit().params

  def random_k(self, module, params, k: int) -> dict:
    """{'<split>_probs': [N, C]}: the judge from k random pixels of each B and test image (one
    seeded draw per image; both splits in one prediction, one compile)."""
    splits = ('strong_train', 'test')
    key = jax.random.fold_in(jax.random.PRNGKey(self.seed), k)
    masks = [sparse_pixels.random_masks(jax.random.fold_in(key, i), self.allowed(s), k)
             for i, s in enumerate(splits)]
    ex = {'id': np.concatenate([self.parts[s]['id'] for s in splits]),
          'x': np.concatenate([np.asarray(sparse_pixels.masked_input(self.img[s], m))
                               for s, m in zip(splits, masks)]),
          'label': np.concatenate([learners.soft_labels(self.parts[s], self.C) for s in splits])}
    pred = train.predict(module, params, ex, batch_size=self.r.eval_batch_size, mesh=self.mesh,
                         name=f'judge_k{k} random pixels', progress=False)
    return {f'{s}_probs': _softmax(join_by_id(self.parts[s]['id'], pred['id'], pred['logits'],
                                              f'judge_k{k} {s}')) for s in splits}

  def play(self, st: Stage, judge, params, split: str, idx, claims, first, k, strategy) -> dict:
    hw = self.img[split].shape[1:]
    flat = lambda a: a.reshape(len(a), hw[0] * hw[1])[idx]
    games = pixel.run_games(judge, params(), flat(self.img[split]), flat(self.allowed(split)),
                            claims, first, pixels=k, strategy=strategy,
                            top_n=self.r.debate['top_n'], batch_size=self.r.debate['batch_size'],
                            name=st.kind)
    return {**games, 'index': np.asarray(idx), 'claims': claims, 'first': first}

  def debate_key(self, strategy: str) -> dict:
    d = self.r.debate
    return {'strategy': strategy, 'top_n': d['top_n'] if strategy == 'lookahead' else None,
            'first': d['first']}

  def debate_test(self, k, strategy, liar, judge_stage, judge, params) -> dict:
    """Precommitted debates on test: the truth against the `liar`; 'honest_wins' [N]."""
    n = len(self.y['test'])
    n = n if self.r.debate['max_test'] is None else min(n, self.r.debate['max_test'])
    st = self.stage(f'debate_k{k}_{strategy}_{liar}', judge_stage.key, self.strong_stage.key,
                    self.debate_key(strategy), liar, n)

    def compute():
      y, probs = self.y['test'][:n], self.strong_probs['test'][:n]
      if liar == 'runner_up':   # the strong classifier's most probable wrong class
        idx = np.arange(n)
        lies = np.where(np.eye(self.C, dtype=bool)[y], -np.inf, probs).argmax(-1)
      else:                     # every wrong class in turn
        idx = np.repeat(np.arange(n), self.C - 1)
        lies = (y[idx] + 1 + np.tile(np.arange(self.C - 1), n)) % self.C
      claims = np.stack([y[idx], lies], 1).astype(np.int32)
      out = self.play(st, judge, params, 'test', idx, claims,
                      self.coins(10 * k + LIARS.index(liar), len(idx)), k, strategy)
      wins = np.ones(n, bool)
      np.logical_and.at(wins, idx, out['winner'] == 0)
      acc = float(wins.mean())
      print(f'[{st.kind}] judge after debate vs liar {liar}: test accuracy {acc:.4f}', flush=True)
      return {**out, 'honest_wins': wins}, {'acc': acc, 'n_images': n, 'n_games': len(idx)}
    return _cached(st, compute)

  def debate_labels(self, k, strategy, judge_stage, judge, params) -> dict:
    """Debates on B between the strong classifier's top-2 classes; 'probs' [N_B, C] labels."""
    st = self.stage(f'debate_labels_k{k}_{strategy}', judge_stage.key, self.strong_stage.key,
                    self.debate_key(strategy))

    def compute():
      claims = np.argsort(-self.strong_probs['strong_train'], -1, kind='stable')[:, :2]
      n = len(claims)
      out = self.play(st, judge, params, 'strong_train', np.arange(n), claims.astype(np.int32),
                      self.coins(10 * k + 2, n), k, strategy)
      two = _softmax(np.take_along_axis(out['logits'][:, -1], claims, 1))     # [N, 2]
      probs = np.zeros((n, self.C), np.float32)
      np.put_along_axis(probs, claims, two, 1)
      return {**out, 'probs': probs}, {'picked_claim1': float(np.mean(out['winner'] == 0))}
    return _cached(st, compute)


def _acc(probs, y) -> float:
  return float(np.mean(np.asarray(probs).argmax(-1) == y))


def _run_seed(r: Options, dataset, mesh, root: str, seed: int, learner) -> tuple[dict, dict]:
  """(flat metrics of one seed, the games to draw: max k, first strategy, first liar)."""
  s = _Seed(r, dataset, mesh, root, seed)
  s.strong_and_ceiling(learner)
  y_b, y_t = s.y['strong_train'], s.y['test']
  strong_b = s.strong_probs['strong_train']
  top2 = np.argsort(-strong_b, -1, kind='stable')[:, :2]
  in_top2 = (top2 == y_b[:, None]).any(-1)
  rec = {'acc_strong': _acc(s.strong_probs['test'], y_t), 'acc_ceiling': _acc(s.ceiling_probs, y_t),
         'labels_B/strong_top1': _acc(strong_b, y_b), 'labels_B/strong_top2': float(in_top2.mean())}
  rec['student/strong_labels'] = _acc(s.student('student_strong_labels', strong_b,
                                                 s.strong_stage.key, learner), y_t)
  trace = None
  for k in r.pixels:
    judge_stage, judge, plain, params = s.judge(k)
    weak = _acc(plain['test_probs'], y_t)
    rec[f'k{k}/judge_random'] = weak
    rec[f'k{k}/labels_B/plain'] = _acc(plain['strong_train_probs'], y_b)
    pgr = lambda acc: scores.pgr(weak, acc, rec['acc_ceiling']).value  # NaN if undefined
    rec[f'k{k}/student/plain'] = _acc(s.student(f'student_plain_k{k}', plain['strong_train_probs'],
                                                judge_stage.key, learner), y_t)
    for name in ('plain', 'strong_labels'):
      student = rec[f'k{k}/student/plain'] if name == 'plain' else rec['student/strong_labels']
      rec[f'k{k}/pgr/{name}'] = pgr(student)
    for strategy in r.debate['strategies']:
      key = f'k{k}/{strategy}'
      for liar in r.debate['liars']:
        games = s.debate_test(k, strategy, liar, judge_stage, judge, params)
        rec[f'{key}/debate_{liar}'] = float(games['honest_wins'].mean())
        n = len(games['honest_wins'])  # the random-k judge on the same images (paired)
        rec[f'{key}/gain_{liar}'] = rec[f'{key}/debate_{liar}'] - _acc(plain['test_probs'][:n],
                                                                       y_t[:n])
        if trace is None and k == max(r.pixels):
          trace = dict(games, images=s.img['test'], labels=y_t, k=k, strategy=strategy, liar=liar,
                       seed=seed)
      labels = s.debate_labels(k, strategy, judge_stage, judge, params)
      rec[f'{key}/labels_B/debate'] = _acc(labels['probs'], y_b)
      rec[f'{key}/labels_B/debate_where_top2'] = _acc(labels['probs'][in_top2], y_b[in_top2])
      rec[f'{key}/labels_B/picked_claim1'] = float(np.mean(labels['winner'] == 0))
      student = _acc(s.student(f'student_debate_k{k}_{strategy}', labels['probs'],
                               s.stages[f'debate_labels_k{k}_{strategy}'], learner), y_t)
      rec[f'{key}/student/debate'] = student
      rec[f'{key}/pgr/debate'] = pgr(student)
  rec = {'seed': seed, 'n_weak_train': len(s.y['weak_train']),
         'n_strong_train': len(y_b), 'n_test': len(y_t), **rec, 'stages': dict(s.stages)}
  print(f'[pixel_debate] seed {seed}: ' + '  '.join(
      f'{m} {v:.4f}' for m, v in rec.items() if isinstance(v, float) and '/gain' not in m),
      flush=True)
  return rec, trace


def run(*, config, workdir: str) -> dict:
  r, dataset, mesh = check(config)
  root = r.shared_dir or workdir
  learner = learners.make(r.strong, dataset=dataset, eval_batch_size=r.eval_batch_size,
                          cache_dir=os.path.join(root, 'features'))
  per_seed, trace = [], None
  for seed in r.seeds:
    rec, games = _run_seed(r, dataset, mesh, root, seed, learner)
    per_seed.append(rec)
    trace = trace or games
  results = results_lib.summarize(per_seed, r.pixels, r.debate['strategies'], r.debate['liars'])
  results['config'] = config.to_dict()
  if jax.process_index() == 0:
    print(results_lib.table(results), flush=True)
    if r.plot_games and trace is not None:
      results['plot'] = results_lib.plot_games(trace, os.path.join(workdir, 'debate_games.png'),
                                               num=r.plot_games, names=dataset.label_names)
  return results
