"""Check, without Quarto, that `nbdev-docs` can render the notebooks: nbdev's own processing of every notebook
(`nbdev-proc-nbs`: the API docs of the exports through `show_doc`, the cells that rendering executes) runs without
an error or a warning, `show_doc` renders every public name of every module, and the links between pages point to
pages that exist.

The site itself is rendered by Quarto (`nbdev-docs`, and `.github/workflows/deploy.yaml` on GitHub); Quarto's binary
is downloaded from GitHub at install time, which the CI machines cannot reach. So `make test` runs this instead.

    python tools/check_docs.py [--proc DIR]   # --proc: check already processed notebooks, without processing again
"""
import importlib, json, pkgutil, re, subprocess, sys, warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_link = re.compile(r'\]\(([^)\s]+)\)')
# what nbdev's processors and show_doc warn about: each is something the rendered page gets wrong
_warnings = re.compile(r'nbdev/[\w/]+\.py:\d+: \w*Warning: .*')

def page_name(nb:Path) -> str:
    "The page nbdev renders a notebook to: `10_simclr.ipynb` -> `simclr.html`"
    return re.sub(r'^\d+[a-zA-Z0-9]*_', '', nb.stem.lower()) + '.html'

def process(proc:Path) -> list:
    "Run nbdev's processing of every notebook into `proc`; the problems it reported"
    r = subprocess.run([str(Path(sys.executable).parent/'nbdev-proc-nbs'), '--force', '--n-workers', '2'], cwd=ROOT,
                       capture_output=True, text=True)
    out = r.stdout + r.stderr
    problems = [f"nbdev-proc-nbs failed (exit {r.returncode}):\n{out[-3000:]}"] if r.returncode else []
    problems += [m.group(0) + ' (nbdev-proc-nbs)' for m in _warnings.finditer(out)]
    return problems

def check_show_doc(package:str='self_supervised') -> list:
    "Public names of `package`'s modules whose `show_doc` fails or warns (e.g. a type hint that does not resolve)"
    from nbdev.showdoc import show_doc
    pkg, problems = importlib.import_module(package), []
    for m in pkgutil.walk_packages(pkg.__path__, f'{package}.'):
        if m.name.endswith('_modidx'): continue
        mod = importlib.import_module(m.name)
        for name in getattr(mod, '__all__', []):
            obj = getattr(mod, name)
            if not callable(obj): continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter('error')
                    show_doc(obj)._repr_markdown_()
            except Exception as e: problems.append(f"show_doc({m.name}.{name}): {type(e).__name__}: {e}")
    return problems

def check_links(proc:Path) -> list:
    "Links of the processed notebooks to a page or a file of the site that does not exist"
    pages = {page_name(p) for p in proc.glob('*.ipynb')}
    problems = []
    for nb in sorted(proc.glob('*.ipynb')):
        for c in json.loads(nb.read_text())['cells']:
            srcs = [''.join(c['source'])] if c['cell_type'] == 'markdown' else \
                   [''.join(o.get('data', {}).get('text/markdown', [])) for o in c.get('outputs', [])]
            for src in srcs:
                for target in _link.findall(src):
                    path = target.split('#')[0]
                    if not path or re.match(r'^[a-z]+:', path) or path.startswith('/'): continue   # an anchor, a URL
                    if path.endswith('.html'): ok = path in pages
                    else: ok = (proc/path).exists() or (ROOT/'nbs'/path).exists()
                    if not ok: problems.append(f"{nb.name}: broken link to `{target}`")
    return problems

def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    proc = Path(args[args.index('--proc') + 1]) if '--proc' in args else ROOT/'_proc'
    problems = ([] if '--proc' in args else process(proc)) + check_show_doc() + check_links(proc)
    if problems: sys.exit('\n'.join(problems))
    print(f"nbdev processed {len(list(proc.glob('*.ipynb')))} notebooks without problems")

if __name__ == '__main__': main()
