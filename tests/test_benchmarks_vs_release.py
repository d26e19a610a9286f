"""benchmarks/vs_release.py: the glue it writes into a copy of the release, the same-work check,
the thread settings, the data it writes; and, where the release and its venv exist, --smoke.

The release (openai/weak-to-strong) is never part of this repository: the smoke run needs a
checkout at $W2S_RELEASE_DIR and its venv's python at $W2S_RELEASE_PYTHON (default
/tmp/release_venv/bin/python, see the benchmark's docstring), and is skipped otherwise (CI)."""
import ast
import importlib.util
import json
import os

import pytest

from w2s.errors import UserError

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks',
                     'vs_release.py')
RELEASE_DIR = os.environ.get('W2S_RELEASE_DIR', '')
RELEASE_PYTHON = os.environ.get('W2S_RELEASE_PYTHON', '/tmp/release_venv/bin/python')

# the lines of the release that the patches touch, as they are in its two files
TRAIN_SIMPLE = '''import json
import os

import fire
import torch

MODEL_CONFIGS = [
    ModelConfig(
        name="gpt2-xl",
        model_parallel=(
            torch.cuda.get_device_properties(0).total_memory < 35e9
            and torch.cuda.device_count() > 1
        ),
    ),
    ModelConfig(
        name="Qwen/Qwen-1_8B",
        custom_kwargs={
            "bf16": torch.cuda.is_bf16_supported(),
            "fp32": not torch.cuda.is_bf16_supported(),
        },
    ),
]


def main(batch_size: int = 32):
    pass


if __name__ == "__main__":
    fire.Fire(main)
'''
TRAIN = '''def train_and_save_model(model_config):
    model = TransformerWithHead.from_pretrained(
        model_config.name, num_labels=2, linear_probe=linear_probe, **custom_kwargs
    ).to("cuda")
    if not already_trained:
        start = time.time()
        if save_path:
            # Note: If the model is wrapped by DataParallel, we need to unwrap it before saving
            (model if hasattr(model, "save_pretrained") else model.module).save_pretrained(
                save_path
            )
'''


@pytest.fixture(scope='module')
def bench():
  spec = importlib.util.spec_from_file_location('vs_release_bench', BENCH)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _release(root, train_simple=TRAIN_SIMPLE, train=TRAIN):
  os.makedirs(root / 'weak_to_strong')
  (root / 'train_simple.py').write_text(train_simple)
  (root / 'weak_to_strong' / 'train.py').write_text(train)
  (root / 'weak_to_strong' / 'datasets.py').write_text('def register_dataset(name, config): pass\n')
  return root


def test_patch_release_makes_a_cpu_safe_copy_with_the_glue(bench, tmp_path):
  src = _release(tmp_path / 'release')
  dest = bench.patch_release(str(src), str(tmp_path / 'copy'))
  simple = open(os.path.join(dest, 'train_simple.py')).read()
  train = open(os.path.join(dest, 'weak_to_strong', 'train.py')).read()
  # nothing asks CUDA at import, nothing moves to cuda, the glue is imported first and installed
  # after every module-level definition (MODELS_DICT, VALID_DATASETS), before fire runs main
  assert 'torch.cuda.get_device_properties' not in simple
  assert 'torch.cuda.is_bf16_supported' not in simple
  assert simple.startswith('import w2s_glue')
  assert simple.index('w2s_glue.install(globals())') < simple.index('if __name__ == "__main__":')
  assert simple.index('def main(') < simple.index('w2s_glue.install(globals())')
  assert 'model_parallel=(\n            False\n            and torch.cuda.device_count() > 1' in simple
  assert '"bf16": False,' in simple and '"fp32": not False,' in simple
  assert '.to("cuda")' not in train and ').to("cpu")' in train
  assert 'save_path, safe_serialization=False' in train
  ast.parse(simple), ast.parse(train)
  glue = open(os.path.join(dest, 'w2s_glue.py')).read()
  tree = ast.parse(glue)
  assert {'install', 'plan'} <= {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
  # the release itself is untouched
  assert (src / 'train_simple.py').read_text() == TRAIN_SIMPLE
  assert (src / 'weak_to_strong' / 'train.py').read_text() == TRAIN
  assert not (src / 'w2s_glue.py').exists()


def test_patch_release_refuses_another_version(bench, tmp_path):
  src = _release(tmp_path / 'release', train=TRAIN.replace('.to("cuda")', '.cuda()'))
  with pytest.raises(UserError, match=r"weak_to_strong/train.py of the release has no '.to"):
    bench.patch_release(str(src), str(tmp_path / 'copy'))
  with pytest.raises(UserError, match='has no train_simple.py'):
    bench.patch_release(str(tmp_path / 'nothing'), str(tmp_path / 'copy2'))


def _plan():
  shape = dict(layers=2, width=128, heads=2, vocab=50257, positions=1024)
  return dict(examples=dict(weak=256, strong=256, transfer=256, test=256),
              steps=dict(weak=16, strong=16, transfer=16), batch=32, epochs=2, max_length=1024,
              lr=dict(weak=5e-5, strong=5e-5, transfer=5e-5), tokens=20000, ids_digest='ab12',
              model=dict(weak=shape, strong=dict(shape, layers=4, width=256, heads=4)))


def test_same_work_names_each_difference_and_refuses(bench):
  w2s, rel = _plan(), _plan()
  assert bench.same_work(w2s, rel) == []
  bench.check_same_work(w2s, rel)
  rel['steps'] = dict(rel['steps'], strong=8)
  rel['batch'] = 1
  rel['model'] = dict(rel['model'], strong=dict(rel['model']['strong'], layers=12))
  rel['ids_digest'] = 'cd34'
  diff = bench.same_work(w2s, rel)
  assert diff == ['steps.strong: w2s 16 vs release 8', 'batch: w2s 32 vs release 1',
                  'ids_digest: w2s ab12 vs release cd34',
                  "model.strong: w2s {'layers': 4, 'width': 256, 'heads': 4, 'vocab': 50257, "
                  "'positions': 1024} vs release {'layers': 12, 'width': 256, 'heads': 4, "
                  "'vocab': 50257, 'positions': 1024}"]
  with pytest.raises(UserError, match=r'would not do the same work \(steps.strong: w2s 16 vs '
                     r'release 8; batch'):
    bench.check_same_work(w2s, rel)


def test_thread_settings(bench, monkeypatch):
  # the tests' 8 fake devices (conftest's XLA_FLAGS) must not reach the children: one device
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
  monkeypatch.setenv('OMP_NUM_THREADS', '7')
  prefix, env = bench.thread_env('all')
  assert prefix == [] and 'XLA_FLAGS' not in env and 'OMP_NUM_THREADS' not in env
  if bench.shutil.which('taskset'):
    prefix, env = bench.thread_env('1')
    assert prefix == ['taskset', '-c', '0']
    assert env['OMP_NUM_THREADS'] == env['MKL_NUM_THREADS'] == '1'
    assert env['XLA_FLAGS'] == '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1'
  args = bench.parse(['--release_dir', 'x', '--smoke'])
  assert (args.size, args.n_docs, args.epochs, args.repeats) == ('tiny', 64, 1, 1)


def test_write_data_is_rotten_tomatoes_in_the_amazon_schema(bench, tmp_path):
  info = bench.write_data(str(tmp_path), 40, 24)
  rows = {s: [json.loads(l) for l in open(tmp_path / f'{s}.jsonl')] for s in ('train', 'test')}
  fresh = sum(r['label'] for r in rows['test'])
  assert info == {'train': 40, 'test': 24, 'test_majority': max(fresh, 24 - fresh) / 24}
  assert [len(rows['train']), len(rows['test'])] == [40, 24]
  for r in rows['train'] + rows['test']:
    assert set(r) == {'title', 'content', 'label'} and r['title'] == '' and r['label'] in (0, 1)
  texts = [r['content'] for r in rows['train'] + rows['test']]
  assert len(set(texts)) == len(texts)  # no row in both splits
  assert 0 < sum(r['label'] for r in rows['train']) < 40  # both classes


@pytest.mark.slow
@pytest.mark.skipif(not (RELEASE_DIR and os.path.isfile(os.path.join(RELEASE_DIR, 'train_simple.py'))
                         and os.path.isfile(RELEASE_PYTHON)),
                    reason='needs a checkout of openai/weak-to-strong at $W2S_RELEASE_DIR and its '
                    'venv python at $W2S_RELEASE_PYTHON (see benchmarks/vs_release.py)')
def test_smoke_against_the_release(bench, capsys):
  out = bench.main(['--release_dir', RELEASE_DIR, '--release_python', RELEASE_PYTHON, '--smoke'])
  assert bench.same_work(out['plans']['w2s'], out['plans']['release']) == []
  s = out['summary']
  assert s['steps_run']['w2s'] == s['steps_run']['release'] == dict(weak=1, strong=1, transfer=1)
  assert s['steps_mismatch'] == []
  assert [r['side'] for r in out['runs']] == ['w2s cold', 'release', 'w2s warm']
  assert s['w2s_cold'] > 0 and s['release'] > 0 and s['ratio_cold'] == s['w2s_cold'] / s['release']
  for side in ('w2s', 'release'):
    assert all(0.0 <= a <= 1.0 for a in s['accuracy'][side].values())
  warm, cold = out['runs'][2], out['runs'][0]
  assert warm['cache_reads'] > 0 and warm['compiles'] < cold['compiles']
  printed = capsys.readouterr().out
  assert 'same work: yes' in printed and 'w2s / release, cold cache' in printed


def test_w2s_phases_split_fit_into_setup_and_the_training_loop(bench):
  # fit 30 s with 8 s of compiles, of which its loop 24 s with 6 s of compiles and 0.5 s of saves;
  # predict 5 s with 1 s of compiles; 11 s of compiles in all; start-up 2 s of a 50 s run
  r = dict(wall_s=50.0, startup_s=2.0, compile_s=11.0, fit_s=30.0, fit_compile_s=8.0, loop_s=24.0,
           loop_compile_s=6.0, save_s=0.5, predict_s=5.0, predict_compile_s=1.0)
  got = bench.w2s_phases(r)
  want = dict(startup=2.0, compile=11.0, setup=4.0, train=17.5, checkpoint=0.5, predict=4.0,
              other=11.0)
  assert got.keys() == want.keys()
  for k in want:
    assert got[k] == pytest.approx(want[k], rel=1e-12), k
  assert sum(got.values()) == pytest.approx(r['wall_s'], rel=1e-12)
