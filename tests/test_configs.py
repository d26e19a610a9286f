"""Every config builds for the commands its docstring documents; w2s_release.py carries the
release's hyperparameters and runs end to end on generated sciq files with a tiny byte-level BPE:
`runlocal` (tiny random GPT-2 weak -> tiny Qwen2 strong, linear probe) and the real branch (tiny
Hugging Face GPT-2 checkpoints, full fine-tuning)."""
import importlib.util
import json
import os
import re

import numpy as np
import pytest
from ml_collections import ConfigDict

from w2s import labelling_functions, registry, train
from w2s.errors import UserError

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')
CONFIG_FILES = sorted(f for f in os.listdir(CONFIGS) if f.endswith('.py') and not f.startswith('_'))
# `--config configs/<file>.py[:arg]` in a docstring command
_COMMAND = re.compile(r'--config[ =]configs/(\w+\.py)(?::(\S+))?')


def _module(file):
  spec = importlib.util.spec_from_file_location(file[:-3], os.path.join(CONFIGS, file))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _release(arg):
  return _module('w2s_release.py').get_config(arg)


def _documented_args(file):
  mod = _module(file)
  return mod, [arg for name, arg in _COMMAND.findall(mod.__doc__ or '') if name == file]


def _check_plugins(c: ConfigDict) -> None:
  """Every plug-in name the config holds resolves (a typo fails here, not hours into a run)."""
  registry.get('protocols', c.protocol.name)
  if 'dataset' in c:
    registry.get('datasets', c.dataset.name)
  role_keys = ('weak', 'strong', 'teacher', 'student')
  roles = [c[r] for r in role_keys if r in c] + list(c.get('chain', ()))
  if 'model' in c and 'model' in c.model:  # a role section (semi_supervised)
    roles.append(c.model)
  for role in roles:
    if 'labelling_functions' in role:  # a programmatic weak supervisor: rules + a label model
      labelling_functions.load(role.labelling_functions)
      registry.get('label_models', role.label_model.name)
      continue
    registry.get('models', role.model.name)
    if 'loss' in role:  # generative roles default to 'sft'
      registry.get('losses', role.loss.name)
    if role.get('frozen'):
      registry.get('models', role.head.name)
    train = role.get('train', {})
    for key in ('augment', 'weak_augment', 'strong_augment'):
      if train.get(key):
        registry.get('augment', train[key].name)
    if train.get('ssl'):
      registry.get('ssl', train.ssl.name)
  for spec in c.get('student_losses', {}).values():
    registry.get('losses', spec.name)
  for spec in c.get('ceiling', {}).values():  # the preference protocol's ceiling per student kind
    registry.get('losses', spec.name)
  if 'pseudo' in c:
    registry.get('pseudo_labels', c.pseudo.select.name)
  if 'model' in c and 'model' not in c.model:  # a flat config (supervised)
    registry.get('models', c.model.name)
    registry.get('losses', c.loss.name)


@pytest.mark.parametrize('file', CONFIG_FILES)
def test_every_config_builds_for_its_documented_commands(file):
  mod, args = _documented_args(file)
  assert args, f'{file}: its docstring documents no `python -m w2s.main --config configs/{file}`'
  for arg in args:
    c = mod.get_config(arg or None)
    assert isinstance(c, ConfigDict), (file, arg)
    _check_plugins(c)
    if c.protocol.name == 'weak_to_strong':
      assert len(c.seeds) >= 1 and c.student_losses and c.mesh.num_devices >= 0
      for role in ('weak', 'strong'):
        if 'train' in c[role]:
          assert c[role].train.batch_size % 8 == 0  # the 8 test devices divide every batch


def test_release_docstring_opens_with_its_command():
  doc = _module('w2s_release.py').__doc__
  assert doc.startswith('python -m w2s.main --config configs/w2s_release.py:task=')


_CKPT = 'weak_ckpt=/ckpt/w,strong_ckpt=/ckpt/s'


def test_release_reference_hyperparameters():
  c = _release(f'task=sciq,weak=gpt2,strong=gpt2-large,data=/d,{_CKPT}')
  # openai/weak-to-strong weak_to_strong/config.py: gpt2 5e-5, gpt2-large 1e-5; batch 32, 2 epochs
  assert c.weak.train.optimizer.to_dict() == dict(name='adam', learning_rate=5e-5)
  assert c.strong.train.optimizer.learning_rate == 1e-5
  for role in (c.weak, c.strong):
    assert role.train.batch_size == 32 and role.train.num_epochs == 2.0
    assert role.train.schedule.to_dict() == dict(name='cosine', warmup_frac=0.0)
    assert role.model.dropout == 0.0 and not role.get('frozen', False)
  assert c.weak.model.to_dict() == dict(name='gpt2', size='small', pretrained='/ckpt/w',
                                        dropout=0.0, dtype='float32', remat=False)
  assert (c.strong.model.size, c.strong.model.pretrained) == ('large', '/ckpt/s')
  assert c.tokenizer.to_dict() == dict(tokenizer='/ckpt/s', max_length=1024, truncation='right')
  hh = _release(f'task=anthropic_hh,data=/d,{_CKPT}')  # keep the deciding final turn
  assert hh.tokenizer.truncation == 'left' and hh.strong.tokenizer.truncation == 'left'
  assert (c.splits.max_weak, c.splits.max_strong, c.splits.max_test) == (10000, 10000, 10000)
  assert c.dataset.to_dict() == dict(name='sciq', path='/d', mode='sample', seed=0)
  assert c.student_losses.logconf.to_dict() == dict(name='logconf', aux_coef=0.5, warmup_frac=0.1)
  assert set(c.student_losses) == {'xent', 'logconf'}


def test_release_big_models_qwen_and_probe():
  c = _release(f'task=boolq,weak=qwen2-0.5b,strong=qwen2-7b,{_CKPT},loss=product')
  assert c.dataset.to_dict() == dict(name='boolq')  # TFDS catalog: no path needed
  assert c.strong.model.to_dict() == dict(name='llama', size='qwen2-7b', pretrained='/ckpt/s',
                                          dropout=0.0, dtype='bfloat16', remat=True)
  assert c.weak.train.optimizer.learning_rate == 1e-5
  assert list(c.student_losses) == ['product']
  p = _release(f'task=amazon_polarity,data=/a,{_CKPT},linear_probe,n_docs=1000,n_test_docs=0')
  assert p.strong.frozen and p.strong.head.to_dict() == dict(name='mlp', size='linear')
  assert (p.splits.max_weak, p.splits.max_strong, p.splits.max_test) == (500, 500, None)
  assert _release(f'task=cosmos_qa,data=/tfds,{_CKPT},mode=all').dataset.to_dict() == dict(
      name='cosmos_qa', data_dir='/tfds', mode='all', seed=0)
  assert 'size' not in _release(f'task=sciq,data=/d,{_CKPT},ckpt_arch').strong.model


def test_release_model_sections_build_every_preset(tmp_path):
  """create() takes every field the config sets (size, pretrained, dropout, dtype, remat)."""
  mod = _module('w2s_release.py')
  for name, m in mod.MODELS.items():
    family = [n for n, x in mod.MODELS.items() if x.family == m.family]
    c = mod.get_config(f'task=sciq,data=/d,weak={family[0]},strong={name},weak_ckpt={tmp_path},'
                       f'strong_ckpt={tmp_path}')
    model = registry.build('models', c.strong.model, num_classes=2)
    assert model.pretrained == str(tmp_path) and model.backbone.remat == m.big
    assert model.backbone.config.dropout == 0.0 and model.backbone.config.num_layers >= 12


def test_release_gpt2_to_qwen_tokenizes_each_role_with_its_own_checkpoint():
  c = _release('task=sciq,data=/d,weak=gpt2,strong=qwen2-0.5b,weak_ckpt=/ckpt/w,strong_ckpt=/ckpt/s')
  assert c.weak.tokenizer.tokenizer == '/ckpt/w' and c.strong.tokenizer.tokenizer == '/ckpt/s'
  assert c.weak.model.name == 'gpt2' and c.strong.model.name == 'llama'


@pytest.mark.parametrize('arg, message', [
    ('task=sciq,data=/d,weak_ckpt=/ckpt/w', 'strong_ckpt= is required'),
    (f'task=sciq,{_CKPT}', 'pass data=DIR'),
    (f'task=squad,data=/d,{_CKPT}', 'not a release task'),
    (f'task=sciq,data=/d,strong=gpt3,{_CKPT}', "strong='gpt3' is not a known model"),
    (f'task=amazon_polarity,data=/d,mode=pair,{_CKPT}', 'no candidate answers'),
    ('task=sciq,data=/d,runlocal,loss=', 'names no student loss'),
    ('tsk=sciq', 'unknown config argument'),
])
def test_release_bad_arguments_fail_with_one_line(arg, message):
  with pytest.raises(UserError, match=message):
    _release(arg)


def _write_sciq(root, n_train=160, n_test=64):
  """SciQ rows in the schema of w2s/data/sciq.py: sums to answer, the right one and 3 others."""
  rng = np.random.default_rng(0)
  os.makedirs(root, exist_ok=True)
  for split, n in (('train', n_train), ('test', n_test)):
    with open(os.path.join(root, f'{split}.jsonl'), 'w') as f:
      for _ in range(n):
        x, y = rng.integers(1, 50, size=2)
        wrong = rng.choice([d for d in range(2, 100) if d != x + y], size=3, replace=False)
        f.write(json.dumps(dict(question=f'What is {x} plus {y}?', correct_answer=str(x + y),
                                **{f'distractor{j + 1}': str(w) for j, w in enumerate(wrong)},
                                support='')) + '\n')
  return root


def _tiny_byte_bpe(root, texts):
  """A GPT-2-style byte-level BPE tokenizer.json (vocab < 512, the tiny presets' size)."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(texts, trainers.BpeTrainer(
      vocab_size=400, special_tokens=['<|endoftext|>'],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  os.makedirs(root, exist_ok=True)
  tok.save(os.path.join(root, 'tokenizer.json'))
  assert tok.get_vocab_size() <= 512
  return root


@pytest.fixture
def sciq_files(tmp_path, monkeypatch):
  """(data dir, tokenizer dir): generated sciq jsonl files and a byte-level BPE trained on them."""
  monkeypatch.setenv('W2S_DATA_DIR', str(tmp_path / 'tfds'))
  data = _write_sciq(str(tmp_path / 'sciq'))
  texts = [json.loads(line)['question'] for line in open(os.path.join(data, 'train.jsonl'))]
  return data, _tiny_byte_bpe(str(tmp_path / 'tok'), texts + [str(i) for i in range(100)])


def _run_release(tmp_path, sciq_files, arg):
  """runlocal: tiny random GPT-2 weak -> tiny random Qwen2 strong, 64 examples per part."""
  data, tok = sciq_files
  config = _release(f'task=sciq,weak=gpt2,strong=qwen2-0.5b,runlocal,data={data},tokenizer={tok},'
                    + arg)
  assert config.weak.model.size == 'tiny' and config.strong.model.size == 'qwen2-tiny'
  assert 'pretrained' not in config.weak.model and 'pretrained' not in config.strong.model
  workdir = tmp_path / 'run'
  results = train.train_and_evaluate(config, str(workdir))
  saved = json.load(open(workdir / 'results.json'))
  assert results['per_seed'] == json.loads(json.dumps(saved['per_seed']))
  record = saved['per_seed'][0]
  assert (record['n_weak_train'], record['n_strong_train'], record['n_test']) == (64, 64, 64)
  for loss in saved['summary']:
    assert 0.0 <= record[loss]['acc_student'] <= 1.0
    assert 0.0 <= record[loss]['agreement'] <= 1.0
  return workdir, saved


def test_release_runlocal_linear_probe_end_to_end(tmp_path, sciq_files, capsys,
                                                  own_feature_cache):
  workdir, saved = _run_release(tmp_path, sciq_files, 'linear_probe,loss=xent+logconf')
  assert set(saved['summary']) == {'xent', 'logconf'}
  assert os.path.getsize(workdir / 'accuracy.png') > 0 and os.path.getsize(workdir / 'pgr.png') > 0
  stages = sorted(s.split('-')[0] for s in os.listdir(workdir / 'stages'))
  assert stages == ['ceiling', 'student_logconf', 'student_xent', 'weak']
  # frozen backbone features were cached: weak's and strong's, in the user cache (the test's own)
  assert len([d for d in os.listdir(own_feature_cache) if d.startswith('sciq-')]) == 2
  out = capsys.readouterr().out
  assert 'SMOKE TEST (runlocal' in out and 'weak-to-strong results, test set, n=1 seed: no' in out


def _hf_gpt2(root, tokenizer_dir, layers, seed):
  """A tiny random Hugging Face GPT-2 checkpoint directory with the tokenizer beside it."""
  import shutil
  transformers = pytest.importorskip('transformers')
  torch = pytest.importorskip('torch')
  vocab = json.load(open(os.path.join(tokenizer_dir, 'tokenizer.json')))['model']['vocab']
  torch.manual_seed(seed)
  cfg = transformers.GPT2Config(vocab_size=len(vocab), n_positions=128, n_embd=32, n_layer=layers,
                                n_head=2)
  model = transformers.GPT2LMHeadModel(cfg).eval()
  model.save_pretrained(root, safe_serialization=True)
  shutil.copy(os.path.join(tokenizer_dir, 'tokenizer.json'), root)
  return root, model.transformer.wte.weight.detach().numpy()


def test_release_pretrained_finetune_end_to_end(tmp_path, sciq_files):
  """The real (non-runlocal) branch: Hugging Face checkpoints, tokenizer from strong_ckpt, full
  fine-tuning; ckpt_arch because the tiny checkpoints match no preset (~20 s)."""
  from w2s.protocols import learners
  data, tok = sciq_files
  weak, _ = _hf_gpt2(str(tmp_path / 'gpt2'), tok, layers=1, seed=0)
  strong, strong_wte = _hf_gpt2(str(tmp_path / 'gpt2-large'), tok, layers=2, seed=1)
  config = _release(f'task=sciq,weak=gpt2,strong=gpt2-large,data={data},weak_ckpt={weak},'
                    f'strong_ckpt={strong},ckpt_arch,seeds=1,loss=logconf,max_length=128')
  assert config.tokenizer.tokenizer == strong
  dataset = registry.build('datasets', config.dataset)
  opts = learners.RoleOptions.from_section('strong', config.strong, tokenizer=config.tokenizer)
  learner = learners.make(opts, dataset=dataset, eval_batch_size=32, cache_dir=str(tmp_path))
  # `make` only checks the checkpoint's headers; `fit` reads it (into the stage's shards) with
  # this loader: the backbone from the checkpoint, the head from zero (as in the release)
  assert learner.init_params is None
  sample = learner._inputs(learners._first_rows(dataset, 1))
  start = train._checkpoint_loader(learner.module, sample)(None)
  np.testing.assert_array_equal(start['backbone']['wte']['embedding'], strong_wte)
  assert not np.any(start['head']['kernel'])
  workdir = tmp_path / 'run'
  train.train_and_evaluate(config, str(workdir))
  saved = json.load(open(workdir / 'results.json'))
  record = saved['per_seed'][0]
  assert record['n_weak_train'] + record['n_strong_train'] == 160 and record['n_test'] == 64
  assert 0.0 <= record['logconf']['acc_student'] <= 1.0
  metrics = [json.loads(line) for line in open(next(
      (workdir / 'stages').glob('student_logconf-*/metrics.jsonl')))]
  assert metrics and all(np.isfinite(m['loss']) for m in metrics)
  # the release's gpt2-large lr 1e-5, annealed to 0 by a cosine without warmup over 2 epochs; the
  # last logged step reports the lr of its update, step `steps - 1`
  steps = 2 * (record['n_strong_train'] // 32)
  expected = 0.5e-5 * (1 + np.cos(np.pi * (steps - 1) / steps))
  assert metrics[-1]['learning_rate'] == pytest.approx(expected)


def _hf_qwen2(root, tokenizer_dir, seed):
  """A tiny random Hugging Face Qwen2 checkpoint (several safetensors files) + the tokenizer."""
  import shutil
  transformers = pytest.importorskip('transformers')
  torch = pytest.importorskip('torch')
  vocab = json.load(open(os.path.join(tokenizer_dir, 'tokenizer.json')))['model']['vocab']
  torch.manual_seed(seed)
  cfg = transformers.Qwen2Config(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                 max_position_embeddings=128, tie_word_embeddings=True)
  transformers.Qwen2ForCausalLM(cfg).eval().save_pretrained(root, max_shard_size='50KB')
  shutil.copy(os.path.join(tokenizer_dir, 'tokenizer.json'), root)
  return root


def test_release_qwen2_student_with_fsdp_and_lora(tmp_path, sciq_files):
  """`fsdp,lora=8`: a Qwen2 checkpoint read into FSDP shards over the 8 devices, rank-8 adapters
  on attention and MLP; only adapters and head change, and every stage runs to results."""
  data, tok = sciq_files
  weak, _ = _hf_gpt2(str(tmp_path / 'gpt2'), tok, layers=1, seed=0)
  strong = _hf_qwen2(str(tmp_path / 'qwen2'), tok, seed=1)
  config = _release(f'task=sciq,weak=gpt2,strong=qwen2-0.5b,data={data},weak_ckpt={weak},'
                    f'strong_ckpt={strong},ckpt_arch,seeds=1,loss=xent,max_length=64,fsdp,lora=8,'
                    'n_docs=96,n_test_docs=32,epochs=3')
  assert config.strong.train.partition == 'fsdp' and config.strong.model.lora.rank == 8
  assert config.mesh.shape.to_dict() == dict(data=1, fsdp=-1, tensor=1)
  assert config.strong.train.optimizer.learning_rate == 5e-4
  workdir = tmp_path / 'run'
  train.train_and_evaluate(config, str(workdir))
  record = json.load(open(workdir / 'results.json'))['per_seed'][0]
  assert 0.0 <= record['xent']['acc_student'] <= 1.0
  # the student's checkpoint: the frozen Qwen2 kernels equal the Hugging Face file, adapters moved
  from safetensors import safe_open
  stage = next((workdir / 'stages').glob('student_xent-*'))
  params = _restored_params(stage / 'checkpoints')
  q = params['backbone']['layers_0']['self_attn']['q']
  name = 'model.layers.0.self_attn.q_proj.weight'
  index = json.load(open(os.path.join(strong, 'model.safetensors.index.json')))
  with safe_open(os.path.join(strong, index['weight_map'][name]), framework='numpy') as f:
    want = f.get_tensor(name).T
  np.testing.assert_array_equal(q['kernel'], want)
  assert np.any(q['lora_b'] != 0)  # B starts at zero; it moves once the zero head has (step 2)


def _restored_params(ckpt_dir):
  import jax
  import orbax.checkpoint as ocp
  step = max(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
  path = os.path.join(ckpt_dir, str(step), 'state')
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  checkpointer = ocp.StandardCheckpointer()
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
                        checkpointer.metadata(path).item_metadata.tree)
  return jax.tree.map(np.asarray, checkpointer.restore(path, target)['params'])


# Catalog SSL tasks, dry-run on mock data (mock_data serves 200 rows a split, so STL-10 gets 20
# labels instead of its 1,000)
_CATALOG_TASKS = [('ssl.py', 'task=cifar10,runlocal'), ('ssl.py', 'task=svhn,runlocal'),
                  ('ssl.py', 'task=svhn,extra,runlocal'),
                  ('ssl.py', 'task=stl10,labels=20,runlocal'),
                  ('ssl.py', 'task=imdb,runlocal'), ('ssl.py', 'task=imdb,algo=fixmatch,runlocal'),
                  ('self_training.py', 'task=svhn,runlocal'),
                  ('self_training.py', 'task=stl10,labels=20,noisy,runlocal'),
                  ('self_training.py', 'task=imdb,runlocal')]


@pytest.mark.parametrize('file, arg', _CATALOG_TASKS)
def test_catalog_ssl_tasks_pass_their_protocols_dry_run(file, arg, tmp_path, monkeypatch):
  import tensorflow_datasets as tfds
  from w2s.main import _dry_run
  monkeypatch.setenv('W2S_DATA_DIR', str(tmp_path))
  c = _module(file).get_config(arg)
  with tfds.testing.mock_data(num_examples=200):
    assert 'nothing was trained' in _dry_run(c)
  task = arg.split(',')[0].split('=')[1]
  own_unlabelled = task in ('stl10', 'imdb')
  assert c.dataset.get('unlabelled', False) == own_unlabelled  # their U gets the unlabelled split
  assert c.dataset.get('extra', False) == ('extra' in arg.split(','))


def test_ssl_catalog_recipes():
  ssl = _module('ssl.py')
  for task, labels in (('cifar10', 40), ('svhn', 40), ('stl10', 1000), ('imdb', 20)):
    c = ssl.get_config(f'task={task}')
    assert c.labels.per_class * (2 if task == 'imdb' else 10) == labels  # the paper's default
  svhn, stl = ssl.get_config('task=svhn,labels=250'), ssl.get_config('task=stl10')
  for c in (svhn, stl):  # FixMatch: tau 0.95, mu 7, B 64, SGD-Nesterov 0.03, EMA 0.999, 2^20
    t = c.model.train
    assert (t.ssl.name, t.unlabelled_ratio, t.batch_size, t.num_steps, t.ema_decay) == (
        'fixmatch', 7, 64, 1 << 20, 0.999)
    assert t.optimizer.to_dict() == dict(name='sgd', learning_rate=0.03, momentum=0.9,
                                         nesterov=True)
  assert svhn.model.train.weak_augment.name == 'translate'  # no flips on digits
  assert [op['name'] for op in stl.model.train.weak_augment.ops] == ['flip', 'translate']
  assert stl.model.train.weak_augment.ops[1]['pad'] == 0.125  # 12 px of 96
  assert ssl.get_config('task=cifar10,labels=40').model.train.batch_size == 40  # L holds a batch
  imdb = ssl.get_config('task=imdb').model
  assert imdb.train.ssl.to_dict() == dict(name='uda', T=0.85, beta=0.0, tsa='linear')
  assert (imdb.train.num_steps, imdb.train.unlabelled_ratio, imdb.train.batch_size) == (
      10_000, 7, 16)
  assert imdb.train.optimizer.learning_rate == 2e-5 and imdb.train.weak_augment is None
  assert imdb.model.to_dict() == dict(name='bert', pretrained='minilm')
  assert ssl.get_config('task=imdb,algo=fixmatch').model.train.ssl.to_dict() == dict(
      name='fixmatch')


def test_ssl_sweep_of_every_algorithm():
  """algos=all: labels (slowest) x every algorithm of w2s.ssl; a bad value is one line."""
  from w2s.ssl import ALGORITHMS
  ssl = _module('ssl.py')
  points = ssl.get_sweep('algos=all,steps=400,seeds=3')
  assert [(p['labels.per_class'], p['model.train.ssl']['name']) for p in points] == [
      (k, a) for k in (4, 25) for a in ALGORITHMS]
  assert len(ssl.get_sweep()) == 6
  with pytest.raises(UserError, match=r"algos='some'; use algos=all") as e:
    ssl.get_sweep('algos=some')
  assert '\n' not in str(e.value)


@pytest.mark.parametrize('file, arg, message', [
    ('ssl.py', 'labels=45', r'labels=45 for task=mnist: use a multiple of its 10 classes'),
    ('ssl.py', 'task=imdb,labels=21', r'a multiple of its 2 classes \(the benchmarks: 20\)'),
    ('ssl.py', 'task=svhn,labels=5', r'\(the benchmarks: 40, 250, 1000\)'),
    ('ssl.py', 'task=cifar10,extra', r'extra adds SVHN.s extra images; task=cifar10 has none'),
    ('ssl.py', 'task=mnist100', r"task='mnist100'; use one of mnist, cifar10, svhn, stl10, imdb"),
    ('ssl.py', 'algo=nope', r"algo='nope'; use one of"),
    ('self_training.py', 'task=imdb,labels=3', r'labels=3 for task=imdb: use a multiple of its 2'),
    ('self_training.py', 'task=svhn2', r"task='svhn2'; use one of"),
])
def test_ssl_catalog_bad_arguments_fail_with_one_line(file, arg, message):
  with pytest.raises(UserError, match=message) as e:
    _module(file).get_config(arg)
  assert '\n' not in str(e.value)


# --- presets never overwrite what the user wrote (issue 19) ------------------------------------
# file -> (arguments every build needs, {argument: (the argument string with a non-default value,
# the config paths it sets)}). `runlocal,<that>` must set those paths as the full config does and
# differently from plain `runlocal`. Every argument of a config's ARGS is listed (a new one fails
# test_runlocal_table_covers_every_argument until it is added here).
_BASE = {'w2s_debate.py': 'data=/d,debater=/q,weak=/g',
         'w2s_release.py': 'data=/d,weak_ckpt=/w,strong_ckpt=/s'}
# runlocal replaces the checkpoints with tiny random models by design (w2s_release's docstring)
_RUNLOCAL_IGNORES = {'w2s_release.py': {'weak_ckpt', 'strong_ckpt', 'ckpt_arch'},
                     'w2s_sft.py': {'weak_ckpt', 'strong_ckpt', 'data', 'lora', 'lr'},
                     'w2s_search.py': {'weak_ckpt', 'strong_ckpt', 'data'},
                     'w2s_preference.py': {'weak_ckpt', 'strong_ckpt', 'data', 'lora', 'lr',
                                           'weak_small_ckpt'},
                     'ssl.py': {'algos'}}  # get_sweep's argument: test_ssl_sweep_of_every_algorithm
_RUNLOCAL_CASES = {
    'w2s_sft.py': {'seeds': ('seeds=3', ['seeds']),
                   'losses': ('losses=sft_sum', ['student_losses']),
                   'filter': ('filter=majority', ['filter.name']),
                   'samples': ('samples=3', ['sampling.num_samples']),
                   'rounds': ('rounds=2', ['rounds']), 'digits': ('digits=3', ['dataset.digits']),
                   'score': ('score=choices', ['answer.score', 'dataset.view'])},
    'w2s_preference.py': {'seeds': ('seeds=3', ['seeds']),
                          'losses': ('losses=dpo', ['student_losses']),
                          'beta': ('beta=0.2', ['ceiling.policy.beta']),
                          'judge': ('judge=delta', ['judge.name']),
                          'digits': ('digits=3', ['dataset.digits'])},
    'w2s_search.py': {'beam': ('beam=2', ['search.beam_width']),
                      'samples': ('samples=2', ['search.samples_per_beam']),
                      'chunk': ('chunk=3', ['search.chunk_length']), 'seeds': ('seeds=3', ['seeds']),
                      'new_tokens': ('new_tokens=6', ['search.max_new_tokens']),
                      'temperature': ('temperature=1.0', ['search.temperature']),
                      'digits': ('digits=3', ['dataset.digits'])},
    'llp.py': {'bag': ('bag=32', ['bags.size']), 'loss': ('loss=proportion', ['model.loss']),
               'steps': ('steps=50', ['model.train.num_steps']), 'seeds': ('seeds=4', ['seeds'])},
    'pixel_debate.py': {'pixels': ('pixels=5', ['pixels']),
                        'strategy': ('strategy=lookahead', ['debate.strategies']),
                        'liars': ('liars=all', ['debate.liars']), 'seeds': ('seeds=3', ['seeds']),
                        'steps': ('steps=100', ['judge.train.num_steps'])},
    'self_training.py': {
        'task': ('task=rt', ['dataset']), 'labels': ('labels=100', ['labels.per_class']),
        'rounds': ('rounds=4', ['rounds']), 'select': ('select=curriculum', ['pseudo.select']),
        'tau': ('tau=0.9', ['pseudo.select.tau']), 'soft': ('soft', ['pseudo.labels']),
        'noisy': ('noisy', ['student.train.augment', 'student.model.dropout']),
        'seeds': ('seeds=3', ['seeds']),
        'steps': ('steps=100', ['teacher.train.num_steps', 'student.train.num_steps'])},
    'ssl.py': {'algo': ('algo=mean_teacher', ['model.train.ssl']),
               'imbalance': ('imbalance=10', ['labels.imbalance']),
               'labels': ('labels=250', ['labels.per_class']), 'task': ('task=svhn', ['dataset']),
               'extra': ('task=svhn,extra', ['dataset.extra']),
               'steps': ('steps=100', ['model.train.num_steps']), 'seeds': ('seeds=3', ['seeds'])},
    'label_noise.py': {'noise': ('noise=asymmetric', ['label_noise.name', 'label_noise.pairs']),
                       'rate': ('rate=0.2', ['label_noise.rate']), 'loss': ('loss=gce', ['loss']),
                       'seed': ('seed=3', ['seed', 'label_noise.seed']),
                       'epochs': ('epochs=2', ['num_epochs'])},
    'supervised.py': {'dataset': ('dataset=mnist_5k', ['dataset']), 'model': ('model=cnn', ['model']),
                      'loss': ('loss=gce', ['loss']), 'partition': ('partition=fsdp', ['partition']),
                      'fsdp': ('fsdp=-1', ['mesh.shape.fsdp']),
                      'tensor': ('tensor=2', ['mesh.shape.tensor']),
                      'shard_min_bytes': ('shard_min_bytes=1024', ['partition.min_bytes']),
                      'param_dtype': ('param_dtype=bfloat16', ['param_dtype']),
                      'pretrained': ('model=gpt2,pretrained=/ckpt/g',
                                     ['model.pretrained', 'tokenizer.tokenizer']),
                      'noise': ('noise=symmetric', ['label_noise.name']),
                      'noise_rate': ('noise=asymmetric,noise_rate=0.2', ['label_noise.rate'])},
    'w2s_debate.py': {'task': ('task=boolq', ['dataset']), 'data': ('data=/e', ['dataset.path']),
                      'debater': ('debater=/q2', ['debate.model.pretrained']),
                      'weak': ('weak=/g2', ['weak.model.pretrained']),
                      'strong': ('strong=/s', ['strong.model.pretrained']),
                      'seeds': ('seeds=2', ['seeds']), 'k': ('k=2', ['debate.seeds']),
                      'turns': ('turns=2', ['debate.prompts.debate']),
                      'new_tokens': ('new_tokens=32', ['debate.max_new_tokens']),
                      'frozen': ('frozen', ['weak.frozen'])},
    'w2s_lf.py': {'label_model': ('label_model=majority', ['weak.label_model.name']),
                  'rules': ('rules=mypkg.rules', ['weak.labelling_functions']),
                  'seeds': ('seeds=3', ['seeds']), 'losses': ('losses=xent', ['student_losses']),
                  'abstain': ('abstain=model', ['weak.label_model.abstain'])},
    'w2s_offline.py': {'seeds': ('seeds=3', ['seeds']),
                       'losses': ('losses=xent', ['student_losses', 'student_order']),
                       'finetune': ('finetune', ['strong.frozen', 'strong.model']),
                       'ensemble': ('ensemble=3', ['weak.ensemble.size']),
                       'lora': ('lora=4', ['strong.model.lora']),
                       'lora_lr': ('lora=4,lora_lr=0.002', ['strong.train.optimizer']),
                       'clean': ('clean=knn', ['clean']),
                       'overlap': ('overlap', ['overlap']),
                       'queries': ('queries=0+16', ['student.queries.budget']),
                       'query_by': ('queries=16,query_by=random', ['student.queries.by'])},
    'w2s_methods.py': {'task': ('task=mnist', ['dataset', 'weak.input']),
                       'seeds': ('seeds=3', ['seeds']),
                       'losses': ('losses=xent', ['student_losses', 'student_order']),
                       'clean': ('clean=knn', ['clean']),
                       'specialists': ('task=mnist,specialists', ['weak.ensemble']),
                       'student_lr': ('student_lr=0.01', ['student.train.optimizer'])},
    'w2s_scaling.py': {'seeds': ('seeds=3', ['seeds']),
                       'losses': ('losses=xent', ['student_losses', 'student_order'])},
    'w2s_release.py': {
        'task': ('task=amazon_polarity', ['dataset']), 'data': ('data=/e', ['dataset.path']),
        'weak': ('weak=qwen2-0.5b', ['weak.model.name']),
        'strong': ('strong=qwen2-0.5b', ['strong.model.name']),
        'tokenizer': ('tokenizer=/t', ['tokenizer.tokenizer']),
        'loss': ('loss=xent', ['student_losses', 'student_order']),
        'seeds': ('seeds=2', ['seeds']),
        'n_docs': ('n_docs=200', ['splits.max_weak', 'splits.max_strong']),
        'n_test_docs': ('n_test_docs=100', ['splits.max_test']),
        'max_length': ('max_length=128', ['tokenizer.max_length']),
        'epochs': ('epochs=3', ['weak.train.num_epochs', 'strong.train.num_epochs']),
        'accum': ('accum=2', ['weak.train.accum_steps', 'strong.train.accum_steps']),
        'dtype': ('dtype=bfloat16', ['weak.model.dtype']), 'mode': ('mode=all', ['dataset.mode']),
        'linear_probe': ('linear_probe', ['strong.frozen', 'strong.head']),
        'fsdp': ('fsdp', ['strong.train.partition', 'mesh']),
        'tensor': ('fsdp,tensor=2', ['strong.train.partition', 'mesh.shape.tensor']),
        'lora': ('lora=8', ['strong.model.lora']),
        'lora_lr': ('lora=8,lora_lr=0.002', ['strong.train.optimizer'])},
}
_MISSING = object()


def _at(c, path):
  """The plain value at a dotted path of a config (_MISSING where it has no such key)."""
  from w2s import options
  value = options.plain(c)
  for key in path.split('.'):
    if not isinstance(value, dict) or key not in value:
      return _MISSING
    value = value[key]
  return value


def _build(file, *args):
  return _module(file).get_config(','.join(a for a in (_BASE.get(file, ''),) + args if a))


@pytest.mark.parametrize('file', CONFIG_FILES)
def test_runlocal_table_covers_every_argument(file):
  args = set(_module(file).ARGS) - {'runlocal'} - _RUNLOCAL_IGNORES.get(file, set())
  assert args == set(_RUNLOCAL_CASES[file]), f'{file}: list its arguments in _RUNLOCAL_CASES'


@pytest.mark.parametrize('file, key', [(f, k) for f in CONFIG_FILES for k in _RUNLOCAL_CASES[f]])
def test_runlocal_keeps_every_argument_the_user_wrote(file, key):
  """`runlocal,tau=0.9` runs with tau 0.9: runlocal's presets fill in only what the arguments
  leave open."""
  arg, paths = _RUNLOCAL_CASES[file][key]
  full, local, preset = _build(file, arg), _build(file, 'runlocal', arg), _build(file, 'runlocal')
  for path in paths:
    assert _at(full, path) is not _MISSING, (file, arg, path)
    assert _at(local, path) == _at(full, path), (file, arg, path, _at(local, path))
    assert _at(local, path) != _at(preset, path), (file, arg, path, 'the argument changed nothing')


def test_configs_built_on_w2s_offline_pass_on_only_what_the_user_wrote():
  lf = _module('w2s_lf.py')
  assert len(lf.get_config('runlocal').seeds) == 2  # w2s_offline's runlocal preset
  assert len(lf.get_config('runlocal,seeds=5').seeds) == 5  # 5 is the default, but written
  assert len(lf.get_config('runlocal=false').seeds) == 5
  scaling = _module('w2s_scaling.py')
  assert len(scaling.get_config('runlocal,seeds=4').seeds) == 4


@pytest.mark.parametrize('file', CONFIG_FILES)
def test_every_config_keeps_a_fallback_checkpoint(file):
  """keep_checkpoints >= 2: a damaged newest checkpoint leaves an older one to resume from
  (with 1, the run stops until the user deletes the directory)."""
  mod, args = _documented_args(file)
  for arg in args:
    c = mod.get_config(arg or None)
    assert c.keep_checkpoints >= 2, (file, arg, c.keep_checkpoints)
