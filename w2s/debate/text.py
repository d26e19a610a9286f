"""Text debate transcripts (Lang et al. 2025, "Debate Helps Weak-to-Strong Generalization").

For a binary (question, candidate answer) example, two instances of a strong decoder argue over
whether the answer is correct; a consultancy is one argument for a side. Each turn's prompt is a
config string with the fields {question} (the example as the weak model reads it: 'text', and
'text_pair' after a newline when present), {side} ('correct' or 'incorrect', this speaker's),
{opponent_side} and {transcript} (the turns so far, one paragraph each). The defaults follow the
paper's three turns: A constructs its argument, B argues the other side and lists the flaws in
A's argument, A constructs the counterargument; A's side is a seeded coin per example, so neither
side always speaks first.

Generation (`Debater`): the decoder of `w2s.models.gpt2` / `llama` (Qwen2 included) with its KV
cache (`w2s.models.decoding`), nucleus sampling with one key per example and turn (fold_in of
the debate seed, the example id and the turn), so a transcript does not depend on which other
examples share its batch (up to float rounding of the batched matmuls). Prompts longer than
`max_prompt_tokens` keep their first and last halves (the question and the instruction). Batches
are length-sorted, padded to a multiple of `length_multiple` tokens (few compilations) and split
over the data axis of the mesh; a progress line gives prompts/s, tokens/s and the ETA. The
debater's params are replicated, or split over the mesh's 'fsdp' / 'tensor' axes by
`partition` (the `w2s.partition` rules of a stage's `train.partition`: a Qwen2-7B debater on
several accelerators), each tensor read from the checkpoint straight into its shards.

`TranscriptStore` keeps transcripts by example id under `<root>/transcripts/<mode>-seed<s>-<key>/`
in parts written atomically (`part-00000.npz`, ...), keyed by the debater (model spec and
checkpoint fingerprint), tokenizer, prompts, sampling settings, mode, debate seed and dataset. A
rerun reads them and generates nothing; a run that needs more examples generates only those; an
interrupted run keeps its finished parts.

`with_transcript(raw, table)` appends each example's transcript to what the weak model reads, as
the last segment of a tokenizer pair ('text_pair'), so the tokenizer's longest-first truncation
cuts the transcript before the question and answer.
"""
import dataclasses
import os
import string
import time
from typing import Any, Mapping

import jax
import numpy as np

from w2s import metrics, options, sharding
from w2s.errors import UserError
from w2s.generative import sampling
from w2s.protocols import by_id_store, stages

MODES = ('debate', 'consultancy')
SIDES = ('incorrect', 'correct')   # label 0, label 1
_INTRO = ('{question}\n\nTwo debaters argue over whether the proposed answer above is correct. ')
DEFAULT_PROMPTS = {
    'debate': (
        _INTRO + 'You are Debater A and you argue that the answer is {side}. Construct your '
        'argument for why the answer is {side}.\n\n{transcript}Debater A:',
        _INTRO + 'You are Debater B and you argue that the answer is {side}. Construct your '
        "argument for why the answer is {side}, and list out flaws in your opponent's "
        'argument.\n\n{transcript}Debater B:',
        _INTRO + 'You are Debater A and you argue that the answer is {side}. Construct the '
        "counterargument to your opponent's argument.\n\n{transcript}Debater A:"),
    'consultancy': (
        '{question}\n\nYou are a consultant and you argue that the proposed answer above is '
        '{side}. Construct your argument for why the answer is {side}.\n\nConsultant:',),
}
FIELDS = ('question', 'side', 'opponent_side', 'transcript')
EOS_CANDIDATES = ('<|endoftext|>', '<|im_end|>', '<|end_of_text|>', '<|eot_id|>', '</s>', '[SEP]')
KEYS = ('model', 'tokenizer', 'prompts', 'seeds', 'max_prompt_tokens', 'max_new_tokens',
        'temperature', 'top_p', 'batch_size', 'length_multiple', 'chunk', 'eos', 'partition')


def _fields(template: str, where: str) -> set[str]:
  """The {field} names of a prompt template, or a UserError naming it and what is wrong (an
  unbalanced brace, a field a string cannot fill)."""
  try:
    names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    if names <= set(FIELDS):  # a conversion or format spec the fields' strings cannot take
      template.format(**{f: '' for f in FIELDS})
  except (ValueError, IndexError, KeyError, AttributeError) as e:
    raise UserError(f'{where} is not a valid template ({e}); its fields are '
                    f'{{{"}, {".join(FIELDS)}}} and a literal brace is written {{{{ or }}}}') from e
  return names


def speaker(mode: str, turn: int) -> str:
  return 'Consultant' if mode == 'consultancy' else ('Debater A', 'Debater B')[turn % 2]


@dataclasses.dataclass(frozen=True)
class DebaterOptions:
  """The `debate` section of a text-debate config, checked."""
  model: options.Plugin
  tokenizer: str
  prompts: Mapping[str, tuple[str, ...]]
  seeds: tuple[int, ...]
  max_prompt_tokens: int = 512
  max_new_tokens: int = 64
  temperature: float = 0.7
  top_p: float = 0.9
  batch_size: int = 8
  length_multiple: int = 16
  chunk: int = 256
  eos: str | None = None
  partition: Any = 'replicate'   # the debater's params over the mesh (`w2s.partition` rules)

  @classmethod
  def from_section(cls, section, where: str = 'debate') -> 'DebaterOptions':
    s = options.plain(section)
    if not isinstance(s, Mapping) or 'model' not in s:
      raise UserError(f"{where} needs model=dict(name='llama' | 'gpt2', pretrained=DIR): the "
                      'strong decoder that debates')
    options.check_keys(s, KEYS, where)
    model = options.plugin('models', s['model'], f'{where}.model')
    if model.name not in ('gpt2', 'llama'):
      raise UserError(f'{where}.model {model.name!r} is not a decoder; debaters are gpt2 or llama '
                      '(Llama and Qwen2 checkpoints)')
    tok = s.get('tokenizer') or model.hparams.get('pretrained')
    if not tok:
      raise UserError(f'{where}.tokenizer is required when {where}.model has no pretrained '
                      'directory (the tokenizer.json the debater reads and writes)')
    from w2s.models import hf_import
    tok = hf_import.resolve(tok) if tok in hf_import.EMBEDDED else os.path.expanduser(tok)
    prompts = {m: tuple(v) for m, v in {**DEFAULT_PROMPTS, **(s.get('prompts') or {})}.items()}
    for mode, templates in prompts.items():
      if mode not in MODES:
        raise UserError(f'{where}.prompts.{mode}: unknown mode; use {list(MODES)}')
      if not templates or not all(isinstance(t, str) for t in templates):
        raise UserError(f'{where}.prompts.{mode} must be a non-empty tuple of strings, one per turn')
      for i, t in enumerate(templates):
        names = _fields(t, f'{where}.prompts.{mode}[{i}]')
        bad = sorted(names - set(FIELDS))
        if bad:
          raise UserError(f'{where}.prompts.{mode}[{i}] has the field {{{bad[0]}}}; the fields '
                          f'are {{{"}, {".join(FIELDS)}}} (write {{{{ and }}}} for braces)')
        if 'question' not in names:
          raise UserError(f'{where}.prompts.{mode}[{i}] lacks {{question}}: the debater would not '
                          'see the example')
    seeds = options.seeds_of(s.get('seeds', (0, 1, 2, 3)))
    from w2s import partition as partition_lib
    part = s.get('partition', 'replicate')
    partition_lib.check(part, f'{where}.partition')
    opts = cls(model=model, tokenizer=tok, prompts=prompts, seeds=seeds, partition=part,
               **{k: s[k] for k in ('eos',) if k in s})
    ints = {k: options.positive(s.get(k, getattr(opts, k)), f'{where}.{k}')
            for k in ('max_prompt_tokens', 'max_new_tokens', 'batch_size', 'length_multiple',
                      'chunk')}
    temperature = options.positive(s.get('temperature', opts.temperature), f'{where}.temperature',
                                   kind=float, allow_zero=True)
    top_p = options.positive(s.get('top_p', opts.top_p), f'{where}.top_p', kind=float)
    if top_p > 1:
      raise UserError(f'{where}.top_p={top_p} must be in (0, 1]')
    return dataclasses.replace(opts, temperature=temperature, top_p=top_p, **ints)

  def spec(self, mode: str) -> dict:
    """What a transcript depends on (hashed into its store's key); batch and chunk sizes do not
    enter: a transcript does not depend on its batch."""
    from w2s.models import hf_import
    pretrained = self.model.hparams.get('pretrained')
    return {'model': self.model.spec(),
            'weights': hf_import.fingerprint(hf_import.resolve(pretrained)) if pretrained else None,
            'tokenizer': hf_import.fingerprint(self.tokenizer), 'prompts': list(self.prompts[mode]),
            'max_prompt_tokens': self.max_prompt_tokens, 'max_new_tokens': self.max_new_tokens,
            'temperature': self.temperature, 'top_p': self.top_p, 'eos': self.eos}


def question_of(raw: Mapping, i: int) -> str:
  pair = raw.get('text_pair')
  return str(raw['text'][i]) + ('' if pair is None else '\n' + str(pair[i]))


def first_side(ids: np.ndarray, seed: int) -> np.ndarray:
  """int [N] in {0, 1}: the side of the first speaker (Debater A, the consultant), a coin per
  (example id, debate seed), independent of which other examples are asked for."""
  x = (np.asarray(ids, np.uint64) * np.uint64(0x9E3779B97F4A7C15)
       ^ np.uint64((seed * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) % 2**64))
  x ^= x >> np.uint64(31)
  x *= np.uint64(0xD6E8FEB86659FD93)
  x ^= x >> np.uint64(32)
  return (x & np.uint64(1)).astype(np.int64)


class Debater:
  """The decoder, its params on the mesh and its tokenizer: prompts in, continuations out."""

  def __init__(self, opts: DebaterOptions, mesh):
    from w2s.data import text as text_lib
    from w2s.models import hf_import
    self.opts, self.mesh = opts, mesh
    hp = {k: v for k, v in opts.model.hparams.items() if k != 'lm_head'}
    self.model = opts.model.entry()(num_classes=2, lm_head=True, **hp)
    sample = {'input_ids': np.zeros((1, 8), np.int32), 'attention_mask': np.ones((1, 8), np.int32)}
    from w2s import partition as partition_lib
    rngs = {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(0)}
    abstract = jax.eval_shape(lambda: self.model.init(rngs, sample, train=False))['params']
    # replicated, or split over 'fsdp' / 'tensor' (a debater too large for one device): each
    # tensor read from the checkpoint straight into its shards
    shards = partition_lib.shardings(abstract, mesh, opts.partition,
                                     getattr(self.model, 'partition_rules', None))
    self.params = hf_import.init_params(self.model, jax.random.PRNGKey(0), sample,
                                        targets=partition_lib.with_shardings(abstract, shards))
    self.tok = text_lib.load_tokenizer(opts.tokenizer)
    self.pad_id = text_lib.pad_token(self.tok)[0]
    self.eos_id = self._eos_id()
    limit = getattr(self.model.backbone.config, 'position_limit', None)
    if limit is not None and opts.max_prompt_tokens + opts.max_new_tokens > limit:
      raise UserError(f'debate.max_prompt_tokens {opts.max_prompt_tokens} + max_new_tokens '
                      f'{opts.max_new_tokens} exceeds the debater\'s {limit} positions')
    sharding.check_batch_size(opts.batch_size, mesh, 'debate.batch_size')

  def _eos_id(self) -> int | None:
    """The end-of-turn token: `eos` (a token string; 'none': every turn runs to max_new_tokens),
    else the first of EOS_CANDIDATES the tokenizer has."""
    if self.opts.eos == 'none':
      return None
    names = (self.opts.eos,) if self.opts.eos else EOS_CANDIDATES
    for name in names:
      i = self.tok.token_to_id(name)
      if i is not None:
        return i
    if self.opts.eos:
      raise UserError(f'debate.eos={self.opts.eos!r} is not a token of {self.opts.tokenizer}')
    return None   # no end-of-text token: every turn runs to max_new_tokens

  def _encode(self, prompts: list[str]) -> list[list[int]]:
    self.tok.no_truncation()
    self.tok.no_padding()
    out = []
    cap = self.opts.max_prompt_tokens
    for e in self.tok.encode_batch(prompts):
      ids = list(e.ids)
      if len(ids) > cap:  # keep the question (head) and the instruction (tail)
        ids = ids[:cap // 2] + ids[len(ids) - (cap - cap // 2):]
      out.append(ids or [self.pad_id])
    return out

  def generate(self, prompts: list[str], keys: np.ndarray,
               meter: 'Meter | None' = None) -> tuple[list[str], int]:
    """Continuations of `prompts` (one key per prompt, [N] typed keys) and the new-token count;
    `meter` hears of every batch."""
    o = self.opts
    encoded = self._encode(prompts)
    counted = [0]

    def on_batch(rows, tokens):
      counted[0] += tokens
      if meter is not None:
        meter.add(rows, tokens)
    seqs = sampling.generate_rows(
        self.model, self.params, encoded, keys, mesh=self.mesh, batch_size=o.batch_size,
        max_new_tokens=o.max_new_tokens, temperature=o.temperature, top_p=o.top_p,
        eos_id=self.eos_id, pad_id=self.pad_id, length_multiple=o.length_multiple,
        on_batch=on_batch)
    texts = [' '.join(t.split())  # one paragraph per turn
             for t in self.tok.decode_batch(seqs, skip_special_tokens=True)]
    return texts, counted[0]


class Meter:
  """The progress line of a generation: prompts done of `total`, and new tokens/s since it began."""

  def __init__(self, name: str, total: int):
    self.progress = metrics.Progress(name, total, unit='prompt')
    self.t0, self.prompts, self.tokens = time.perf_counter(), 0, 0

  def add(self, prompts: int, tokens: int) -> None:
    self.prompts += prompts
    self.tokens += tokens
    rate = self.tokens / max(time.perf_counter() - self.t0, 1e-9)
    self.progress.update(self.prompts, extra=f'{rate:.1f} tok/s')


def transcripts(debater: Debater, raw: Mapping, mode: str, seed: int,
                meter: Meter | None = None) -> dict[str, np.ndarray]:
  """Runs every turn of `mode` for the examples of `raw`: {'id', 'transcript' str, 'side' (the
  first speaker's), 'turns' str [N, turns], 'new_tokens' (the count generated)}."""
  ids = np.asarray(raw['id'], np.int64)
  n = len(ids)
  side = first_side(ids, seed)
  templates = debater.opts.prompts[mode]
  questions = [question_of(raw, i) for i in range(n)]
  lines = [''] * n
  turns = np.empty((n, len(templates)), dtype=object)
  base = jax.random.key(seed)
  tokens = 0
  for t, template in enumerate(templates):
    mine = side if t % 2 == 0 else 1 - side
    prompts = [template.format(question=questions[i], side=SIDES[mine[i]],
                               opponent_side=SIDES[1 - mine[i]], transcript=lines[i])
               for i in range(n)]
    turn_key = jax.random.fold_in(base, t)
    keys = sampling.row_keys(turn_key, ids)
    texts, k = debater.generate(prompts, keys, meter)
    tokens += k
    for i in range(n):
      turns[i, t] = texts[i]
      lines[i] += f'{speaker(mode, t)} (arguing the answer is {SIDES[mine[i]]}): {texts[i]}\n\n'
  return {'id': ids, 'transcript': np.array([s.rstrip() for s in lines], dtype=str),
          'side': side, 'turns': turns.astype(str), 'new_tokens': np.int64(tokens)}


class TranscriptStore(by_id_store.ByIdStore):
  """Transcripts by example id for one (debater, mode, debate seed, dataset), grown in parts
  (`w2s.protocols.by_id_store`: the store the generative protocols keep weak generations in)."""

  def __init__(self, root: str, opts: DebaterOptions, mode: str, seed: int, dataset_spec):
    super().__init__(root, 'transcripts', f'{mode}-seed{seed}', ('transcript', 'side', 'turns'),
                     (mode, seed, opts.spec(mode), dataset_spec),
                     spec={'mode': mode, 'seed': seed, **opts.spec(mode)})
    self.opts, self.mode, self.seed = opts, mode, seed
    self.new_tokens = 0

  def load(self, empty=None) -> dict[str, np.ndarray]:
    t = len(self.opts.prompts[self.mode])
    return super().load(empty or {'id': np.zeros(0, np.int64), 'transcript': np.zeros(0, str),
                                  'side': np.zeros(0, np.int64), 'turns': np.zeros((0, t), str)})

  def get(self, raw: Mapping, debater_fn) -> dict[str, np.ndarray]:
    """The transcripts of `raw`'s examples (by id), generating (with `debater_fn()`, built only
    when needed) those the store lacks, one part per `chunk` examples."""
    what = f'transcripts {self.mode} seed {self.seed}'
    state = {}

    def produce(sub):
      if 'debater' not in state:
        state['debater'] = debater_fn()
        missing = np.count_nonzero(~np.isin(np.asarray(raw['id'], np.int64), self.load()['id']))
        state['meter'] = Meter(what, missing * len(self.opts.prompts[self.mode]))
      part = transcripts(state['debater'], sub, self.mode, self.seed, state['meter'])
      self.new_tokens += int(part.pop('new_tokens'))
      return part
    return super().get(raw, produce, chunk=self.opts.chunk, what=what)


def with_transcript(raw: Mapping, table: Mapping, header: str = 'Debate transcript:') -> dict:
  """`raw` with each example's transcript as the last segment of what the weak model reads:
  'text_pair' (question and answer) + the transcript when the dataset has pairs (BoolQ, CosmosQA:
  'text' is the passage), else 'text' (question and answer) with the transcript as 'text_pair'.
  The tokenizer truncates the longest segment first, from its end: the transcript goes first."""
  got = stages.join_by_id(np.asarray(raw['id'], np.int64), table['id'], table['transcript'],
                              'transcripts')
  out = dict(raw)
  tail = np.array([f'{header}\n{t}' for t in got], dtype=object)
  if raw.get('text_pair') is not None:
    out['text_pair'] = np.array([f'{p}\n\n{t}' for p, t in zip(raw['text_pair'], tail)],
                                dtype=object)
  else:
    out['text_pair'] = tail
  return out
