"""The embedded all-MiniLM-L6-v2 gives the sentence embeddings of the reference implementation."""
import numpy as np
import pytest

import jax

from w2s import registry
from w2s.models import features, hf_import

SENTENCES = [
    'The movie was wonderful.',
    'A dull, lifeless plot and wooden acting.',
    'Paris is the capital of France.',
    'i like it',
    'Weak-to-strong generalization lets a small supervisor elicit what a much larger student '
    'already knows, at least on some tasks.',
]


@pytest.fixture(scope='module')
def embedded():
  model = registry.build('models', dict(name='bert'), num_classes=2)  # default: pretrained MiniLM
  inputs = features.tokenize(SENTENCES, model.pretrained, max_length=128)
  params = hf_import.init_params(model, jax.random.key(0), inputs)
  return model, inputs, features.extract(model, params, inputs, batch_size=8)


def test_minilm_matches_transformers_mean_pooling(embedded):
  transformers = pytest.importorskip('transformers')
  torch = pytest.importorskip('torch')
  model, inputs, ours = embedded
  reference = transformers.BertModel.from_pretrained(model.pretrained).eval()
  with torch.no_grad():
    hidden = reference(input_ids=torch.tensor(inputs['input_ids'], dtype=torch.long),
                       attention_mask=torch.tensor(inputs['attention_mask'])).last_hidden_state
  mask = inputs['attention_mask'][..., None]
  expected = (hidden.numpy() * mask).sum(1) / mask.sum(1)
  cos = (ours * expected).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(expected, axis=1)
  assert cos.min() > 0.9999, cos


def test_minilm_embeddings_are_semantic(embedded):
  """Without torch: the two film reviews are closer to each other than to the geography fact."""
  _, inputs, emb = embedded
  assert emb.shape == (5, 384)
  assert inputs['input_ids'][0, 0] == 101  # [CLS]
  assert inputs['attention_mask'].sum(1)[3] == 5  # [CLS] i like it [SEP]
  unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
  sim = unit @ unit.T
  assert sim[0, 1] > sim[0, 2] + 0.2 and sim[0, 1] > sim[1, 2] + 0.2, sim
