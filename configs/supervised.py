"""Supervised training on ground truth (the core loop, no weak supervision).

    python -m w2s.main --config configs/supervised.py --workdir /tmp/w2s/supervised
    python -m w2s.main --config configs/supervised.py:dataset=mnist_5k,model=mlp --workdir DIR
    python -m w2s.main --config configs/supervised.py:runlocal --workdir DIR --config.seed=1
    python -m w2s.main --config configs/supervised.py:runlocal,noise=symmetric,noise_rate=0.4 --workdir DIR
    python -m w2s.main --config configs/supervised.py:partition=fsdp,fsdp=-1 --workdir DIR
    python -m w2s.main --config configs/supervised.py:dataset=rotten_tomatoes,model=gpt_neox,pretrained=EleutherAI/pythia-70m --workdir DIR

Arguments: dataset (registry name), model (registry name), loss, runlocal (seconds-long run),
partition (replicate | fsdp | tp | fsdp+tp, see w2s/partition.py), fsdp / tensor (mesh axis
sizes, -1 for the rest of the devices), shard_min_bytes (tensors below it stay replicated under
the automatic FSDP rule; default 1 MiB), param_dtype (float32 | bfloat16: bf16 params with
float32 master weights), pretrained (a Hugging Face checkpoint directory or hub id `org/name`
for a text model; it also becomes the tokenizer, unless --config.tokenizer.tokenizer says
otherwise), noise (a `w2s/label_noise` injector on the training labels: symmetric | asymmetric |
instance; '' for none) and noise_rate (its rate, default 0.4; other options via
--config.label_noise.seed=1, or a whole section: --config.label_noise="{'name': 'asymmetric',
'rate': 0.4, 'pairs': [[3, 5], [5, 3]]}").
"""
from ml_collections import ConfigDict

from w2s import config_args


ARGS = dict(dataset='digits', model='mlp', loss='xent', runlocal=False, partition='replicate',
            fsdp=1, tensor=1, shard_min_bytes=-1, param_dtype='float32',
            pretrained='', noise='', noise_rate=0.4)  # arguments, defaults


def get_config(arg: str | None = None) -> ConfigDict:
  a = config_args.parse(arg, **ARGS)
  c = ConfigDict()
  c.seed = 0
  c.protocol = dict(name='supervised')
  c.dataset = dict(name=a['dataset'])
  c.model = dict(name=a['model'])
  if a['pretrained']:
    c.model.pretrained = a['pretrained']
  c.tokenizer = dict(tokenizer=a['pretrained'] or 'minilm', max_length=128)  # text datasets only
  c.loss = dict(name=a['loss'])
  if a['noise']:  # training labels only; val/test keep the truth
    c.label_noise = dict(name=a['noise'], rate=a['noise_rate'], seed=0)
  c.optimizer = dict(name='adam', learning_rate=1e-3)
  c.schedule = dict(name='cosine', warmup_frac=0.05)
  c.batch_size = 64
  c.eval_batch_size = 256
  c.num_epochs = 10.0
  c.num_steps = 0
  c.accum_steps = 1
  c.log_every = 20
  c.checkpoint_every = 100
  c.keep_checkpoints = 3
  c.mesh = dict(num_devices=0)  # 0: every device
  if a['fsdp'] != 1 or a['tensor'] != 1:
    c.mesh.shape = dict(data=1 if -1 in (a['fsdp'], a['tensor']) else -1, fsdp=a['fsdp'],
                        tensor=a['tensor'])
  c.partition = (a['partition'] if a['shard_min_bytes'] < 0 else
                 dict(rules=a['partition'], min_bytes=a['shard_min_bytes']))
  c.param_dtype = a['param_dtype']
  c.streaming = False  # True: read training rows off the TFDS records (packaged, catalog)
  if a['runlocal']:
    c.smoke = True  # a smoke test, not a result: tables and plots say so
    c.num_epochs = 0.0
    c.num_steps = 40
    c.log_every = 10
    c.checkpoint_every = 20
  return c
