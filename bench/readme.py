"""Write a benchmark's Markdown into the README: between the markers `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`
of a cell of `nbs/index.ipynb` (the README's source), then regenerate README.md with `tools/make_readme.py`."""
import json, re, subprocess, sys
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]

def markers(name:str): return f'<!-- bench:{name} -->', f'<!-- /bench:{name} -->'

def write_readme(name:str, md:str, nb_path=ROOT/'nbs'/'index.ipynb', readme=True):
    "Replace what lies between the `bench:{name}` markers of `nb_path` with `md`; then regenerate README.md if `readme`"
    start, end = markers(name)
    nb = json.loads(Path(nb_path).read_text())
    cell = next((c for c in nb['cells'] if start in ''.join(c['source'])), None)
    if cell is None: sys.exit(f"{nb_path} has no cell with the markers {start} ... {end}")
    src = re.sub(re.escape(start) + '.*?' + re.escape(end), lambda m: f"{start}\n{md.strip()}\n{end}", ''.join(cell['source']), flags=re.S)
    lines = src.split('\n')
    cell['source'] = [l + '\n' for l in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    Path(nb_path).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
    if readme: subprocess.run([sys.executable, str(ROOT/'tools'/'make_readme.py')], check=True)
