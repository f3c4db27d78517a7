"""Build the documentation site in `_docs/` from the notebooks, offline, and check its links.

`nbdev-docs` does this through Quarto, which cannot be installed on machines that only reach the package
registries: PyPI's `quarto-cli` is an sdist whose setup.py downloads the Quarto binary from GitHub, and there is
no wheel, no Debian package and no npm package of it. (`tools/make_readme.py` replaces `nbdev-readme` for the same
reason.) This script needs only what the dev install already has: nbdev's own executor (execnb), markdown-it-py,
Pygments and matplotlib.

What it builds:

- one page per notebook of `nbs/`, named as nbdev names them (`10_simclr.ipynb` -> `simclr.html`, so the links of
  `self_supervised/_modidx.py` point into it), `index.html` from `nbs/index.ipynb`. Each notebook is *executed*
  (execnb's `CaptureShell`, as `nbdev-test` runs it: cells flagged with the config's `tst_flags`, i.e. `#| slow`,
  and `#| eval: false` cells are not run), in parallel; the pages show real outputs (text, images as PNG files,
  HTML). `#| hide` cells are not shown, the `#|` directive lines never are, `#| echo: false` / `#| output: false`
  hide the code / the outputs. Markdown with tables; `$...$` and `$$...$$` math is typeset by MathJax from a CDN
  (the only remote resource; the site builds and its links check without it). Back-ticked names of the library
  link to where they are defined; links to other notebooks (`[x](10_simclr.ipynb)`) become links to their pages.
- `api.html`: every module of `self_supervised` (found by walking the package, subpackages included), every name
  of its `__all__` with its signature, docstring and documented parameters, linked to the page that defines it
  (from `_modidx.py`).
- a figure on every algorithm page: for each algorithm of `self_supervised.registry.ALGOS`, the views of its recipe on
  four Fashion-MNIST test images (`self_supervised.visual.view_grid`), with its callback's defaults and the recipe's
  values, on the page of the notebook that defines the callback (found through `_modidx.py`).

Then every `href`/`src` inside the site must exist (files and `#anchors`). Broken links, a notebook that fails to
execute, a markdown link to a missing notebook, a module that does not import, a figure that cannot be made: each
is a problem, they are listed, and the exit status is 1.

    python tools/make_docs.py [--out _docs] [--no-exec] [--n-workers 2] [--check]

`--no-exec` builds without running the notebooks (outputs stored in them are shown; fast, for tests). `--check`
builds into a temporary folder, reports and removes it (what CI runs).
"""
from __future__ import annotations
import argparse, ast, base64, html, importlib, inspect, json, os, pkgutil, posixpath, re, shutil, sys, tempfile, time
import traceback
from concurrent.futures import ProcessPoolExecutor
from html.parser import HTMLParser
from multiprocessing import get_context
from pathlib import Path
from urllib.parse import unquote

root = Path(__file__).resolve().parents[1]
assets_dir = Path(__file__).resolve().parent/'docs_assets'
MARKER = '.built-by-make_docs'     # a folder holding this file is ours to replace
TIMINGS = '.timings.json'          # seconds each notebook took to run in the last build
MATHJAX = 'https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js'
esc = html.escape

def nb_config():
    from nbdev.config import get_config
    return get_config(root)

def page_name(nb:Path, nbs:Path) -> str:
    "The page nbdev gives notebook `nb`: numeric prefix stripped, lower case (`10_simclr.ipynb` -> `simclr.html`)"
    from nbdev.config import nbpath2html
    return nbpath2html(nb.relative_to(nbs)).as_posix()

def notebooks(nbs:Path) -> list[Path]:
    "The notebooks under `nbs` in the order of their numbers, leaving out those nbdev ignores (`_*`, `.*`)"
    return sorted(p for p in nbs.rglob('*.ipynb')
                  if not any(part.startswith(('_', '.')) for part in p.relative_to(nbs).parts))

def rel(src_page:str, target:str) -> str:
    "Relative link from page `src_page` to `target` (both relative to the site's root)"
    d = posixpath.dirname(src_page)
    return posixpath.relpath(target, d) if d else target

# ------------------------------------------------------------------ directives
_re_dir = re.compile(r'^\s*#\|\s*(\S+?):?(?:\s+(.*?))?\s*$')

def split_directives(src:str) -> tuple[dict, str]:
    "The `#| name value` lines at the top of a cell as {name: value-string}, and the source without them"
    lines, dirs = src.splitlines(), {}
    i = 0
    while i < len(lines) and (not lines[i].strip() or _re_dir.match(lines[i])):
        if m := _re_dir.match(lines[i]): dirs[m.group(1)] = (m.group(2) or '').strip()
        i += 1
    body = [l for l in lines[i:] if not re.search(r'#\|\s*hide_line\s*$', l)]
    return dirs, '\n'.join(body).strip('\n')

def _false(v): return v.lower() in ('false', 'no', '0')

def skip_exec(dirs:dict, skip_flags) -> bool:
    "Whether nbdev-test would leave this code cell out: a test flag (`#| slow`) or `#| eval: false`"
    return bool(set(dirs) & set(skip_flags)) or _false(dirs.get('eval', 'true'))

# ------------------------------------------------------------------ execution (in worker processes)
def _outputs_json(cells):
    return [json.loads(json.dumps(c.get('outputs', []) if c.cell_type == 'code' else [])) for c in cells]

def execute_nb(path:str, skip_flags=('slow',), cell_timeout=600) -> dict:
    "Run notebook `path` as nbdev-test does; its outputs cell by cell, the error (if any) and the time"
    from fastcore.nbio import read_nb
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    path = Path(path)
    prev, os.environ['IN_TEST'] = os.environ.get('IN_TEST'), '1'   # as under nbdev-test
    t0, err = time.time(), None
    nb = read_nb(path)
    shell = CaptureShell(path)
    preproc = lambda c: c.cell_type != 'code' or skip_exec(split_directives(c.source)[0], skip_flags)
    try:
        with working_directory(path.parent):
            shell.run_all(nb, exc_stop=True, preproc=preproc, cell_timeout=cell_timeout or None)
    except BaseException as e:   # the notebook's own exception, or a timeout: reported, the build goes on
        err = shell.prettytb(fname=path.name) or ''.join(traceback.format_exception(e))
    finally:
        shell.close()
        if prev is None: os.environ.pop('IN_TEST', None)
        else: os.environ['IN_TEST'] = prev
    return dict(outputs=_outputs_json(nb.cells), error=err, seconds=time.time() - t0)

def _executor():
    "`execute_nb` as a worker process can unpickle it: by module name, since IPython replaces the workers' `__main__`"
    if __name__ != '__main__': return execute_nb
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import make_docs
    return make_docs.execute_nb

def _worker_init(threads):
    # torch reads this at import: the workers share the cores instead of each taking all of them
    os.environ.setdefault('OMP_NUM_THREADS', str(threads))
    os.environ.setdefault('MKL_NUM_THREADS', str(threads))

# ------------------------------------------------------------------ markdown
def slugify(text:str) -> str:
    s = re.sub(r'<[^>]+>', '', text).lower()
    s = re.sub(r'[^\w\- ]', '', s).strip()
    return re.sub(r'\s+', '-', s) or 'section'

def _math_rule(state, silent):
    "`$...$` and `$$...$$`: kept verbatim for MathJax (markdown must not turn `_` and `*` in TeX into emphasis)"
    src, pos = state.src, state.pos
    if src[pos] != '$': return False
    delim = '$$' if src.startswith('$$', pos) else '$'
    start = pos + len(delim)
    if delim == '$' and (start >= len(src) or src[start].isspace()): return False
    end = src.find(delim, start)
    while end != -1 and src[end - 1] == '\\': end = src.find(delim, end + 1)
    if end == -1 or end == start: return False
    if delim == '$' and (src[end - 1].isspace() or src[end + 1:end + 2].isdigit()): return False   # "$5 and $6"
    if not silent:
        tok = state.push('math_display' if delim == '$$' else 'math_inline', 'math', 0)
        tok.content, tok.markup = src[start:end], delim
    state.pos = end + len(delim)
    return True

def _highlight(code:str, lang:str='python') -> str:
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import get_lexer_by_name, TextLexer
    try: lexer = get_lexer_by_name(lang or 'text')
    except Exception: lexer = TextLexer()
    return highlight(code, lexer, HtmlFormatter(cssclass='highlight'))

def make_markdown():
    "markdown-it with tables, math, heading ids, highlighted code, links to symbols and notebook pages"
    from markdown_it import MarkdownIt
    md = MarkdownIt('commonmark', {'html': True}).enable(['table', 'strikethrough'])
    md.inline.ruler.before('escape', 'math', _math_rule)
    md.add_render_rule('math_inline', lambda self, toks, i, opts, env: f'<span class="math">\\({esc(toks[i].content)}\\)</span>')
    md.add_render_rule('math_display', lambda self, toks, i, opts, env: f'<span class="math display">\\[{esc(toks[i].content)}\\]</span>')

    def heading_open(self, toks, i, opts, env):
        tok = toks[i]
        if not tok.attrGet('id'):
            text = ''.join(t.content for t in (toks[i + 1].children or []) if t.type in ('text', 'code_inline', 'math_inline'))
            tok.attrSet('id', env['page'].unique_id(slugify(text)))
            if tok.tag in ('h2', 'h3'): env['page'].toc.append((tok.tag, tok.attrGet('id'), toks[i + 1].content))
        return self.renderToken(toks, i, opts, env)

    def code_inline(self, toks, i, opts, env):
        c = toks[i].content
        h = f'<code>{esc(c)}</code>'
        target = env['site'].symbol_link(c, env['page'].name)
        return f'<a class="sym" href="{esc(target)}">{h}</a>' if target else h

    def fence(self, toks, i, opts, env):
        tok = toks[i]
        lang = (tok.info or '').split()[0] if tok.info else ''
        return _highlight(tok.content, lang or 'text')

    def link_open(self, toks, i, opts, env):
        toks[i].attrSet('href', env['site'].local_link(toks[i].attrGet('href') or '', env['page']))
        return self.renderToken(toks, i, opts, env)

    for name, f in dict(heading_open=heading_open, code_inline=code_inline, fence=fence, link_open=link_open).items():
        md.add_render_rule(name, f)
    default_image = md.renderer.rules['image']
    def image(self, toks, i, opts, env):
        toks[i].attrSet('src', env['site'].local_link(toks[i].attrGet('src') or '', env['page']))
        return default_image(toks, i, opts, env)
    md.add_render_rule('image', image)
    return md

# ------------------------------------------------------------------ pages
_re_ansi = re.compile(r'\x1b\[[0-9;?]*[A-Za-z]')

def clean_text(s:str) -> str:
    "Terminal text as it finally looks: ANSI codes removed, each line what follows its last carriage return, paths relative to the checkout"
    s = _re_ansi.sub('', s).replace(f'{root}/', '')
    return '\n'.join(l.rsplit('\r', 1)[-1] if '\r' in l.rstrip('\r') else l.rstrip('\r') for l in s.split('\n'))

def _join(v): return ''.join(v) if isinstance(v, list) else (v or '')

class Page:
    "One page of the site: its name, title and the ids already used on it"
    def __init__(self, name:str, title:str, nb:Path|None=None, group:str='', description:str=''):
        self.name, self.title, self.nb, self.group, self.description = name, title, nb, group, description
        self.ids, self.toc = set(), []       # the ids used on the page; its h2/h3 headings for the sidebar
        self.anchors = {}                    # cell index -> [(id, name)] of the names the (exported) cell defines
        self.after, self.end = {}, []        # html to put after a cell, and at the end of the page
        self.module, self.cells, self.title_cell, self.n_img, self.description_html = None, [], None, 0, ''

    def unique_id(self, base:str) -> str:
        i, cand = 1, base
        while cand in self.ids: i, cand = i + 1, f'{base}-{i}'
        self.ids.add(cand)
        return cand

def _defined_names(code:str) -> list[str]:
    "Names an exported cell defines, as nbdev's `_modidx` spells them (`Class`, `Class.method`, patched `Cls.f`), and its assigned names"
    from nbdev.doclinks import patch_name
    try: tree = ast.parse(code)
    except SyntaxError: return []
    res = []
    for o in tree.body:
        if isinstance(o, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            nm = patch_name(o)
            res += nm if isinstance(nm, list) else [nm]
            if isinstance(o, ast.ClassDef):
                res += [f'{o.name}.{t.name}' for t in o.body if isinstance(t, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        elif isinstance(o, (ast.Assign, ast.AnnAssign)):
            for t in (o.targets if isinstance(o, ast.Assign) else [o.target]):
                for n in ([t] if isinstance(t, ast.Name) else getattr(t, 'elts', [])):
                    if isinstance(n, ast.Name): res.append(n.id)
    return res

def _lib_module(d:str, lib:str) -> str: return f'{lib}.{d}' if d else None

class Site:
    "Everything the pages link to: the pages, the symbols (from `_modidx.py`) and the problems found on the way"
    def __init__(self, nbs:Path, out:Path, lib_name='self_supervised', title='self_supervised'):
        self.nbs, self.out, self.lib, self.title = nbs, out, lib_name, title
        self.pages, self.problems, self.copies = [], [], {}
        self.syms, self.short, self.modules = {}, {}, {}   # full name -> page#anchor; short name -> full names; module -> page
        self.api_names = set()                              # the full names that api.html documents

    def has_anchor(self, page:str, anchor:str) -> bool:
        return any(p.name == page and anchor in p.ids for p in self.pages)

    def warn(self, msg): self.problems.append(msg)

    # --- symbols
    def load_modidx(self, modidx:dict):
        for mod, syms in modidx.get('syms', {}).items():
            for full, (loc, _) in syms.items():
                self.syms[full] = loc
                self.short.setdefault(full[len(mod) + 1:], set()).add(full)
                self.modules.setdefault(mod, loc.split('#')[0])

    def symbol_link(self, text:str, from_page:str) -> str|None:
        "Link for a back-ticked name: a symbol of the library (full or short name, `()` allowed) or a module"
        name = text.strip()
        if name.endswith('()'): name = name[:-2]
        if not re.fullmatch(r'[A-Za-z_][\w.]*', name): return None
        if name in self.syms: loc = self.syms[name]
        elif name in self.modules: loc = self.modules[name]
        elif len(self.short.get(name, ())) == 1: loc = self.syms[next(iter(self.short[name]))]
        else: return None
        return rel(from_page, loc)

    def local_link(self, url:str, page:Page) -> str:
        "A markdown link or image made to work on the site: notebooks become their pages, other local files are copied"
        if re.match(r'^[a-zA-Z][a-zA-Z0-9+.-]*:', url) or url.startswith(('//', '#')) or not url or page.nb is None: return url
        path, hash_, frag = url.partition('#')
        target = (page.nb.parent/unquote(path)).resolve()
        if target.suffix == '.ipynb':
            if not target.exists():
                self.warn(f'{page.nb.relative_to(self.nbs)}: markdown link to a missing notebook: {url}')
                return url
            return rel(page.name, page_name(target, self.nbs)) + hash_ + frag
        try: dest = target.relative_to(self.nbs.resolve()).as_posix()
        except ValueError: return url   # outside nbs/: left as is, the link check will say if it is broken
        if target.is_file(): self.copies[dest] = target
        return url

# ------------------------------------------------------------------ rendering of cells
def render_outputs(outputs, page:Page, site:Site, md) -> str:
    parts = []
    for o in outputs:
        t = o.get('output_type')
        if t == 'stream':
            cls = 'stderr' if o.get('name') == 'stderr' else 'stdout'
            txt = clean_text(_join(o.get('text')))
            if txt.strip(): parts.append(f'<pre class="out {cls}">{esc(txt)}</pre>')
        elif t == 'error':
            parts.append(f'<pre class="out error">{esc(clean_text(chr(10).join(o.get("traceback", [])) or o.get("evalue", "")))}</pre>')
        elif t in ('display_data', 'execute_result'):
            data, meta = o.get('data', {}), o.get('metadata', {})
            if 'text/html' in data: parts.append(f'<div class="out html">{_join(data["text/html"])}</div>')
            elif any(k in data for k in ('image/png', 'image/jpeg')):
                k = 'image/png' if 'image/png' in data else 'image/jpeg'
                page.n_img += 1
                fn = f'outputs/{posixpath.splitext(page.name)[0].replace("/", "_")}-{page.n_img}.{k.split("/")[1]}'
                (site.out/fn).parent.mkdir(parents=True, exist_ok=True)
                (site.out/fn).write_bytes(base64.b64decode(_join(data[k])))
                m = meta.get(k, {}) if isinstance(meta.get(k), dict) else {}
                size = ''.join(f' {a}="{int(m[a])}"' for a in ('width', 'height') if a in m)
                parts.append(f'<div class="out img"><img src="{rel(page.name, fn)}" alt="output"{size}></div>')
            elif 'image/svg+xml' in data: parts.append(f'<div class="out img">{_join(data["image/svg+xml"])}</div>')
            elif 'text/markdown' in data: parts.append(f'<div class="out md">{md.render(_join(data["text/markdown"]), dict(site=site, page=page))}</div>')
            elif 'text/latex' in data: parts.append(f'<div class="out math">{esc(_join(data["text/latex"]))}</div>')
            elif 'text/plain' in data: parts.append(f'<pre class="out">{esc(clean_text(_join(data["text/plain"])))}</pre>')
    return '\n'.join(parts)

def split_title(src:str) -> tuple[str, str, str]:
    "nbdev's title cell: `# Title`, then `> description`; the rest of the cell is content"
    lines = src.strip().splitlines()
    if not lines or not re.match(r'^#\s', lines[0]): return '', '', src
    title, rest = lines[0][2:].strip(), lines[1:]
    while rest and not rest[0].strip(): rest = rest[1:]
    desc = ''
    if rest and rest[0].startswith('>'): desc, rest = rest[0][1:].strip(), rest[1:]
    return title, desc, '\n'.join(rest)

def render_page_body(page:Page, site:Site, md, outputs:list|None, skip_flags, ran:bool) -> str:
    "The cells of `page`'s notebook as HTML: markdown, code (without directives) and outputs"
    env = dict(site=site, page=page)
    parts, cells = [], page.cells
    for i, c in enumerate(cells):
        src = _join(c.get('source'))
        if c['cell_type'] == 'markdown':
            if i == page.title_cell: src = split_title(src)[2]
            if src.strip(): parts.append(f'<div class="cell md">{md.render(src, env)}</div>')
        elif c['cell_type'] == 'code':
            dirs, code = split_directives(src)
            outs = outputs[i] if outputs is not None else c.get('outputs', [])
            hidden = 'hide' in dirs or _false(dirs.get('include', 'true'))
            if not hidden:
                show_code = code.strip() and not _false(dirs.get('echo', 'true'))
                show_out = not _false(dirs.get('output', 'true'))
                defs = ''.join(f'<span id="{esc(a)}"></span>' for a, _ in page.anchors.get(i, []))
                chips = [f'<a class="chip" href="{rel(page.name, "api.html")}#{esc(page.module)}.{esc(n)}">{esc(n)}</a>'
                         for a, n in page.anchors.get(i, []) if f'{page.module}.{n}' in site.api_names]
                body = ''
                if chips: body += f'<div class="defs">{defs}Defines {" ".join(chips)}</div>'
                elif defs: body += defs
                if show_code: body += f'<div class="code">{_highlight(code)}</div>'
                if ran and skip_exec(dirs, skip_flags) and 'eval' not in dirs:
                    flags = sorted(set(dirs) & set(skip_flags))
                    body += (f'<div class="note">Not run for the docs (<code>{esc(" ".join("#| " + f for f in flags))}</code>: '
                             f'<code>nbdev-test --flags {esc(" ".join(flags))}</code> runs it).</div>')
                if show_out and outs: body += f'<div class="outputs">{render_outputs(outs, page, site, md)}</div>'
                if body: parts.append(f'<div class="cell code-cell">{body}</div>')
            elif page.anchors.get(i):   # a hidden cell's names still get their anchors
                parts.append(''.join(f'<span id="{esc(a)}"></span>' for a, _ in page.anchors[i]))
        if i in page.after: parts.append(page.after[i])
    parts += page.end
    return '\n'.join(parts)

def nav_html(site:Site, current:Page) -> str:
    items, group = [], None
    for p in site.pages:
        if p.group != group:
            if group is not None: items.append('</ul>')
            group = p.group
            items.append(f'<p class="group">{esc(group)}</p><ul>')
        cur = ' class="current"' if p is current else ''
        items.append(f'<li{cur}><a href="{rel(current.name, p.name)}">{esc(p.title)}</a>')
        if p is current and p.toc:
            items.append('<ul class="toc">' + ''.join(f'<li class="{tag}"><a href="#{esc(i)}">{md_inline_text(t)}</a></li>'
                                                     for tag, i, t in p.toc) + '</ul>')
        items.append('</li>')
    items.append('</ul>')
    home = 'index.html' if any(p.name == 'index.html' for p in site.pages) else site.pages[0].name
    return f'<nav class="sidebar"><p class="site-title"><a href="{rel(current.name, home)}">{esc(site.title)}</a></p>{"".join(items)}</nav>'

def md_inline_text(s:str) -> str:
    "A heading's markdown as plain HTML for the table of contents (code spans kept, math left to MathJax)"
    return re.sub(r'`([^`]*)`', lambda m: f'<code>{m.group(1)}</code>', esc(s))

def page_html(site:Site, page:Page, body:str) -> str:
    assets = rel(page.name, 'assets')
    desc = f'<p class="description">{page.description_html}</p>' if page.description_html else ''
    return f'''<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(page.title)} - {esc(site.title)}</title>
<link rel="stylesheet" href="{assets}/style.css"><link rel="stylesheet" href="{assets}/pygments.css">
<script>window.MathJax = {{tex: {{inlineMath: [['\\\\(', '\\\\)']], displayMath: [['\\\\[', '\\\\]']]}}}};</script>
<script defer src="{MATHJAX}"></script>
</head><body>
{nav_html(site, page)}
<main><h1>{esc(page.title)}</h1>{desc}
{body}
</main></body></html>
'''

# ------------------------------------------------------------------ API reference
def _fmt_annotation(a) -> str:
    if a is inspect.Parameter.empty: return ''
    return a if isinstance(a, str) else inspect.formatannotation(a)

def _short_repr(v, n=80) -> str:
    r = repr(v)
    r = re.sub(r' at 0x[0-9a-f]+', '', r)
    return r if len(r) <= n else r[:n - 3] + '...'

def signature_str(name:str, obj) -> str:
    "`name(a:int=1, *, b=None) -> T` with string annotations unquoted, one parameter a line when long"
    try: sig = inspect.signature(obj)
    except (TypeError, ValueError): return f'{name}(...)'
    params, star = [], False
    for p in sig.parameters.values():
        if p.kind == p.KEYWORD_ONLY and not star: params.append('*'); star = True
        s = ('*' if p.kind == p.VAR_POSITIONAL else '**' if p.kind == p.VAR_KEYWORD else '') + p.name
        if p.kind == p.VAR_POSITIONAL: star = True
        if (a := _fmt_annotation(p.annotation)): s += f':{a}'
        if p.default is not p.empty: s += f'={_short_repr(p.default)}'
        params.append(s)
    ret = f' -> {_fmt_annotation(sig.return_annotation)}' if sig.return_annotation is not sig.empty else ''
    one = f'{name}({", ".join(params)}){ret}'
    return one if len(one) <= 100 else f'{name}(\n' + ''.join(f'    {p},\n' for p in params) + f'){ret}'

def _param_docs(obj) -> list[tuple[str, str, str]]:
    "(name, default, comment) of the parameters documented with fastcore's docments comments"
    try:
        from fastcore.docments import docments
        d = docments(obj, full=True)
    except Exception: return []
    rows = [(k, '' if v.get('default', inspect.Parameter.empty) is inspect.Parameter.empty else _short_repr(v['default']), v.get('docment') or '')
            for k, v in d.items() if k not in ('return', 'self')]
    return rows if any(c for _, _, c in rows) else []

def discover_modules(lib_name:str) -> list[str]:
    "Every module of the package, subpackages included, except private ones (`_modidx`, `_*`)"
    pkg = importlib.import_module(lib_name)
    names = [lib_name] + [m.name for m in pkgutil.walk_packages(pkg.__path__, f'{lib_name}.')]
    return [n for n in names if not any(part.startswith('_') for part in n.split('.'))]

def api_entry(site:Site, page:Page, md, mod, modname:str, name:str) -> str:
    full = f'{modname}.{name}'
    anchor = page.unique_id(full)
    if not hasattr(mod, name):
        site.warn(f'{modname}: `{name}` is in `__all__` but not defined')
        return ''
    obj = getattr(mod, name)
    defined_in = getattr(obj, '__module__', None) if (inspect.isclass(obj) or inspect.isroutine(obj)) else None
    loc = site.syms.get(full) or (site.syms.get(f'{defined_in}.{name}') if defined_in else None)
    if loc is None and modname in site.modules: loc = site.modules[modname] + (f'#{name.lower()}' if site.has_anchor(site.modules[modname], name.lower()) else '')
    title = f'<code>{esc(name)}</code>'
    if loc: title = f'<a href="{esc(loc)}">{title}</a>'
    parts = [f'<div class="api-entry" id="{esc(anchor)}"><h3>{title}</h3>']
    site.api_names.add(full)
    if inspect.isclass(obj) or callable(obj):
        parts.append(f'<pre class="sig">{esc(signature_str(name, obj))}</pre>')
        doc = inspect.getdoc(obj) if (inspect.isclass(obj) or inspect.isroutine(obj) or hasattr(obj, '__wrapped__')) else None
        if doc and not (inspect.isclass(obj) and doc == inspect.getdoc(object)):
            parts.append(f'<div class="doc">{md.render(doc, dict(site=site, page=page))}</div>')
        if rows := _param_docs(obj):
            parts.append('<table class="params"><tr><th>parameter</th><th>default</th><th></th></tr>' + ''.join(
                f'<tr><td><code>{esc(k)}</code></td><td><code>{esc(d)}</code></td><td>{esc(c)}</td></tr>' for k, d, c in rows) + '</table>')
        if inspect.isclass(obj):
            meths = [(k, v) for k, v in vars(obj).items() if not k.startswith('_') and inspect.isfunction(v)]
            for k, v in meths:
                mdoc = inspect.getdoc(v)
                parts.append(f'<div class="method"><pre class="sig">{esc(signature_str(f"{name}.{k}", v))}</pre>'
                             + (f'<div class="doc">{md.render(mdoc, dict(site=site, page=page))}</div>' if mdoc else '') + '</div>')
    else:
        if isinstance(obj, dict):
            keys = list(obj)
            val = f'dict of {len(keys)}: ' + ', '.join(map(str, keys[:40])) + (', ...' if len(keys) > 40 else '')
        else: val = f'{type(obj).__name__}: {_short_repr(obj, 200)}'
        parts.append(f'<pre class="sig">{esc(name)} = {esc(val)}</pre>')
    parts.append('</div>')
    return ''.join(parts)

def build_api(site:Site, md) -> Page:
    page = Page('api.html', 'API reference', group='Reference')
    sections, toc = [], []
    mods = []
    try: names = discover_modules(site.lib)
    except Exception as e:
        site.warn(f'{site.lib} does not import: {type(e).__name__}: {e}')
        names = []
    order = {p.module: i for i, p in enumerate(site.pages) if p.module}
    for modname in sorted(names, key=lambda n: (order.get(n, 10**6), n)):
        try: mod = importlib.import_module(modname)
        except Exception as e:
            site.warn(f'{modname} does not import: {type(e).__name__}: {e}')
            continue
        mods.append((modname, mod))
    page.ids |= {m for m, _ in mods}
    for modname, mod in mods:
        all_ = list(getattr(mod, '__all__', None) or [])
        if not all_ and not (mod.__doc__ or '').strip(): continue   # a package `__init__` with nothing of its own
        doc = '\n'.join(l for l in (mod.__doc__ or '').strip().splitlines() if not l.startswith('Docs: ')).strip()
        src_page = site.modules.get(modname) or next((p.name for p in site.pages if p.module == modname), None)
        link = f' (notebook: <a href="{esc(src_page)}">{esc(_page_by_name(site, src_page).title if _page_by_name(site, src_page) else src_page)}</a>)' if src_page else ''
        head = f'<section class="api-module"><h2 id="{esc(modname)}"><code>{esc(modname)}</code></h2>'
        head += f'<div class="doc">{md.render(doc, dict(site=site, page=page))}</div>' if doc else ''
        head += f'<p class="src">{len(all_)} public names{link}</p>'
        sections.append(head + ''.join(api_entry(site, page, md, mod, modname, n) for n in all_) + '</section>')
        page.toc.append(('h2', modname, f'`{modname}`'))
    page.description_html = 'Every module of <code>self_supervised</code> and the names of its <code>__all__</code>.'
    page.body = '\n'.join(sections)
    return page

def _page_by_name(site, name): return next((p for p in site.pages if p.name == name), None)

# ------------------------------------------------------------------ algorithm figures
def algo_figures(site:Site, md, n_images=4) -> dict:
    "Per algorithm of the registry: its augmentation views on `n_images` test images (a PNG), its callback's page, defaults and recipe"
    res = {}
    try:
        import torch, matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        from self_supervised.registry import ALGOS, ssl_args, algo_images
        from self_supervised.visual import draw_view_grid
        from self_supervised.data import fashion_mnist, ssl_dls
        ds = fashion_mnist()
    except Exception as e:
        site.warn(f'algorithm figures: {type(e).__name__}: {e}')
        return res
    (site.out/'figures').mkdir(parents=True, exist_ok=True)
    for algo, spec in ALGOS.items():
        try:
            torch.manual_seed(0)
            x = algo_images(algo, ds.test_x[:64])   # colour for the Lab methods
            dls = ssl_dls(x, x[:32], bs=32, device='cpu', with_idx=spec.get('with_idx', False))
            a = ssl_args(dls, algo)
            augs = spec['augs'](a)
            cb = spec['cb'](augs, a)
            pipes = getattr(cb, 'aug_pipelines', augs)
            fig, ax = plt.subplots(figsize=(max(3., 1.1 * (len(pipes) + 1)), max(2., 1.1 * n_images) + 0.4))
            with torch.no_grad(): draw_view_grid(ax, dls.valid.one_batch()[0][:n_images], pipes)
            fig.savefig(site.out/'figures'/f'{algo}.png', dpi=100, bbox_inches='tight', pad_inches=0.05); plt.close(fig)
        except Exception as e:
            site.warn(f'algorithm figure of `{algo}`: {type(e).__name__}: {e}')
            continue
        cls = type(cb)
        full = f'{cls.__module__}.{cls.__qualname__}'
        # its page from _modidx.py; if that is behind the notebooks, from the notebook exporting the class
        loc = site.syms.get(full) or next((f'{p.name}#{cls.__qualname__.lower()}' for p in site.pages
                                           if p.module == cls.__module__ and cls.__qualname__.lower() in p.ids), None)
        if loc is None:
            site.warn(f'algorithm `{algo}`: no notebook defines its callback {full}')
            continue
        params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != 'self'][1:]   # after aug_pipelines
        recipe = {p.name: getattr(cb, p.name) for p in params if hasattr(cb, p.name) and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        res[algo] = dict(page=loc.split('#')[0], anchor=loc.partition('#')[2], cls=cls.__name__, n_views=len(pipes),
                         sig=signature_str(cls.__name__, cls),
                         recipe={k: v for k, v in recipe.items() if _short_repr(v) != _short_repr(_default(params, k))},
                         temp=spec.get('temp'))
    return res

def _default(params, k): return next(p.default for p in params if p.name == k)

def algo_section(algo:str, info:dict, page:Page, site:Site, md) -> str:
    anchor = page.unique_id(f'registry-{algo}')
    changed = ', '.join(f'`{k}={_short_repr(v)}`' for k, v in info['recipe'].items()) or 'none'
    txt = (f"### The registry's `{algo}`\n\n`ssl_learner(dls, '{algo}')` and `ssl-pretrain --algo {algo}` train with `{info['cls']}` "
           f"and {info['n_views']} view{'s' if info['n_views'] > 1 else ''} per image, made by the recipe's pipelines "
           f"(here on four Fashion-MNIST test images, at 28 px). Settings of the recipe that differ from the defaults: {changed}.")
    body = md.render(txt, dict(site=site, page=page)).replace(f'<h3 id=', f'<h3 data-algo="{esc(algo)}" id=', 1)
    return (f'<section class="algo" id="{esc(anchor)}">{body}'
            f'<figure><img src="{rel(page.name, f"figures/{algo}.png")}" alt="augmented views of the {esc(algo)} recipe">'
            f'<figcaption>Views of the <code>{esc(algo)}</code> recipe: the input, then each view, one row per image.</figcaption></figure>'
            f'<p>Defaults of the callback:</p><pre class="sig">{esc(info["sig"])}</pre></section>')

# ------------------------------------------------------------------ link check
class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.links = set(), []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get('id'): self.ids.add(a['id'])
        if tag == 'a' and a.get('name'): self.ids.add(a['name'])
        for k in ('href', 'src'):
            if a.get(k) is not None: self.links.append(a[k])

def _external(url): return bool(re.match(r'^[a-zA-Z][a-zA-Z0-9+.-]*:', url)) or url.startswith('//')

def check_links(out:Path) -> list[str]:
    "Every `href`/`src` of the site's pages that points inside the site must exist, `#anchors` included"
    out = Path(out)
    pages = {}
    for p in sorted(out.rglob('*.html')):
        parser = _Links(); parser.feed(p.read_text(encoding='utf-8'))
        pages[p.relative_to(out).as_posix()] = parser
    bad = []
    for page, parser in pages.items():
        for url in parser.links:
            if _external(url): continue
            path, _, frag = url.partition('#')
            path = unquote(path.split('?')[0])
            target = posixpath.normpath(posixpath.join(posixpath.dirname(page), path)) if path else page
            if target.startswith('..'): bad.append(f'{page}: {url} (outside the site)'); continue
            if path and (out/target).is_dir(): target = posixpath.join(target, 'index.html')
            if not (out/target).is_file(): bad.append(f'{page}: {url} (no file {target})')
            elif frag:
                if target not in pages: bad.append(f'{page}: {url} (#anchor into a file that is not a page)')
                elif unquote(frag) not in pages[target].ids: bad.append(f'{page}: {url} (no id "{unquote(frag)}" in {target})')
    return bad

# ------------------------------------------------------------------ build
def _prepare_out(out:Path):
    if out.exists():
        if any(out.iterdir()) and not (out/MARKER).exists():
            raise SystemExit(f'{out} exists and was not made by tools/make_docs.py: remove it or choose another --out')
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out/MARKER).write_text('Generated by tools/make_docs.py: replaced on every build.\n')

def load_modidx(lib:Path) -> dict:
    ns = {}
    p = lib/'_modidx.py'
    if p.exists(): exec(compile(p.read_text(), str(p), 'exec'), ns)
    return ns.get('d', {})

def _group(module:str|None, lib:str) -> str:
    if module is None: return 'Other'
    parts = module[len(lib) + 1:].split('.') if module.startswith(lib + '.') else [module]
    return parts[0].replace('_', ' ').capitalize() if len(parts) > 1 else 'Core'

def build(out:Path, nbs:Path|None=None, execute=True, n_workers=2, api=True, figures=True, log=print) -> list[str]:
    "Build the site into `out` from the notebooks of `nbs`; the list of problems (empty: a good site)"
    t_start = time.time()
    cfg = nb_config()
    nbs = Path(nbs or cfg.nbs_path).resolve()
    out = Path(out).resolve()
    lib_name = cfg.get('lib_name', 'self_supervised')
    skip_flags = tuple(cfg.get('tst_flags', 'slow').split()) if isinstance(cfg.get('tst_flags', 'slow'), str) else tuple(cfg.tst_flags)
    files = notebooks(nbs)
    # the slowest notebooks of the last build (in `out` or the doc folder) start first: the workers end together
    last = next((json.loads(t.read_text()) for t in (out/TIMINGS, Path(cfg.doc_path)/TIMINGS) if t.is_file()), {})
    _prepare_out(out)
    site = Site(nbs, out, lib_name, cfg.get('title', lib_name))
    if not files: site.warn(f'no notebooks in {nbs}')

    # execution first, in other processes, while this one reads the notebooks, the library and makes the figures
    futures, pool = {}, None
    if execute and files:
        if n_workers > 0:
            threads = max(1, (os.cpu_count() or 1) // n_workers)
            pool = ProcessPoolExecutor(n_workers, mp_context=get_context('spawn'), initializer=_worker_init, initargs=(threads,))
            run = _executor()
            futures = {f: pool.submit(run, str(f), skip_flags, cfg.get('cell_timeout', 600))
                       for f in sorted(files, key=lambda f: -last.get(f.name, 0))}

    # pages, their anchors (the names each exported cell defines, spelled as in _modidx) and the symbols
    for f in files:
        cells = json.loads(f.read_text(encoding='utf-8'))['cells']
        title, desc, title_cell, default_exp = f.stem, '', None, None
        for i, c in enumerate(cells):
            src = _join(c.get('source'))
            if c['cell_type'] == 'markdown' and title_cell is None and split_title(src)[0]:
                title, desc, _ = split_title(src); title_cell = i
            if c['cell_type'] == 'code':
                dirs, _ = split_directives(src)
                if 'default_exp' in dirs and default_exp is None: default_exp = dirs['default_exp']
        page = Page(page_name(f, nbs), title, f, description=desc)
        page.cells, page.title_cell = cells, title_cell
        page.module = _lib_module(default_exp, lib_name)
        page.group = 'Getting started' if page.name == 'index.html' else _group(page.module, lib_name)
        for i, c in enumerate(cells):
            if c['cell_type'] != 'code': continue
            dirs, code = split_directives(_join(c.get('source')))
            if dirs.keys() & {'export', 'exporti', 'exports'}:
                anchors = []
                for n in _defined_names(code):
                    if n.lower() not in page.ids: page.ids.add(n.lower()); anchors.append((n.lower(), n))
                page.anchors[i] = anchors
        site.pages.append(page)
    # Getting started first, then the groups in the order of their first notebook
    first = {}
    for i, p in enumerate(site.pages): first.setdefault(p.group, -1 if p.group == 'Getting started' else i)
    site.pages.sort(key=lambda p: first[p.group])
    site.load_modidx(load_modidx(Path(cfg.lib_path)))
    for p in site.pages:
        if p.module: site.modules.setdefault(p.module, p.name)
    md = make_markdown()

    t0 = time.time()
    algos = algo_figures(site, md) if figures else {}
    for algo, info in algos.items():
        page = _page_by_name(site, info['page'])
        if page is None: site.warn(f'algorithm `{algo}`: its callback\'s page {info["page"]} is not among the notebooks'); continue
        cell = next((i for i, anc in page.anchors.items() if any(a == info['anchor'] for a, _ in anc)), None)
        html_ = algo_section(algo, info, page, site, md)
        if cell is None: page.end.append(html_)
        else: page.after[cell] = page.after.get(cell, '') + html_
    if figures: log(f'figures of {len(algos)} algorithms in {time.time() - t0:.1f}s')

    t0 = time.time()
    api_page = build_api(site, md) if api else None
    if api: log(f'API reference in {time.time() - t0:.1f}s')
    if api_page: site.pages.append(api_page)

    # outputs, then the pages
    results = {}
    if execute and files:
        if pool is None:
            for f in files: results[f] = execute_nb(str(f), skip_flags, cfg.get('cell_timeout', 600))
        else:
            for f, fut in futures.items():
                try: results[f] = fut.result()
                except Exception as e: results[f] = dict(outputs=None, error=f'{type(e).__name__}: {e}', seconds=0)
            pool.shutdown()
        (out/TIMINGS).write_text(json.dumps({f.name: round(r['seconds'], 1) for f, r in results.items()}, indent=1))
        for f, r in results.items():
            if r['error']: site.warn(f'{f.relative_to(nbs)} failed to execute:\n{r["error"].strip()}')
        slow = sorted(results.items(), key=lambda kv: -kv[1]['seconds'])
        log(f'executed {len(results)} notebooks, slowest: ' + ', '.join(f'{f.name} {r["seconds"]:.0f}s' for f, r in slow[:5]))

    for page in site.pages:
        if page is api_page: body = page.body
        else:
            r = results.get(page.nb)
            page.description_html = md.renderInline(page.description, dict(site=site, page=page)) if page.description else ''
            body = render_page_body(page, site, md, r['outputs'] if r and r['outputs'] is not None else None, skip_flags, ran=bool(r))
        (out/page.name).parent.mkdir(parents=True, exist_ok=True)
        (out/page.name).write_text(page_html(site, page, body), encoding='utf-8')
    for dest, src in site.copies.items():
        (out/dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out/dest)
    write_assets(out)
    site.problems += [f'broken link: {b}' for b in check_links(out)]
    log(f'{len(site.pages)} pages in {out} in {time.time() - t_start:.0f}s')
    return site.problems

def write_assets(out:Path):
    from pygments.formatters import HtmlFormatter
    (out/'assets').mkdir(exist_ok=True)
    for f in assets_dir.glob('*'):
        if f.is_file(): shutil.copyfile(f, out/'assets'/f.name)
    (out/'assets'/'pygments.css').write_text(HtmlFormatter(style='friendly').get_style_defs('.highlight'))

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', help='output folder (default: doc_path of the nbdev config, _docs)')
    ap.add_argument('--nbs', help='notebook folder (default: nbs_path of the nbdev config, nbs)')
    ap.add_argument('--no-exec', action='store_true', help='do not run the notebooks (pages show the outputs stored in them)')
    ap.add_argument('--n-workers', type=int, default=2, help='notebooks run in parallel (0: in this process)')
    ap.add_argument('--check', action='store_true', help='build into a temporary folder, report, remove it')
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix='make_docs_') if args.check else None
    out = Path(tmp)/'site' if tmp else Path(args.out or nb_config().doc_path)
    try: problems = build(out, args.nbs, execute=not args.no_exec, n_workers=args.n_workers)
    finally:
        if tmp: shutil.rmtree(tmp, ignore_errors=True)
    if problems:
        print(f'\n{len(problems)} problem(s):', file=sys.stderr)
        for p in problems: print(f'- {p}', file=sys.stderr)
        sys.exit(1)
    print('No problems.' + ('' if args.check else f' Open {out/"index.html"}'))

if __name__ == '__main__': main()
