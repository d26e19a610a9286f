"""sha256 of files and directory trees: "nothing was overwritten" checks in the CLI tests."""
import hashlib
import os


def tree_digest(*paths) -> str:
  """sha256 over file names and contents of files / directory trees (missing paths count too)."""
  h = hashlib.sha256()
  for path in map(str, paths):
    h.update(path.encode())
    if os.path.isfile(path):
      h.update(open(path, 'rb').read())
    for root, dirs, files in sorted(os.walk(path)):
      dirs.sort()
      for f in sorted(files):
        p = os.path.join(root, f)
        h.update(p.encode())
        h.update(open(p, 'rb').read())
  return h.hexdigest()
