"""Sentiment rules for critics' review snippets (Rotten Tomatoes: 0 = rotten, 1 = fresh).

Eighteen keyword, lexicon and pattern rules written from general knowledge of how critics praise
and pan films (negation flips a lexicon word: "not good", "never boring"; a clause after "but"
carries the verdict; "waste of", "masterpiece", "falls flat", rhetorical questions, ...). They were
written before looking at any labels and not tuned on them; their coverage and accuracy were then
measured on the train split only (experiments/w2s_lf/README.md), never on test. One fix followed,
found by reading texts, not labels: typographic apostrophes (isn\u2019t, in 425 train snippets)
are read as straight ones, so the negation and "don't miss" patterns see them.

Each rule abstains (-1) unless its pattern fires, so most snippets get only a few votes and some
none: the label model (`w2s/label_models/`) decides what the votes add up to.
"""
import functools
import re

from w2s.labelling_functions import ABSTAIN, labelling_function

LABEL_NAMES = ('rotten', 'fresh')
ROTTEN, FRESH = 0, 1

# A small hand-written lexicon of critics' words (lower case, whole tokens).
STRONG_PRAISE = frozenset('''
masterpiece masterful masterfully brilliant brilliantly superb superbly extraordinary magnificent
triumph triumphant stunning stunningly breathtaking exhilarating unforgettable sublime dazzling
exquisite glorious spellbinding astonishing transcendent marvelous marvellous flawless
'''.split())
PRAISE = STRONG_PRAISE | frozenset('''
good great excellent wonderful wonderfully terrific fine finest best beautiful beautifully lovely
delightful charming enjoyable entertaining engaging engrossing compelling gripping riveting
powerful powerfully moving touching poignant funny hilarious witty clever smart intelligent
thoughtful insightful fresh original inventive imaginative fascinating absorbing satisfying solid
strong impressive remarkable memorable rewarding thrilling exciting fun heartfelt tender
affecting haunting vivid rich nuanced assured confident deft elegant gorgeous sharp winning
refreshing stylish wise honest genuine sweet warm joyous
'''.split())
CRITICISM = frozenset('''
bad awful terrible horrible dreadful lousy poor poorly weak dull boring bored tedious tiresome
bland flat lifeless lame stupid dumb silly ridiculous pointless mediocre forgettable
disappointing disappointment mess messy clumsy sloppy incoherent muddled confused confusing
predictable formulaic derivative generic stale tired uninspired unfunny annoying irritating
pretentious shallow hollow empty overlong overwrought heavy-handed contrived cheap trite worst
waste wasted misfire failure fails failed lacks lacking thin obvious sluggish plodding
'''.split())
BOREDOM = frozenset('''
boring bored bore bores dull tedious tiresome snooze yawn drags dragged plodding sluggish
lifeless monotonous interminable numbing
'''.split())
CLICHE = frozenset('''
predictable formulaic derivative generic cliche cliches cliched clichéd stale by-the-numbers
paint-by-numbers rehash retread recycled stock hackneyed familiar
'''.split())
NEGATORS = frozenset('not no never hardly barely nothing none nor neither without cannot'.split())
CONTRAST = frozenset('but yet however though although'.split())
NEGATION_WINDOW = 3  # a negator this many tokens before a lexicon word flips it

_TOKEN = re.compile(r"[a-zé]+(?:[-'][a-zé]+)*")
_APOSTROPHES = str.maketrans({'\u2019': "'", '\u2018': "'"})  # isn\u2019t -> isn't


def _norm(text: str) -> str:
  return text.lower().translate(_APOSTROPHES)


@functools.lru_cache(maxsize=4096)
def _tokens(text: str) -> tuple[str, ...]:
  return tuple(_TOKEN.findall(_norm(text)))


def _negated(tokens, i: int) -> bool:
  before = tokens[max(0, i - NEGATION_WINDOW):i]
  return any(t in NEGATORS or t.endswith("n't") for t in before)


def _lexicon_hits(tokens, words) -> tuple[int, int]:
  """(plain, negated) occurrences of `words` in `tokens`."""
  plain = negated = 0
  for i, t in enumerate(tokens):
    if t in words:
      if _negated(tokens, i):
        negated += 1
      else:
        plain += 1
  return plain, negated


def _polarity(tokens) -> int:
  """Praise minus criticism, a negated word counting for the other side."""
  pos, neg_pos = _lexicon_hits(tokens, PRAISE)
  neg, neg_neg = _lexicon_hits(tokens, CRITICISM)
  return (pos + neg_neg) - (neg + neg_pos)


def _search(pattern: str):
  """A pattern's search on the normalised text (lower case, straight apostrophes)."""
  search = re.compile(pattern).search
  return lambda text: search(_norm(text))


@labelling_function
def strong_praise(text):
  """A superlative of praise ("masterpiece", "superb", "breathtaking"), not negated."""
  plain, _ = _lexicon_hits(_tokens(text), STRONG_PRAISE)
  return FRESH if plain else ABSTAIN


@labelling_function
def praise_words(text):
  """Any praise word of the lexicon, not negated."""
  plain, _ = _lexicon_hits(_tokens(text), PRAISE)
  return FRESH if plain else ABSTAIN


@labelling_function
def criticism_words(text):
  """Any criticism word of the lexicon, not negated."""
  plain, _ = _lexicon_hits(_tokens(text), CRITICISM)
  return ROTTEN if plain else ABSTAIN


@labelling_function
def negated_praise(text):
  """"not good", "isn't funny", "never very interesting": praise under a negation."""
  _, negated = _lexicon_hits(_tokens(text), PRAISE)
  return ROTTEN if negated else ABSTAIN


@labelling_function
def negated_criticism(text):
  """"not bad", "never boring", "hardly a failure": criticism under a negation."""
  _, negated = _lexicon_hits(_tokens(text), CRITICISM)
  return FRESH if negated else ABSTAIN


@labelling_function
def lexicon_balance(text):
  """The sign of praise minus criticism over the whole snippet (negation-aware); 0: abstain."""
  s = _polarity(_tokens(text))
  return FRESH if s > 0 else ROTTEN if s < 0 else ABSTAIN


@labelling_function
def contrast_clause(text):
  """After the last "but" / "yet" / "however", the clause's polarity carries the verdict."""
  tokens = _tokens(text)
  last = max((i for i, t in enumerate(tokens) if t in CONTRAST), default=-1)
  if last < 0:
    return ABSTAIN
  s = _polarity(tokens[last + 1:])
  return FRESH if s > 0 else ROTTEN if s < 0 else ABSTAIN


_waste = _search(r"\bwast(?:e|es|ed|ing) (?:of|\w+ talents?|your)")


@labelling_function
def waste_of(text):
  """"a waste of time", "wastes a fine cast", "wasted talents"."""
  return ROTTEN if _waste(text) else ABSTAIN


@labelling_function
def boredom(text):
  """The audience's boredom: "boring", "tedious", "drags", not negated ("never dull" is not)."""
  plain, _ = _lexicon_hits(_tokens(text), BOREDOM)
  return ROTTEN if plain else ABSTAIN


_asleep = _search(r"\b(?:f[ae]ll asleep|nod(?:ded)? off|check(?:ing)? (?:your|my) watch|"
                  r"for the exits?|endurance test)")


@labelling_function
def fell_asleep(text):
  """Falling asleep, checking one's watch, heading for the exits."""
  return ROTTEN if _asleep(text) else ABSTAIN


@labelling_function
def cliche(text):
  """Formula and familiarity: "predictable", "by-the-numbers", "derivative", not negated."""
  plain, _ = _lexicon_hits(_tokens(text), CLICHE)
  return ROTTEN if plain else ABSTAIN


_fails = _search(r"\b(?:fails? to|failed to|falls? flat|fell flat|doesn't work|does not work|"
                 r"never quite|not quite|not enough|runs? out of (?:steam|gas)|misses the mark|"
                 r"goes nowhere|adds up to (?:little|nothing|very little))")


@labelling_function
def falls_short(text):
  """Ambition that does not land: "fails to", "falls flat", "never quite", "goes nowhere"."""
  return ROTTEN if _fails(text) else ABSTAIN


_too = _search(r"\b(?:too|overly|far too|much too) (?!bad\b|good\b|much fun\b)[a-z-]+")


@labelling_function
def too_much(text):
  """Excess: "too long", "overly sentimental", "far too cute" (but not "too good")."""
  return ROTTEN if _too(text) else ABSTAIN


_recommend = _search(r"\b(?:recommend(?:ed)?|must-see|must see|worth (?:seeing|watching|a look|"
                     r"the (?:price|trip|wait))|don't miss|do not miss|see it)\b")


@labelling_function
def recommendation(text):
  """A recommendation ("must-see", "worth seeing", "don't miss it"), not negated."""
  m = _recommend(text)
  if not m:
    return ABSTAIN
  before = _tokens(text[:m.start()])[-NEGATION_WINDOW:]
  return ROTTEN if any(t in NEGATORS or t.endswith("n't") for t in before) else FRESH


_best_of = _search(r"\b(?:one of the (?:best|finest|most (?:original|entertaining|enjoyable|"
                   r"moving|satisfying))|(?:best|finest) (?:film|movie|picture|work)s?|"
                   r"of the year|tour de force|a must|a joy|a treat|a gem|a delight)\b")


@labelling_function
def best_of(text):
  """Ranked praise: "one of the best", "film of the year", "a gem", "tour de force"."""
  return FRESH if _best_of(text) else ABSTAIN


_worst = _search(r"\b(?:worst|one of the (?:least|most (?:boring|tedious|annoying|"
                 r"disappointing))|least (?:funny|interesting|engaging))\b")


@labelling_function
def worst_of(text):
  """Ranked criticism: "the worst", "one of the most tedious", "least funny"."""
  return ROTTEN if _worst(text) else ABSTAIN


@labelling_function
def exclamation(text):
  """An exclamation mark: the enthusiasm of a pull quote."""
  return FRESH if '!' in text else ABSTAIN


_question = _search(r"\b(?:who|why|what|how)\b[^.?!]*\?")


@labelling_function
def rhetorical_question(text):
  """A wh-question ("Who thought this was a good idea?"): a critic's exasperation."""
  return ROTTEN if _question(text) else ABSTAIN
