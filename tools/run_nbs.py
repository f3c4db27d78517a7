"""Execute the notebooks in a Jupyter kernel and save them with their outputs, as fastai's notebooks are kept: the
notebooks are the documentation, so their tables, figures and training runs are part of them.

Cells that `nbdev-test` skips are skipped here too (`#| slow` and the other flags of `tst_flags`, `#| eval: false`):
they keep no output. Each notebook runs in its own kernel, from the `nbs/` folder, with one torch thread per
notebook (`--workers` notebooks at a time). Outputs are then cleaned by `nbdev-clean` (metadata noise out, outputs
kept). `--check` runs nothing: it fails if a notebook with code to run has no saved output at all.

    python tools/run_nbs.py [NOTEBOOK ...] [--workers 2] [--timeout 1200]
    python tools/run_nbs.py --check
"""
import argparse, json, os, re, subprocess, sys, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
_dir = re.compile(r'^\s*#\|\s*([\w-]+)(?::\s*(.*))?$')

def _skip_flags() -> set:
    "The cell flags that nbdev-test skips: `tst_flags` of pyproject.toml"
    import tomllib
    cfg = tomllib.loads((ROOT/'pyproject.toml').read_text()).get('tool', {}).get('nbdev', {})
    return set(str(cfg.get('tst_flags', '')).split())

def _directives(src:str) -> dict:
    return {m.group(1): (m.group(2) or '').strip() for l in src.splitlines() if (m := _dir.match(l))}

def runs(cell, flags) -> bool:
    "Whether `nbdev-test` runs this code cell"
    d = _directives(''.join(cell['source']))
    return not (set(d) & flags) and d.get('eval', 'true').lower() != 'false'

def execute(path:str, timeout:int) -> tuple:
    import nbformat
    from nbclient import NotebookClient
    t0, flags = time.time(), _skip_flags()
    nb = nbformat.read(path, as_version=4)
    skipped = {}
    for i, c in enumerate(nb.cells):   # skipped cells run as empty cells, and get their source back afterwards
        if c.cell_type == 'code' and not runs(c, flags): skipped[i], c.source = c.source, ''
    env = dict(os.environ, OMP_NUM_THREADS='1', MPLBACKEND='module://matplotlib_inline.backend_inline')
    client = NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(NBS)}}, env=env)
    try: client.execute()
    except Exception as e: return path, time.time() - t0, f'{type(e).__name__}: {str(e)[-2000:]}'
    for i, src in skipped.items(): nb.cells[i].source, nb.cells[i].outputs = src, []
    nbformat.write(nb, path)
    return path, time.time() - t0, None

def _imports_only(src:str) -> bool:
    import ast
    try: return all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.parse(src).body)
    except SyntaxError: return False

def has_outputs(path) -> bool:
    "Whether the notebook holds outputs, if it runs code besides exports and imports"
    cells, flags = json.loads(Path(path).read_text())['cells'], _skip_flags()
    code = [c for c in cells if c['cell_type'] == 'code' and runs(c, flags) and not _imports_only(''.join(c['source']))
            and not _directives(''.join(c['source'])).keys() & {'export', 'exporti', 'default_exp'}]
    return not code or any(c.get('outputs') for c in code)

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('notebooks', nargs='*', help='notebooks to run (default: all of nbs/)')
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--timeout', type=int, default=1200, help='seconds per cell')
    p.add_argument('--check', action='store_true', help='only check that every notebook holds outputs')
    a = p.parse_args()
    paths = [str(Path(n).resolve()) for n in a.notebooks] or sorted(str(n) for n in NBS.glob('*.ipynb') if not n.name.startswith(('_', '.')))
    if a.check:
        bare = [Path(n).name for n in paths if not has_outputs(n)]
        if bare: sys.exit(f"Notebooks saved without their outputs: {', '.join(bare)}: run `make nbs` and commit")
        print(f"{len(paths)} notebooks hold their outputs")
        sys.exit()
    failed = []
    with ProcessPoolExecutor(a.workers) as ex:
        for path, secs, err in ex.map(execute, paths, [a.timeout] * len(paths)):
            print(f"{Path(path).name}: {secs:.0f} s" + (f" FAILED\n{err}" if err else ''), flush=True)
            if err: failed.append(Path(path).name)
    subprocess.run([str(Path(sys.executable).parent/'nbdev-clean')], cwd=ROOT, check=True)
    if failed: sys.exit(f"Failed: {', '.join(failed)}")
