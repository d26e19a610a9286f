"""Peak host memory of importing a multi-file Hugging Face checkpoint: sharded vs whole-model.

    python benchmarks/import_memory.py                     # Llama-shaped, ~100 MB, 8 fake devices
    python benchmarks/import_memory.py --hidden 1024 --layers 8 --vocab 32000 --shard_mb 64

Writes a random Llama checkpoint (Hugging Face names, safetensors shards + index, float32) to a
temporary directory, then imports it in a fresh process per method:
  * `sharded`: `hf_import.init_params(..., targets=...)`, each tensor read and put straight into
    its FSDP shards over the devices (what `w2s.train.fit` does);
  * `whole`: the host tree of every tensor first (`targets=None`), then `jax.device_put` with the
    same shardings.
Each child samples its resident set size every 0.5 ms and reports the peak above its RSS before
the import, minus the bytes the device arrays hold at the end (on a CPU backend device buffers
live in host memory too, so they are not "host staging" memory). The goal (issue 9): the sharded
import's extra peak stays below ~2x the largest tensor file.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

MIB = 1 << 20


def write_llama(path: str, *, hidden: int, layers: int, vocab: int, shard_mb: float,
                seed: int = 0) -> list[int]:
  """A random Llama checkpoint in Hugging Face layout; returns the shard file sizes in bytes."""
  from safetensors.numpy import save_file
  rs = np.random.RandomState(seed)
  heads, mlp = max(1, hidden // 64), 4 * hidden
  shapes = {'model.embed_tokens.weight': (vocab, hidden), 'model.norm.weight': (hidden,),
            'lm_head.weight': (vocab, hidden)}
  for i in range(layers):
    p = f'model.layers.{i}.'
    for n in 'qkvo':
      shapes[p + f'self_attn.{n}_proj.weight'] = (hidden, hidden)
    shapes[p + 'mlp.gate_proj.weight'] = shapes[p + 'mlp.up_proj.weight'] = (mlp, hidden)
    shapes[p + 'mlp.down_proj.weight'] = (hidden, mlp)
    shapes[p + 'input_layernorm.weight'] = shapes[p + 'post_attention_layernorm.weight'] = (hidden,)
  os.makedirs(path, exist_ok=True)
  shards, current, size = [], {}, 0
  for name, shape in shapes.items():
    a = (0.02 * rs.standard_normal(shape)).astype(np.float32)
    if current and size + a.nbytes > shard_mb * MIB:
      shards.append(current)
      current, size = {}, 0
    current[name] = a
    size += a.nbytes
  shards.append(current)
  weight_map, sizes = {}, []
  for i, tensors in enumerate(shards):
    file = f'model-{i + 1:05d}-of-{len(shards):05d}.safetensors'
    save_file(tensors, os.path.join(path, file))
    sizes.append(os.path.getsize(os.path.join(path, file)))
    weight_map.update({name: file for name in tensors})
  with open(os.path.join(path, 'model.safetensors.index.json'), 'w') as f:
    json.dump({'metadata': {}, 'weight_map': weight_map}, f)
  config = dict(model_type='llama', hidden_act='silu', vocab_size=vocab, hidden_size=hidden,
                intermediate_size=mlp, num_hidden_layers=layers, num_attention_heads=heads,
                num_key_value_heads=heads, max_position_embeddings=128, rms_norm_eps=1e-6,
                tie_word_embeddings=False)
  with open(os.path.join(path, 'config.json'), 'w') as f:
    json.dump(config, f)
  return sizes


CHILD = r'''
import json, os, sys, threading, time
import jax, numpy as np
from w2s import partition, registry, sharding
from w2s.models import hf_import
path, method = sys.argv[1], sys.argv[2]
mesh = sharding.make_mesh(0, dict(data=1, fsdp=-1))
model = registry.build('models', dict(name='llama', pretrained=path), num_classes=2)
batch = {'input_ids': np.zeros((1, 4), np.int32), 'attention_mask': np.ones((1, 4), np.int32)}
rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(0)}
abstract = jax.eval_shape(lambda: model.init(rngs, batch, train=False))['params']
shards = partition.shardings(abstract, mesh, dict(rules='fsdp', min_bytes=0))
targets = partition.with_shardings(abstract, shards)
page = os.sysconf('SC_PAGE_SIZE')
def rss():
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * page
peak, done = [rss()], []
def poll():
  while not done:
    peak[0] = max(peak[0], rss()); time.sleep(0.0005)
start = rss()
t = threading.Thread(target=poll, daemon=True); t.start()
t0 = time.perf_counter()
if method == 'sharded':
  params = hf_import.init_params(model, jax.random.key(0), batch, targets=targets)
else:
  params = jax.device_put(hf_import.init_params(model, jax.random.key(0), batch), shards)
jax.block_until_ready(params)
seconds = time.perf_counter() - t0
done.append(1); t.join()
peak[0] = max(peak[0], rss())
device = sum(int(np.prod(s.data.shape)) * s.data.dtype.itemsize
             for x in jax.tree.leaves(params) for s in x.addressable_shards)
print(json.dumps(dict(extra=peak[0] - start - device, device=device, seconds=seconds)))
'''


def measure(path: str, method: str, devices: int) -> dict:
  env = dict(os.environ, JAX_PLATFORMS=os.environ.get('JAX_PLATFORMS', 'cpu'))
  if devices:
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                        f' --xla_force_host_platform_device_count={devices}').strip()
  r = subprocess.run([sys.executable, '-c', CHILD, path, method], env=env, capture_output=True,
                     text=True)
  if r.returncode:
    raise RuntimeError(f'{method} import failed:\n{r.stderr[-3000:]}')
  return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--hidden', type=int, default=512)
  ap.add_argument('--layers', type=int, default=4)
  ap.add_argument('--vocab', type=int, default=16384)
  ap.add_argument('--shard_mb', type=float, default=16)
  ap.add_argument('--devices', type=int, default=8, help='fake CPU devices (0: the real ones)')
  a = ap.parse_args(argv)
  with tempfile.TemporaryDirectory() as d:
    sizes = write_llama(d, hidden=a.hidden, layers=a.layers, vocab=a.vocab, shard_mb=a.shard_mb)
    largest, total = max(sizes), sum(sizes)
    print(f'checkpoint: {len(sizes)} files, {total / MIB:.1f} MiB, largest file '
          f'{largest / MIB:.1f} MiB; load average {os.getloadavg()[0]:.2f}')
    out = {'largest_file': largest, 'total': total}
    for method in ('sharded', 'whole'):
      r = measure(d, method, a.devices)
      out[method] = r
      print(f'{method:>8}: extra host peak {r["extra"] / MIB:7.1f} MiB '
            f'({r["extra"] / largest:.2f}x the largest file, {r["extra"] / total:.2f}x the '
            f'checkpoint), device arrays {r["device"] / MIB:.1f} MiB, {r["seconds"]:.2f} s')
  print(f'ratio whole/sharded extra peak: {out["whole"]["extra"] / max(out["sharded"]["extra"], 1):.1f}x')
  return out


if __name__ == '__main__':
  main()
