"""Weak-to-strong search (test-time guidance of a frozen large decoder by two small ones), offline.

    python -m w2s.main --config configs/w2s_search.py --workdir runs/w2s_search
    python -m w2s.main --config configs/w2s_search.py:runlocal --workdir /tmp/w2s_search_tiny
    python -m w2s.main --config configs/w2s_search.py:beam=2,samples=8,chunk=4 --workdir runs/w2s_b2

Zhou et al. 2024, "Weak-to-Strong Search: Align Large Language Models via Searching over Small
Language Models" (w2s/protocols/search.py, w2s/generative/search.py): a chunk-level beam search
(beam width W = `beam`, K = `samples` chunks per beam, L = `chunk` tokens per chunk) over the
frozen large model's samples, each partial answer scored by log pi_tuned(y | x) -
log pi_untuned(y | x) of a small model after and before fine-tuning. For orientation, the paper's
AlpacaEval 2.0 length-controlled win rates rise from 34.4 to 37.9 (Llama-3-70B-Instruct) and from
16.0 to 20.1 (gpt-3.5-turbo-instruct) when guided by small tuned/untuned pairs; nothing here
reproduces that setting (no pretrained decoder ships offline).

The world, the decoders and their pretraining are configs/w2s_sft.py's (the arithmetic corpus and
task, a 4 x 128 strong and a 3 x 64 weak GPT-2, each pretrained 1,500 steps, the weak one's SFT
600 steps at lr 1e-3: w2s_sft's docstring says how they were chosen on val), so both configs
share those stages under one shared_dir: `large` is w2s_sft's strong decoder after pretraining
(never fine-tuned) and `small` its weak decoder, untuned = after pretraining, tuned = SFT on A's
gold answers (w2s_sft's weak stage). Test scores: exact match of the last number of the guided
answer, of the large model's own sample (same keys) and greedy answer, and of the tuned small
model's greedy answer; the guided - unguided paired difference over seeds with a t-interval.

Arguments: beam=W (4), samples=K (4), chunk=L (2), seeds=N (5), new_tokens=N (answer tokens,
w2s_sft's 8 by default), temperature (of the large model's samples, 0.7: our choice, not the
paper's), digits=D (w2s_sft's operand digits), runlocal (tiny models and splits, seconds: a smoke
test). For accelerators: weak_ckpt=DIR, strong_ckpt=DIR, data=DIR as in configs/w2s_sft.py
(Hugging Face decoders sharing one tokenizer, e.g. Qwen2.5-0.5B as small and Qwen2.5-7B as large;
a GSM8K-style `files` task); there search.batch_size is 2 prompts (B * W * K rows; each scoring
pass holds [rows, T + N, V] float32 logits, about 8 GB per small model at 32 rows of 400 tokens
over Qwen's 152k tokens).
"""
from ml_collections import ConfigDict

from w2s import config_args
from w2s.configs import w2s_sft

# seeds, digits, runlocal and the checkpoints go on to w2s_sft.get_config (its defaults)
ARGS = dict(beam=4, samples=4, chunk=2, seeds=w2s_sft.ARGS['seeds'], new_tokens=0,
            temperature=0.7, digits=w2s_sft.ARGS['digits'], runlocal=False, weak_ckpt='',
            strong_ckpt='', data='')
SHARED = ('dataset', 'splits', 'tokenizer', 'template', 'answer', 'max_length', 'corpus', 'seeds',
          'eval_batch_size', 'log_every', 'checkpoint_every', 'keep_checkpoints', 'mesh', 'smoke',
          'shared_dir')


def get_config(arg: str | None = None) -> ConfigDict:
  a = config_args.parse(arg, **ARGS)
  # only what the user wrote goes on, so w2s_sft's presets (runlocal's 1 seed) yield to it alone
  base = w2s_sft.get_config(a.forward('seeds', 'digits', 'runlocal', 'weak_ckpt', 'strong_ckpt',
                                      'data')).to_dict()
  c = {k: base[k] for k in SHARED if k in base}
  c['protocol'] = dict(name='search')
  c['small'] = base['weak']  # model, pretrain (untuned), train (tuned: SFT on A's gold)
  large = {k: v for k, v in base['strong']['model'].items() if k != 'lora'}  # frozen: no adapters
  c['large'] = dict(model=large, pretrain=base['strong']['pretrain'])
  c['search'] = dict(beam_width=a['beam'], samples_per_beam=a['samples'], chunk_length=a['chunk'],
                     max_new_tokens=a['new_tokens'] or base['sampling']['max_new_tokens'],
                     temperature=a['temperature'], top_p=1.0,
                     batch_size=2 if a['weak_ckpt'] else base['sampling']['batch_size'])
  return ConfigDict(c, type_safe=True)
