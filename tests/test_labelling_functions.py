"""Labelling functions (w2s/labelling_functions/): the Rotten Tomatoes rules on hand-written
sentences (every expected vote traced by hand through the rules), the vote matrix, the two ways a
module declares its rules, how a set is addressed, and one-line errors for broken rules."""
import numpy as np
import pytest

from w2s import labelling_functions as lf
from w2s.errors import UserError
from w2s.labelling_functions import rotten_tomatoes as rt

# sentence -> the rules that vote on it and their votes (0 rotten, 1 fresh); all others abstain
HAND_CHECKED = {
    'A masterpiece!': dict(strong_praise=1, praise_words=1, lexicon_balance=1, exclamation=1),
    'The film is not good.': dict(negated_praise=0, lexicon_balance=0),
    'It\u2019s never boring.': dict(negated_criticism=1, lexicon_balance=1),  # curly apostrophe
    'What a waste of time.': dict(waste_of=0, criticism_words=0, lexicon_balance=0),
    # one praise and one criticism: the balance abstains, the clause after "but" decides
    'The cast is charming, but the story is dull and far too long.':
        dict(praise_words=1, criticism_words=0, contrast_clause=0, boredom=0, too_much=0),
    'Who thought this was a good idea?': dict(praise_words=1, lexicon_balance=1,
                                              rhetorical_question=0),
    'One of the best films of the year, and a must-see.':
        dict(praise_words=1, lexicon_balance=1, best_of=1, recommendation=1),
    'The plot is predictable and the jokes fall flat.':
        dict(criticism_words=0, lexicon_balance=0, cliche=0, falls_short=0),
    'I fell asleep.': dict(fell_asleep=0),
    'The worst movie of the summer.': dict(criticism_words=0, lexicon_balance=0, worst_of=0),
    "I wouldn't recommend it.": dict(recommendation=0),  # a negated recommendation
    'A plain account of events.': {},
}


def test_rotten_tomatoes_rules_on_hand_checked_sentences():
  rules = lf.load('rotten_tomatoes')
  assert 10 <= len(rules.names) <= 20 and rules.label_names == ('rotten', 'fresh')
  texts = list(HAND_CHECKED)
  votes = lf.vote_matrix(rules, texts, num_classes=2)
  assert votes.dtype == np.int32 and votes.shape == (len(texts), len(rules.names))
  for text, row in zip(texts, votes):
    expected = [HAND_CHECKED[text].get(name, lf.ABSTAIN) for name in rules.names]
    got = dict(zip(rules.names, row.tolist()))
    assert row.tolist() == expected, (text, {k: v for k, v in got.items() if v != -1})
  # every rule fires on at least one sentence above (none is dead code)
  assert (votes != lf.ABSTAIN).any(0).all(), [n for n, f in zip(rules.names, (votes != -1).any(0))
                                               if not f]


def test_summary_counts_coverage_overlap_and_conflict():
  votes = np.array([[1, 1, -1], [1, 0, -1], [-1, -1, -1], [0, -1, 0]])
  s = lf.summary(votes, ['a', 'b', 'c'])
  assert s['coverage'] == [0.75, 0.5, 0.25]
  assert s['overlap'] == [0.75, 0.5, 0.25]
  assert s['conflict'] == [0.25, 0.25, 0.0]   # only row 1 disagrees
  assert s['any_vote'] == 0.75


def test_three_ways_to_address_a_set_and_one_digest(tmp_path, monkeypatch):
  by_short = lf.load('rotten_tomatoes')
  by_dotted = lf.load('w2s.labelling_functions.rotten_tomatoes')
  by_file = lf.load(rt.__file__)
  assert by_short.digest == by_dotted.digest == by_file.digest
  assert by_short.spec() == by_file.spec() and by_short.names == by_file.names
  # a listed set in the user's own file; editing it changes the digest (the stage relabels)
  path = tmp_path / 'my_rules.py'
  path.write_text('def has_x(t):\n  return 1 if "x" in t else -1\n'
                  'def never(t):\n  return -1\nLABELLING_FUNCTIONS = [never, has_x]\n')
  mine = lf.load(str(path))
  assert mine.names == ('never', 'has_x') and mine.label_names is None
  np.testing.assert_array_equal(lf.vote_matrix(mine, ['x', 'y'], num_classes=2),
                                [[-1, 1], [-1, -1]])
  path.write_text(path.read_text().replace('"x"', '"z"'))
  assert lf.load(str(path)).digest != mine.digest
  monkeypatch.syspath_prepend(str(tmp_path))  # a top-level module by its name
  assert lf.load('my_rules').names == ('never', 'has_x')


def test_decorated_rules_in_definition_order_and_imports_ignored(tmp_path):
  path = tmp_path / 'marked.py'
  path.write_text(
      'from w2s.labelling_functions import labelling_function\n'
      'from w2s.labelling_functions.rotten_tomatoes import exclamation  # not this module\'s\n'
      '@labelling_function(name="second_name")\n'
      'def b(t):\n  return 0\n'
      '@labelling_function\n'
      'def a(t):\n  return 1\n'
      'def helper(t):\n  return 0\n')
  assert lf.load(str(path)).names == ('second_name', 'a')


@pytest.mark.parametrize('source, texts, match', [
    ('def f(t):\n  return "pos"\nLABELLING_FUNCTIONS = [f]\n', ['hi'],
     r"labelling function 'f' returned 'pos' on text #0 \('hi'\); return a class in 0..1 or -1"),
    ('def f(t):\n  return 2\nLABELLING_FUNCTIONS = [f]\n', ['hi'], "returned 2 on text #0"),
    ('def f(t):\n  return True\nLABELLING_FUNCTIONS = [f]\n', ['hi'], "returned True"),
    ('def f(t):\n  return len(t[5]) - 1\nLABELLING_FUNCTIONS = [f]\n', ['long enough', 'hi'],
     r"labelling function 'f' raised IndexError on text #1 \('hi'\)"),
])
def test_a_broken_rule_is_one_user_error(tmp_path, source, texts, match):
  path = tmp_path / 'bad.py'
  path.write_text(source)
  with pytest.raises(UserError, match=match) as e:
    lf.vote_matrix(lf.load(str(path)), texts, num_classes=2)
  assert '\n' not in str(e.value)


@pytest.mark.parametrize('ref, source, match', [
    ('nope', None, "no labelling-function module 'nope'; known: rotten_tomatoes"),
    ('no/such/file.py', None, "labelling-function file 'no/such/file.py' does not exist"),
    (None, 'x = 1\n', 'has no labelling functions; list them in LABELLING_FUNCTIONS'),
    (None, 'raise ValueError("boom")\n', r'importing .* failed \(ValueError: boom\)'),
    (None, 'def f(t):\n  return -1\nLABELLING_FUNCTIONS = [f, f]\n', "name 'f' repeats"),
    (None, 'LABELLING_FUNCTIONS = [1]\n', 'must be a list of callables'),
    (3, None, 'must name a labelling-function module'),
])
def test_bad_sets_are_one_user_error(tmp_path, ref, source, match):
  if source is not None:
    (tmp_path / 'set.py').write_text(source)
    ref = str(tmp_path / 'set.py')
  with pytest.raises(UserError, match=match) as e:
    lf.load(ref)
  assert '\n' not in str(e.value)
