"""Imports run one way: no module of w2s imports (at module level or inside a function) a module
that imports it back, directly or through others (house style: "Imports run one way").

The graph is read from the source with `ast`, so a circle that only a lazy import inside a
function closes (and that Python therefore tolerates) is found too.
"""
import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _modules(root: str, package: str) -> dict[str, str]:
  """{dotted module name: path} of every .py file of `package` (found under `root`)."""
  out = {}
  for folder, _, files in os.walk(os.path.join(root, *package.split('.'))):
    for f in files:
      if f.endswith('.py'):
        path = os.path.join(folder, f)
        name = os.path.relpath(path, root)[:-3].replace(os.sep, '.')
        out[name[:-len('.__init__')] if name.endswith('.__init__') else name] = path
  return out


def import_graph(root: str, package: str) -> dict[str, dict[str, int]]:
  """{module: {module of the package it imports: line of the first such import}}."""
  modules = _modules(root, package)
  graph = {}
  for name, path in modules.items():
    is_package = path.endswith('__init__.py')
    here = name if is_package else name.rpartition('.')[0]
    edges = graph.setdefault(name, {})
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ''
        if node.level:  # relative: from . import x, from ..y import z
          parent = here
          for _ in range(node.level - 1):
            parent = parent.rpartition('.')[0]
          base = f'{parent}.{base}' if base else parent
        # `from pkg import mod` imports the submodule; `from mod import name`, the module
        targets = [f'{base}.{a.name}' if f'{base}.{a.name}' in modules else base
                   for a in node.names]
      else:
        continue
      for target in targets:
        while target and target not in modules:  # `import w2s.a.b` -> w2s.a.b; x.Attr -> x
          target = target.rpartition('.')[0]
        if target and target != name:
          edges.setdefault(target, node.lineno)
  return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
  """One circle (a, b, ..., a) through each strongly connected group of modules (Tarjan)."""
  index, low, stack, on_stack, groups = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph.get(v, {})):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      group = set()
      while True:
        w = stack.pop()
        on_stack.discard(w)
        group.add(w)
        if w == v:
          break
      if len(group) > 1:
        groups.append(group)

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return [_circle_in(graph, group) for group in groups]


def _circle_in(graph, group: set) -> list[str]:
  """A shortest path from the group's first module back to itself, inside the group."""
  start = min(group)
  paths, seen = [[start]], {start}
  while paths:
    path = paths.pop(0)
    for w in sorted(graph[path[-1]]):
      if w == start:
        return path + [start]
      if w in group and w not in seen:
        seen.add(w)
        paths.append(path + [w])
  raise AssertionError(f'no circle in {group}')


def _describe(graph, circle) -> str:
  return ' -> '.join(f'{a} (line {graph[a][b]})' for a, b in zip(circle, circle[1:])) + \
      f' -> {circle[-1]}'


def test_w2s_imports_run_one_way():
  graph = import_graph(REPO, 'w2s')
  found = cycles(graph)
  assert not found, 'import circles in w2s:\n' + '\n'.join(_describe(graph, c) for c in found)


def test_the_graph_sees_function_level_imports():
  graph = import_graph(REPO, 'w2s')
  assert 'w2s.optim' in graph['w2s.options']      # inside TrainOptions.from_section
  assert 'w2s.registry' in graph['w2s.options']   # at module level
  assert 'w2s.plain_data' in graph['w2s.partition']
  for low in ('w2s.errors', 'w2s.plain_data'):  # the floors everything stands on
    assert not graph[low], (low, graph[low])


def test_a_circle_closed_by_a_lazy_import_is_reported(tmp_path):
  pkg = tmp_path / 'pkg'
  (pkg / 'sub').mkdir(parents=True)
  (pkg / '__init__.py').write_text('')
  (pkg / 'sub' / '__init__.py').write_text('')
  (pkg / 'a.py').write_text('from pkg import b\n')
  (pkg / 'b.py').write_text('import os\nfrom pkg.sub.c import helper\n')
  (pkg / 'sub' / 'c.py').write_text('def helper():\n  from ..a import x\n  return x\n')
  (pkg / 'd.py').write_text('from pkg import a\n')  # imports into the circle, not part of it
  graph = import_graph(str(tmp_path), 'pkg')
  assert graph['pkg.sub.c'] == {'pkg.a': 2} and graph['pkg.b'] == {'pkg.sub.c': 2}
  [circle] = cycles(graph)
  assert circle == ['pkg.a', 'pkg.b', 'pkg.sub.c', 'pkg.a']
  assert _describe(graph, circle) == ('pkg.a (line 1) -> pkg.b (line 2) -> pkg.sub.c (line 2) '
                                      '-> pkg.a')
