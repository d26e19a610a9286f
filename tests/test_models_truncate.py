"""`layers=k`: the pretrained MiniLM cut to its first k layers equals transformers' hidden state
after layer k of the full model (the offline family of strong students of increasing size)."""
import jax
import numpy as np
import pytest

from w2s import registry
from w2s.errors import UserError
from w2s.models import features, hf_import

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')


def _batch():
  rs = np.random.RandomState(0)
  ids = rs.randint(1000, 5000, (3, 9)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, 5:] = 0
  return ids * mask, mask


def test_truncated_minilm_equals_the_full_models_hidden_layer():
  ids, mask = _batch()
  ref = transformers.BertModel.from_pretrained(hf_import.resolve('minilm')).eval()
  with torch.no_grad():
    hidden = ref(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                 output_hidden_states=True).hidden_states
  real = mask.astype(bool)
  for k in (1, 3, 6):
    model = registry.build('models', dict(name='bert', pretrained='minilm', layers=k),
                           num_classes=2)
    assert model.backbone.config.num_layers == k and model.truncate_layers
    params = hf_import.init_params(model, jax.random.key(0), {'input_ids': ids,
                                                              'attention_mask': mask})
    assert sorted(n for n in params['backbone'] if n.startswith('layer_')) == [
        f'layer_{i}' for i in range(k)]
    h, _ = model.apply({'params': params}, ids, mask, None,
                       method=lambda m, i, km, tt: m.backbone(i, km, token_type_ids=tt))
    np.testing.assert_allclose(np.asarray(h)[real], hidden[k].numpy()[real], rtol=1e-4,
                               atol=1e-4)
  # different depths are different feature-cache keys
  keys = {str(features.model_key(registry.build('models', dict(name='bert', pretrained='minilm',
                                                                 layers=k), num_classes=2), None))
          for k in (2, 3)}
  assert len(keys) == 2


@pytest.mark.parametrize('spec, message', [
    (dict(layers=7), r'in \[1, 6\]'),
    (dict(layers=0), r'in \[1, 6\]'),
    (dict(layers=2, size='tiny'), 'without size'),
    (dict(layers=2, num_layers=2), 'not both'),
])
def test_bad_truncation_is_one_user_error(spec, message):
  spec = dict(name='bert', **({} if 'size' in spec else {'pretrained': 'minilm'}), **spec)
  with pytest.raises(UserError, match=message):
    registry.build('models', spec, num_classes=2)


def test_untruncated_depth_mismatch_is_still_refused():
  """num_layers=2 without layers= is a config that does not describe the checkpoint: refused."""
  model = registry.build('models', dict(name='bert', pretrained='minilm', num_layers=2),
                         num_classes=2)
  ids, mask = _batch()
  with pytest.raises(UserError, match='not used by the model config'):
    hf_import.init_params(model, jax.random.key(0), {'input_ids': ids, 'attention_mask': mask})
