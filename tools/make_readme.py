"""Write README.md from nbs/index.ipynb (the readme notebook named in pyproject.toml).

`nbdev-readme` does the same through Quarto, whose PyPI package downloads its binary at install time and so cannot
be installed on machines that only reach the package registries. This script needs nothing but the notebook:
markdown cells are copied, code cells become fenced Python blocks without their `#|` directives, and hidden
cells (`#| hide`) are left out.

    python tools/make_readme.py [--check]    # --check: fail if README.md is out of date
"""
import json, sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]

def cell_md(c):
    src = ''.join(c['source'])
    if c['cell_type'] == 'markdown': return src
    lines = src.splitlines()
    directives = [l for l in lines if l.startswith('#|')]
    if any(d.split()[1:2] == ['hide'] for d in directives): return None
    code = '\n'.join(l for l in lines if not l.startswith('#|')).strip()
    return f"```python\n{code}\n```" if code else None

def render(nb_path):
    cells = json.loads(Path(nb_path).read_text())['cells']
    parts = [m for c in cells if (m := cell_md(c))]
    header = "<!-- WARNING: generated from nbs/index.ipynb by tools/make_readme.py; edit the notebook, not this file -->\n\n"
    return header + '\n\n'.join(p.strip() for p in parts) + '\n'

if __name__ == '__main__':
    txt, out = render(root/'nbs'/'index.ipynb'), root/'README.md'
    if '--check' in sys.argv:
        if not out.exists() or out.read_text() != txt:
            sys.exit("README.md is out of date with nbs/index.ipynb: run `make readme` and commit")
    else: out.write_text(txt)
