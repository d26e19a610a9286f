"""Pixel-debate results over seeds (mean and Student-t 95% interval of every per-seed number, none
below 3 seeds; gains are per-seed differences, so their intervals are paired), the
printed tables, and `debate_games.png` (a few digits, the pixels each side revealed, and the
judge's belief after each move); `load_games` reads a finished run's games back to draw others
(colabs/pixel_debate.ipynb)."""
import os

import numpy as np

from w2s import scores
from w2s.errors import UserError
from w2s.protocols import results as results_lib

# Irving, Christiano & Amodei (2018), Sec. 3, full MNIST, MCTS debaters, precommit: k -> (judge
# from k random pixels, judge after debate), in %
PAPER = {6: (59.4, 88.9), 4: (48.2, 85.2)}


def summarize(per_seed: list[dict], pixels, strategies, liars) -> dict:
  """{'per_seed', 'summary': {metric: {mean, lo, hi, n, n_nan}}, 'seeds', 'pixels', ...}: every
  float of the per-seed records (NaN PGRs are dropped from their mean and counted)."""
  names = [m for m, v in per_seed[0].items() if isinstance(v, float) or v is None]
  summary = {m: scores.summarize_seeds([np.nan if r[m] is None else r[m] for r in per_seed])._asdict()
             for m in names}
  return {'per_seed': per_seed, 'summary': summary, 'seeds': [r['seed'] for r in per_seed],
          'pixels': list(pixels), 'strategies': list(strategies), 'liars': list(liars)}


def _fmt(s: dict | None, k: float = 100.0) -> str:
  if s is None:
    return 'undefined'
  return scores.fmt_summary(s, k, digits=1 if k == 100.0 else 2)  # accuracies in % to 0.1, PGR 0.01


def _markdown(rows) -> str:
  lines = ['| ' + ' | '.join(rows[0]) + ' |', '|' + '---|' * len(rows[0])]
  return '\n'.join(lines + ['| ' + ' | '.join(r) + ' |' for r in rows[1:]])


def judge_table(results: dict) -> str:
  """Judge accuracy (%) from k random pixels vs after debate, per k and strategy."""
  s, liars = results['summary'], results['liars']
  head = ['k', 'debaters', 'judge, k random pixels'] + [f'debate vs {_LIAR[l]}' for l in liars]
  head += [f'gain vs {_LIAR[l]}' for l in liars] + ['paper (random -> debate)']
  rows = [head]
  for k in results['pixels']:
    paper = '%.1f -> %.1f' % PAPER[k] if k in PAPER else '-'
    for strategy in results['strategies']:
      key = f'k{k}/{strategy}'
      rows.append([str(k), strategy, _fmt(s[f'k{k}/judge_random'])]
                  + [_fmt(s.get(f'{key}/debate_{l}')) for l in liars]
                  + [_fmt(s.get(f'{key}/gain_{l}')) for l in liars] + [paper])
  return _markdown(rows)


_LIAR = {'runner_up': "the strong model's runner-up", 'all': 'every lie (worst case)'}


def w2s_table(results: dict) -> str:
  """Labels of B -> strong student: label accuracy on B, student test accuracy, PGR."""
  s = results['summary']
  rows = [['k', 'labels of B', 'label acc. on B', 'student test acc.', 'PGR']]
  for k in results['pixels']:
    rows.append([str(k), f'plain judge ({k} random pixels)', _fmt(s[f'k{k}/labels_B/plain']),
                 _fmt(s[f'k{k}/student/plain']), _fmt(s[f'k{k}/pgr/plain'], 1.0)])
    for strategy in results['strategies']:
      key = f'k{k}/{strategy}'
      rows.append([str(k), f'debate-aided ({strategy}; judge picks of strong top-2)',
                   _fmt(s[f'{key}/labels_B/debate']), _fmt(s[f'{key}/student/debate']),
                   _fmt(s[f'{key}/pgr/debate'], 1.0)])
    rows.append([str(k), "strong classifier's own soft labels", _fmt(s['labels_B/strong_top1']),
                 _fmt(s['student/strong_labels']), _fmt(s[f'k{k}/pgr/strong_labels'], 1.0)])
  rows.append(['-', 'ground truth (ceiling)', '100', _fmt(s['acc_ceiling']), '1'])
  return _markdown(rows)


def table(results: dict) -> str:
  s, n = results['summary'], len(results['seeds'])
  return (f'{results_lib.smoke_note(results.get("config"))}pixel debate, test accuracy %, '
          f'{results_lib.interval_note(n)}; strong model '
          f'on A {_fmt(s["acc_strong"])}, truth in its top-2 on B {_fmt(s["labels_B/strong_top2"])}'
          f'\n\n{judge_table(results)}\n\nweak-to-strong (weak = the plain judge on test):\n\n'
          f'{w2s_table(results)}')


def load_games(results: dict, workdir: str, *, k: int | None = None, strategy: str | None = None,
               liar: str | None = None, seed: int | None = None) -> dict:
  """The trace `plot_games` draws, read back from a finished run (its `results`, and the workdir
  it ran in): one seed's debates on test (a `debate_k*` stage's outputs) with that seed's test
  images [N, H, W] and labels [N]. Defaults: the largest k, the first strategy, liar and seed."""
  from ml_collections import ConfigDict
  from w2s import options
  from w2s.data import featurize, splits as splits_lib
  from w2s.protocols import pixel_debate_options

  r = pixel_debate_options.resolve(ConfigDict(results['config']))
  k = max(results['pixels']) if k is None else k
  strategy, liar = strategy or results['strategies'][0], liar or results['liars'][0]
  seed = results['seeds'][0] if seed is None else seed
  if seed not in results['seeds']:
    raise UserError(f'seed {seed} is not one of the run\'s seeds {results["seeds"]}')
  kind = f'debate_k{k}_{strategy}_{liar}'
  stages = results['per_seed'][results['seeds'].index(seed)]['stages']
  if kind not in stages:
    raise UserError(f'the run has no stage {kind}; it has {sorted(stages)}')
  with np.load(os.path.join(r.shared_dir or workdir, stages[kind], 'outputs.npz')) as f:
    games = dict(f)
  dataset = options.build(r.dataset, 'dataset')
  test = splits_lib.weak_to_strong(dataset, seed=seed, **r.splits).splits['test']
  return dict(games, images=featurize.featurize(dataset, test)['x'][..., 0],
              labels=np.asarray(test['label']), k=k, strategy=strategy, liar=liar, seed=seed)


def plot_games(trace: dict, path: str, *, num: int = 4, names=None, games=None) -> str:
  """One row per game: the digit with each side's reveals numbered in move order, the judge's
  view, and the judge's belief between the two claims (its softmax restricted to them) after
  each move. `games`: indices into the trace's games; default the first image of each of the
  first `num` true labels."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  idx, labels = np.asarray(trace['index']), np.asarray(trace['labels'])
  if games is None:
    first_game = {}
    for g, i in enumerate(idx.tolist()):   # one game per true label ('all': the first lie of each)
      first_game.setdefault(int(labels[i]), g)
    games = list(first_game.values())[:num]
  games = [int(g) for g in games]
  if not games:
    raise UserError('plot_games: no games to draw')
  h, w = trace['images'].shape[1:]
  names = names or [str(c) for c in range(trace['logits'].shape[-1])]
  fig, axes = plt.subplots(len(games), 3, figsize=(8.5, 2.5 * len(games)), squeeze=False)
  colors = ('#1f77b4', '#d62728')  # claim 0 (honest: the true label), claim 1 (the liar)
  for row, g in zip(axes, games):
    img, claims = trace['images'][idx[g]], trace['claims'][g]
    order, mover = trace['order'][g], trace['mover'][g]
    view = np.full(h * w, np.nan)
    view[order] = img.reshape(-1)[order]
    row[0].imshow(img, cmap='gray_r', vmin=0, vmax=1)
    row[1].imshow(np.full((h, w), 0.12), cmap='gray_r', vmin=0, vmax=1)
    row[1].imshow(view.reshape(h, w), cmap='gray_r', vmin=0, vmax=1)
    for t, (p, m) in enumerate(zip(order, mover)):
      for ax in row[:2]:
        ax.add_patch(plt.Rectangle((p % w - 0.5, p // w - 0.5), 1, 1, fill=False,
                                   edgecolor=colors[m], lw=1.5))
      # each move's number off its own diagonal, so neighbouring reveals' numbers do not merge
      dx, dy = (-2.2, 2.2)[t % 2], (-2.2, 2.2)[(t // 2) % 2]
      row[1].annotate(str(t + 1), (p % w, p // w), (p % w + dx, p // w + dy), color=colors[m],
                      fontsize=7, fontweight='bold', ha='center', va='center',
                      arrowprops=dict(arrowstyle='-', color=colors[m], lw=0.6, shrinkA=0,
                                      shrinkB=2))
    z = trace['logits'][g][:, claims]                                  # [k + 1, 2]
    two = np.exp(z - z.max(-1, keepdims=True))
    two /= two.sum(-1, keepdims=True)
    for side, role in ((0, 'honest'), (1, 'liar')):
      row[2].plot(range(len(two)), two[:, side], 'o-', color=colors[side],
                  label=f'{role}: "{names[claims[side]]}"' + (' (moves 1st)' if
                                                              mover[0] == side else ''))
    row[2].axhline(0.5, color='gray', lw=0.7, ls='--')
    picked = claims[int(trace['winner'][g])]
    row[0].set_title(f'true label {names[labels[idx[g]]]}', fontsize=9)
    row[1].set_title(f'judge sees {len(order)} pixels, picks "{names[picked]}"', fontsize=9)
    row[2].set_ylim(0, 1)
    row[2].set_xlabel('pixels revealed', fontsize=8)
    row[2].set_ylabel('judge: P(claim) of the two', fontsize=8)
    row[2].legend(fontsize=7, loc='best')
    for ax in row[:2]:
      ax.set_xticks([])
      ax.set_yticks([])
  fig.suptitle(f'pixel debate, k={trace["k"]}, {trace["strategy"]} debaters, liar: '
               f'{_LIAR[trace["liar"]]}, seed {trace["seed"]}; boxes: revealed pixels '
               '(numbers: move order)', fontsize=8)
  fig.tight_layout(rect=(0, 0, 1, 0.98))
  tmp = path + '.tmp.png'
  fig.savefig(tmp, dpi=110)
  os.replace(tmp, path)
  plt.close(fig)
  return path
