"""Every model family trains with the real trainer on 8 devices: the loss goes down.

Text models learn which half of the vocabulary a sequence's tokens come from (a rule only the
token ids carry; padding uses id 0 of the lower half, so a model reading padding would fail); the
image models learn sklearn's real 8x8 digits. A zero-initialised head starts every run at exactly
ln(C), so 'down' is measured from a known start.
"""
import json

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from w2s import registry, sharding, train
from w2s.data import pipeline

def _cfg(lr, steps):
  return ConfigDict(dict(
      seed=0, loss=dict(name='xent'), optimizer=dict(name='adam', learning_rate=lr),
      schedule=dict(name='constant'), batch_size=16, num_epochs=0.0, num_steps=steps,
      accum_steps=1, log_every=1, checkpoint_every=1000, keep_checkpoints=1))


def _text_examples(n=256, t=12):
  rs = np.random.RandomState(0)
  label = rs.randint(0, 2, n)
  ids = (rs.randint(1, 256, (n, t)) + 256 * label[:, None]).astype(np.int32)
  lengths = rs.randint(3, t + 1, n)
  mask = (np.arange(t)[None] < lengths[:, None]).astype(np.int32)
  ids[mask == 0] = 0
  return pipeline.one_hot_labels({'id': np.arange(n), 'label': label, 'input_ids': ids,
                                  'attention_mask': mask}, 2)


def _digit_examples():
  ds = registry.build('datasets', dict(name='digits'))
  train_split = ds.split('train')
  return pipeline.one_hot_labels({k: train_split[k][:512] for k in ('id', 'label', 'x')}, 10)


CASES = [  # (model, learning rate, steps)
    (dict(name='bert', size='tiny', vocab_size=512), 3e-3, 16),
    (dict(name='gpt2', size='tiny'), 3e-3, 16),
    (dict(name='llama', size='tiny', dtype='bfloat16', remat=True), 3e-3, 16),
    (dict(name='resnet', size='tiny', image_shape=(8, 8, 1)), 1e-2, 16),  # 0.5 ln(10) at the end
    (dict(name='cnn', size='small', image_shape=(8, 8, 1)), 1e-2, 32),  # 0.2 ln(10)
]


@pytest.mark.parametrize('spec,lr,steps', CASES, ids=lambda c: str(c))
def test_family_trains_on_eight_devices(spec, lr, steps, tmp_path):
  assert jax.device_count() == 8
  examples = _digit_examples() if spec['name'] in ('resnet', 'cnn') else _text_examples()
  num_classes = examples['label'].shape[1]
  module = registry.build('models', spec, num_classes=num_classes)
  train.fit(module, examples, cfg=_cfg(lr, steps), workdir=str(tmp_path), mesh=sharding.make_mesh())
  with open(tmp_path / 'metrics.jsonl') as f:
    losses = [r['loss'] for r in map(json.loads, f) if 'loss' in r]
  assert len(losses) == steps
  np.testing.assert_allclose(losses[0], np.log(num_classes), rtol=1e-3)  # zero head: uniform
  assert np.mean(losses[-4:]) < 0.8 * np.log(num_classes), losses
