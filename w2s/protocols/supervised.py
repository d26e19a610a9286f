"""Plain supervised training on ground truth: train on `train_split`, evaluate on `eval_split`.

The simplest protocol, and the building block the weak-to-strong stages reuse.
"""
import os

import jax
import numpy as np

from w2s import registry, sharding, train
from w2s.data import pipeline


def featurize(dataset, examples, config) -> dict:
  """Raw split -> batch-ready numeric fields with soft labels [N, C]."""
  from w2s.data import featurize as featurize_lib
  from w2s.protocols import learners
  tok = config.get('tokenizer') if dataset.input_kind == 'text' else None
  kwargs = learners.tokenizer_kwargs(tok.to_dict()) if tok else {}
  feats = featurize_lib.featurize(dataset, examples, **kwargs)
  return pipeline.one_hot_labels(feats, dataset.num_classes)


def run(*, config, workdir: str, train_split: str = 'train', eval_split: str = 'test') -> dict:
  mesh = sharding.make_mesh(config.mesh.num_devices)
  dataset = registry.build('datasets', config.dataset)
  module = registry.build('models', config.model, num_classes=dataset.num_classes)
  train_ex = featurize(dataset, dataset.split(train_split), config)
  eval_ex = featurize(dataset, dataset.split(eval_split), config)
  state, last = train.fit(module, train_ex, cfg=config, workdir=workdir, mesh=mesh, name='supervised')
  pred = train.predict(module, state.params, eval_ex, batch_size=config.eval_batch_size, mesh=mesh,
                       name='eval')
  by_id = dict(zip(eval_ex['id'].tolist(), np.argmax(eval_ex['label'], -1).tolist()))
  truth = np.array([by_id[i] for i in pred['id'].tolist()])
  results = {'accuracy': float(np.mean(np.argmax(pred['logits'], -1) == truth)),
             'num_eval': int(len(pred['id'])), 'steps': int(state.step),
             'final_train_loss': last.get('loss')}
  if jax.process_index() == 0:
    train.write_json_atomic(os.path.join(workdir, 'results.json'), results)
  print(f'[supervised] {config.dataset.name}: test accuracy {results["accuracy"]:.4f} on '
        f'{results["num_eval"]} examples', flush=True)
  return results
