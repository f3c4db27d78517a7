"""Write README.md from nbs/index.ipynb (the readme notebook named in pyproject.toml), with the table of algorithms
generated from the registry.

`nbdev-readme` does the same through Quarto, whose PyPI package downloads its binary at install time and so cannot
be installed on machines that only reach the package registries. This script needs nothing but the notebook:
markdown cells are copied, code cells become fenced Python blocks without their `#|` directives, and hidden
cells (`#| hide`) are left out. Between the markers `<!-- registry:algorithms -->` and `<!-- /registry:algorithms -->`
of the notebook it first writes `self_supervised.registry.algorithm_table()`, so that a new algorithm's row comes
from its registration alone.

    python tools/make_readme.py [--check]    # --check: fail if the table or README.md is out of date
"""
import json, re, sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]
START, END = '<!-- registry:algorithms -->', '<!-- /registry:algorithms -->'

def cell_md(c):
    src = ''.join(c['source'])
    if c['cell_type'] == 'markdown': return src
    lines = src.splitlines()
    directives = [l for l in lines if l.startswith('#|')]
    if any(d.split()[1:2] == ['hide'] for d in directives): return None
    code = '\n'.join(l for l in lines if not l.startswith('#|')).strip()
    return f"```python\n{code}\n```" if code else None

def with_table(nb:dict) -> dict:
    "`nb` with the registry's table of algorithms between the markers"
    from self_supervised.registry import algorithm_table
    for c in nb['cells']:
        src = ''.join(c['source'])
        if START not in src: continue
        src = re.sub(re.escape(START) + '.*?' + re.escape(END), lambda m: f"{START}\n{algorithm_table()}\n{END}", src, flags=re.S)
        lines = src.split('\n')
        c['source'] = [l + '\n' for l in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    return nb

def render(nb:dict):
    parts = [m for c in nb['cells'] if (m := cell_md(c))]
    header = "<!-- WARNING: generated from nbs/index.ipynb by tools/make_readme.py; edit the notebook, not this file -->\n\n"
    return header + '\n\n'.join(p.strip() for p in parts) + '\n'

if __name__ == '__main__':
    nb_path, out = root/'nbs'/'index.ipynb', root/'README.md'
    text = nb_path.read_text()
    nb = with_table(json.loads(text))
    new_text, txt = json.dumps(nb, indent=1, ensure_ascii=False) + '\n', render(nb)
    if '--check' in sys.argv:
        if new_text != text: sys.exit("The table of algorithms in nbs/index.ipynb is not the registry's: run `make readme` and commit")
        if not out.exists() or out.read_text() != txt:
            sys.exit("README.md is out of date with nbs/index.ipynb: run `make readme` and commit")
    else: nb_path.write_text(new_text); out.write_text(txt)
