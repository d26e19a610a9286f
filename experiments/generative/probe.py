"""Val exact match of the generative protocol's weak and ceiling stages, without the students.

    python experiments/generative/probe.py --config configs/w2s_sft.py \
        --config.shared_dir=/tmp/study2/shared --workdir /tmp/study2/probe --roles=weak,ceiling

For choosing the weak design and the ceiling's SFT on val (never test). It builds the same stages
as `w2s/protocols/generative.py` (same stage keys under shared_dir or the workdir, same greedy
generation stores), so a later full run reuses what a probe trained. Per seed and role it prints
one JSON line: exact match of greedy answers on val against gold (the selection figure), the
same on test (printed, never selected on), and with `--terse` the pretrained decoder's exact
match on val's problems asked in the corpus's own format ('47+58=' -> '105'): whether it holds
the skill at all, before any SFT.
"""
import json
import sys

from absl import app, flags
from ml_collections import config_flags
import numpy as np

from w2s import compile_cache
from w2s.data import splits as splits_lib
from w2s.generative import tokens
from w2s.protocols import generative, generative_stages as gs

_CONFIG = config_flags.DEFINE_config_file('config', None, 'configs/w2s_sft.py[:args]')
_WORKDIR = flags.DEFINE_string('workdir', None, 'stages live here unless config.shared_dir')
_ROLES = flags.DEFINE_list('roles', ['weak'], 'weak and/or ceiling')
_TERSE = flags.DEFINE_bool('terse', False, "also the pretrained decoders on 'a+b=' prompts")


def _fit(opts, plan_stage, role, module, init, train_ex, val_ex, seed, mesh):
  topts = gs.learners.train_options(role.train, f'{role.role}.train', loss=role.loss, seed=seed,
                                    run=dict(opts.run))
  init_params = (lambda _targets: init.params()) if init is not None else None
  return gs.Trained(plan_stage, module, lambda: gs.fit_tokens(
      plan_stage, module, train_ex, topts=topts, mesh=mesh, init_params=init_params,
      val_examples=val_ex, eval_batch_size=opts.eval_batch_size, length=opts.max_length))


def main(argv):
  del argv
  compile_cache.enable()
  config = _CONFIG.value
  opts, dataset, weak_m, strong_m = generative.check(config)
  mesh = gs.mesh_of(opts.num_devices, opts.mesh_shape)
  root = opts.shared_dir or _WORKDIR.value
  test = dataset.splits.get('test')
  corpus = generative._corpus_rows(opts, test)  # pylint: disable=protected-access
  modules = {'weak': (opts.weak, weak_m), 'ceiling': (opts.strong, strong_m)}
  greedy = opts.sampling.greedy()
  pre = {}
  for seed in opts.seeds:
    plan = generative.stage_plan(opts, root, seed)
    parts = splits_lib.weak_to_strong(dataset, seed=seed, **opts.splits)
    a, b, val, test = (parts.splits[k] for k in ('weak_train', 'strong_train', 'val', 'test'))
    gold = lambda raw: [str(x) for x in raw[opts.answer_field]]
    prompts = lambda raw: gs.prompts_of(raw, opts.template)

    def rows(raw):
      enc = tokens.encode_sft(prompts(raw), gold(raw), opts.tokenizer, max_length=opts.max_length)
      return gs.token_examples(enc, raw['id'])
    for name in _ROLES.value:
      role, module = modules[name]
      if role.role not in pre:
        pre[role.role] = gs.pretrain(plan['pretrain'][role.role], role, module, corpus,
                                     run=dict(opts.run), mesh=mesh,
                                     eval_batch_size=opts.eval_batch_size)
      trained = _fit(opts, plan[name], role, module, pre[role.role], rows(a if name == 'weak'
                                                                         else b),
                     rows(val), seed, mesh)
      gen = gs.Generator(root, trained, greedy, tokenizer=opts.tokenizer,
                         prompt_key=(opts.template,), mesh=mesh, seed=seed)
      out = {'seed': seed, 'role': name, 'stage': plan[name].dir}
      for split, raw in (('val', val), ('test', test)):
        texts = gen.texts(raw, prompts(raw))[:, 0]
        right = gs.exact_match(texts, gold(raw), opts.extractor)
        out[f'{split}_exact'] = float(right.mean())
        answers = gs.answers_of(texts, opts.extractor)
        out[f'{split}_distinct_answers'] = len(set(answers))
      if _TERSE.value and seed == opts.seeds[0]:
        terse = gs.Generator(root, pre[role.role], greedy, tokenizer=opts.tokenizer,
                             prompt_key=('terse',), mesh=mesh, seed=0, name=f'terse_{role.role}')
        q = [f'{x}+{y}=' for x, y in zip(val['a'], val['b'])]
        texts = terse.texts(val, q)[:, 0]
        first = [t.split('\n')[0] for t in texts]
        out['terse_val_exact'] = float(np.mean([f.strip() == str(g).strip()
                                               for f, g in zip(first, gold(val))]))
        out['terse_examples'] = [f'{p}{f}' for p, f in zip(q[:4], first[:4])]
      out['train_metrics'] = {k: round(float(v), 4) for k, v in trained.last.items()
                              if isinstance(v, (int, float, np.floating))}
      print('PROBE ' + json.dumps(out), flush=True)


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  sys.exit(app.run(main))
