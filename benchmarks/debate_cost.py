"""What a text debate costs: transcript tokens/s of a small decoder, and the pipeline's cost split.

    python benchmarks/debate_cost.py [--debater gpt2-small] [--examples 160] [--new 32] [--k 2]
        [--batch 16] [--smoke]

1. Tokens/s of debate-transcript generation (`w2s.debate.text.Debater`: KV-cache nucleus sampling,
   one key per example and turn) at each --batches size, on prompts of the debate's real shape
   (the question, the instruction and the transcript so far), median of --repeats after a
   compile-and-warm-up pass (compile time printed separately).
2. The whole `text_debate` protocol (w2s/protocols/text_debate.py) on --examples SciQ-format
   examples, all four conditions, K = --k debate seeds, one split seed, in a fresh workdir: the
   wall seconds of each part as the protocol measures them (transcripts, weak models, ceiling,
   students) and their shares, then the same run again (everything reused: what a rerun costs).

The debater has GPT-2 small's shape (12 layers, 768 wide; 'gpt2-small') or a 2-layer toy
('tiny') with random weights and MiniLM's WordPiece vocabulary: the cost does not depend on the
weights (every turn runs to --new tokens: eos='none'). The
examples are generated SciQ-schema questions (the real files are not on this machine): the
accuracies of part 2 are meaningless; only its seconds are read. The weak judges are bags of
n-grams fine-tuned on A (sequential members, like a fine-tuned GPT-2 judge), the ceiling and
students linear probes over frozen all-MiniLM-L6-v2 features. Load average at start and end;
LOADED when another process held a core.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from w2s import compile_cache, sharding  # noqa: E402
from w2s.debate import text as text_lib  # noqa: E402
from w2s.models import hf_import  # noqa: E402

SHAPES = {'gpt2-small': dict(n_embd=768, n_layer=12, n_head=12),
          'tiny': dict(n_embd=64, n_layer=2, n_head=2)}
WORDS = ('water heat cell energy plant light sound rock gas iron root leaf wave atom ice salt '
         'sun moon seed bone').split()


def parse(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument('--debater', default='gpt2-small', choices=sorted(SHAPES))
  ap.add_argument('--examples', type=int, default=160, help='SciQ-format questions x 2 candidates')
  ap.add_argument('--new', type=int, default=32, help='new tokens per turn')
  ap.add_argument('--k', type=int, default=2, help='debate seeds (weak judges)')
  ap.add_argument('--batch', type=int, default=16, help="the protocol's generation batch")
  ap.add_argument('--batches', default='8,32', help='part 1 batch sizes')
  ap.add_argument('--repeats', type=int, default=3)
  ap.add_argument('--smoke', action='store_true', help='tiny sizes, for the test')
  args = ap.parse_args(argv)
  if args.smoke:
    args.debater, args.examples, args.new, args.k, args.batch = 'tiny', 48, 4, 2, 8
    args.batches, args.repeats = '8', 1
  args.batches = [int(b) for b in args.batches.split(',')]
  return args


def make_debater(shape: str, path: str) -> str:
  import torch
  import transformers
  torch.manual_seed(0)
  cfg = transformers.GPT2Config(vocab_size=30522, n_positions=1024, bos_token_id=101,
                                eos_token_id=102, **SHAPES[shape])
  transformers.GPT2LMHeadModel(cfg).save_pretrained(path)
  shutil.copyfile(os.path.join(hf_import.resolve('minilm'), 'tokenizer.json'),
                  os.path.join(path, 'tokenizer.json'))
  return path


def write_sciq(path: str, n: int) -> str:
  rs = np.random.RandomState(0)
  os.makedirs(path, exist_ok=True)
  for split, m in (('train', n - n // 5), ('test', n // 5)):
    with open(os.path.join(path, f'{split}.jsonl'), 'w') as f:
      for _ in range(m):
        w = rs.choice(WORDS, 6)
        f.write(json.dumps(dict(
            question=f'Which property of {w[0]} explains why {w[1]} changes near {w[2]}?',
            correct_answer=str(w[3]), distractor1=str(w[4]), distractor2=str(w[5]),
            distractor3='none of these')) + '\n')
  return path


def debate_section(debater_dir: str, args) -> dict:
  # no end-of-turn token: every turn is --new tokens, so the figures are per generated token at
  # a known length
  return dict(model=dict(name='gpt2', pretrained=debater_dir), seeds=tuple(range(args.k)),
              max_new_tokens=args.new, max_prompt_tokens=256, batch_size=args.batch,
              temperature=1.0, top_p=0.95, eos='none')


def tokens_per_second(debater_dir: str, args) -> list[dict]:
  mesh = sharding.make_mesh()
  out = []
  q = 'Q: Which property of water explains why heat changes near rock? A: iron'
  for b in args.batches:
    opts = text_lib.DebaterOptions.from_section(dict(debate_section(debater_dir, args),
                                                     batch_size=b))
    d = text_lib.Debater(opts, mesh)
    prompt = opts.prompts['debate'][1].format(
        question=q, side='incorrect', opponent_side='correct',
        transcript='Debater A (arguing the answer is correct): ' + 'the answer is right ' * 8)
    prompts = [prompt] * b
    keys = jax.random.split(jax.random.key(0), b)
    t = time.perf_counter()
    d.generate(prompts, keys)
    first = time.perf_counter() - t
    times = []
    for _ in range(args.repeats):
      t = time.perf_counter()
      _, n = d.generate(prompts, keys)
      times.append(time.perf_counter() - t)
    med = statistics.median(times)
    plen = len(d._encode(prompts[:1])[0])
    out.append(dict(batch=b, prompt_tokens=plen, new_tokens=n, tok_s=n / med,
                    compile_and_first_s=first, median_s=med))
    print(f'  batch {b:3d}: prompt {plen} tokens + {args.new} new: {n / med:8.1f} tok/s '
          f'(median of {args.repeats}: {med:.2f} s; first call with compile {first:.1f} s)',
          flush=True)
  return out


def pipeline(debater_dir: str, data: str, work: str, args) -> dict:
  from ml_collections import ConfigDict
  from w2s import train
  c = ConfigDict()
  c.protocol = dict(name='text_debate')
  c.dataset = dict(name='sciq', path=data, data_dir=os.path.join(work, 'tfds'))
  c.splits = dict(weak_fraction=0.5, val_fraction=0.1, balance=False)
  c.tokenizer = dict(tokenizer='minilm', max_length=128)
  c.seeds = (0,)
  tr = lambda lr, epochs: dict(optimizer=dict(name='adam', learning_rate=lr), batch_size=16,
                               num_epochs=epochs, eval_every=10, select='best')
  c.weak = dict(model=dict(name='bow', size='small'), loss=dict(name='xent'), train=tr(3e-3, 4.0))
  c.strong = dict(model=dict(name='bert', pretrained='minilm'), frozen=True,
                  loss=dict(name='xent'), train=tr(3e-3, 4.0))
  c.student_losses = {'xent': dict(name='xent')}
  c.debate = debate_section(debater_dir, args)
  c.conditions = ('no_transcript', 'finetune_ensemble', 'consultancy', 'debate')
  c.eval_batch_size = 32
  c.log_every = 20
  c.checkpoint_every = 1000
  c.keep_checkpoints = 1
  c.mesh = dict(num_devices=0)
  t = time.perf_counter()
  results = train.train_and_evaluate(c, os.path.join(work, 'run'))
  return dict(wall_s=time.perf_counter() - t, timing=results['timing_s'],
              transcripts=results['transcripts'])


def split_line(r: dict) -> str:
  parts = ('transcripts', 'debater load', 'weak models', 'ceiling', 'students')
  total = sum(r['timing'].get(p, 0.0) for p in parts)
  return '; '.join(f'{p} {r["timing"].get(p, 0.0):.1f} s ({100 * r["timing"].get(p, 0.0) / max(total, 1e-9):.0f}%)'
                   for p in parts) + f'; whole run {r["wall_s"]:.1f} s'


def main(argv=None) -> dict:
  args = parse(argv)
  compile_cache.enable()
  load0 = os.getloadavg()
  cores = os.cpu_count() or 1
  dev = jax.devices()[0]
  print(f'{time.strftime("%Y-%m-%dT%H:%M:%S")}  jax {jax.__version__} ({dev.platform}: '
        f'{jax.device_count()} x {dev.device_kind}); load {load0[0]:.2f} on {cores} cores',
        flush=True)
  with tempfile.TemporaryDirectory() as tmp:
    debater_dir = make_debater(args.debater, os.path.join(tmp, 'debater'))
    print(f'1. transcript generation, debater {args.debater} (random weights, MiniLM vocabulary)')
    rates = tokens_per_second(debater_dir, args)
    data = write_sciq(os.path.join(tmp, 'sciq'), args.examples)
    print(f'2. text_debate on {args.examples} generated SciQ questions (x2 candidates), K={args.k}'
          f', {args.new} new tokens per turn, batch {args.batch}')
    cold = pipeline(debater_dir, data, tmp, args)
    tr = cold['transcripts']
    rate = tr['new_tokens'] / max(tr['generate_s'], 1e-9)
    print(f'  transcripts: {tr["generated_examples"]} example-transcripts, {tr["new_tokens"]} new '
          f'tokens in {tr["generate_s"]:.1f} s = {rate:.1f} tok/s (prompts of every length, '
          'compiles included)')
    print(f'  cost split: {split_line(cold)}')
    warm = pipeline(debater_dir, data, tmp, args)
    print(f'  rerun (every transcript and stage reused): {split_line(warm)}; generated '
          f'{warm["transcripts"]["generated_examples"]}')
  load1 = os.getloadavg()
  loaded = load0[0] > cores or load1[0] > cores + 0.5  # the run itself holds up to `cores`
  print(f'load average start {load0[0]:.2f} end {load1[0]:.2f} on {cores} cores'
        + ('  LOADED: figures are unreliable' if loaded else ''))
  return dict(rates=rates, cold=cold, warm=warm, load=(load0, load1), loaded=loaded)


if __name__ == '__main__':
  main()
