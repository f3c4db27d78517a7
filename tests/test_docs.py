"tools/make_docs.py: the site builds without problems, its link check catches broken links, the API page and the algorithm figures are there"
import html, importlib, inspect, json, re, shutil, sys
from pathlib import Path
import pytest, torch

root = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(root/'tools'))
import make_docs

def text_of(s): return html.unescape(re.sub(r'<[^>]+>', '', s))

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "The real site, built without running the notebooks"
    out = tmp_path_factory.mktemp('docs')/'site'
    return out, make_docs.build(out, execute=False, log=lambda *a: None)

def test_real_site_has_no_problems(site):
    out, problems = site
    assert problems == [], '\n'.join(problems)
    # one page per notebook, named as nbdev names them (the links of _modidx.py point there), all in the sidebar
    nbs = sorted(p for p in (root/'nbs').glob('*.ipynb') if not p.name.startswith(('_', '.')))
    idx = (out/'index.html').read_text()
    for nb in nbs:
        name = re.sub(r'^\d+[a-zA-Z0-9]*_', '', nb.stem.lower()) + '.html'
        assert (out/name).is_file(), name
        assert f'href="{name}"' in idx, name
    assert 'href="api.html"' in idx and 'id="benchmarks"' in idx
    # no `#|` directive line is shown in any code block
    for p in out.glob('*.html'):
        for block in re.findall(r'<div class="code">(.*?)</div></div>', p.read_text(), re.S):
            assert not re.search(r'^\s*#\|', text_of(block), re.M), p.name

def test_link_check_finds_broken_links(site, tmp_path):
    out = tmp_path/'site'
    shutil.copytree(site[0], out)
    page = out/'simclr.html'
    broken = ['missing.html', 'losses.html#no-such-anchor', 'figures/none.png', '#nowhere', '../outside.html']
    fine = ['https://example.com/x.html', 'index.html#benchmarks', 'losses_contrastive.html#nt_xent_loss', 'figures/simclr.png', '#simclr', 'mailto:a@b.c']
    links = ''.join(f'<a href="{u}">x</a>' for u in broken[:2] + broken[3:] + fine) + '<img src="figures/none.png">'
    page.write_text(page.read_text().replace('</main>', links + '</main>'))
    bad = make_docs.check_links(out)
    assert len(bad) == len(broken), bad
    for u, b in zip(sorted(broken), sorted(bad, key=lambda b: b.split(' ')[1])):
        assert b.startswith(f'simclr.html: {u} ('), (u, b)

def test_api_reference(site):
    out, _ = site
    api = (out/'api.html').read_text()
    from self_supervised.losses import nt_xent_loss
    entry = api.split('id="self_supervised.losses.nt_xent_loss"')[1].split('class="api-entry"')[0]
    txt = text_of(entry)
    assert inspect.getdoc(nt_xent_loss).replace('`', '') in txt
    for p in inspect.signature(nt_xent_loss).parameters.values(): assert f'{p.name}:' in txt and (p.default is p.empty or f'={p.default!r}' in txt)
    assert 'href="losses_contrastive.html#nt_xent_loss"' in entry
    # the modules are found, not listed: every .py file of the package (but private ones) has its section,
    # and every name of its __all__ an entry
    files = [f for f in (root/'self_supervised').rglob('*.py') if not any(s.startswith('_') for s in f.relative_to(root).with_suffix('').parts)]
    mods = ['.'.join(f.relative_to(root).with_suffix('').parts) for f in files]
    assert any(m.startswith('self_supervised.vision.') for m in mods) and any(m.startswith('self_supervised.timeseries.') for m in mods)
    for m in mods:
        names = getattr(importlib.import_module(m), '__all__', [])
        if names: assert f'<h2 id="{m}">' in api, m
        for n in names: assert f'id="{m}.{n}"' in api, f'{m}.{n}'

def test_every_algorithm_has_its_figure(site):
    out, _ = site
    from self_supervised.registry import ALGOS, ssl_args
    from self_supervised.data import ssl_dls
    modidx = importlib.import_module('self_supervised._modidx').d['syms']
    dls = ssl_dls((torch.rand(64, 1, 28, 28) * 255).byte(), bs=32, device='cpu')
    for algo, spec in ALGOS.items():
        a = ssl_args(dls, algo)
        cls = type(spec.callback(spec.views(a), a))
        page = modidx[cls.__module__][f'{cls.__module__}.{cls.__name__}'][0].split('#')[0]
        png = out/'figures'/f'{algo}.png'
        assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and png.stat().st_size > 5000, algo
        s = (out/page).read_text()
        assert f'src="figures/{algo}.png"' in s, (algo, page)
        section = text_of(s.split(f'id="registry-{algo}"')[1].split('</section>')[0])
        assert f'{cls.__name__}(' in section
        params = list(inspect.signature(cls).parameters.values())[1:]
        for p in params:   # the callback's defaults are shown
            if p.default is not p.empty: assert re.search(rf'\b{p.name}(:[^=\n]*)?={re.escape(repr(p.default)[:20])}', section), (algo, p, section)

def _nb(*cells):
    mk = lambda t, s: dict(cell_type=t, metadata={}, source=s.splitlines(True), **(dict(outputs=[], execution_count=None) if t == 'code' else {}))
    return json.dumps(dict(cells=[mk(*c) for c in cells], nbformat=4, nbformat_minor=5,
                           metadata=dict(kernelspec=dict(display_name='python3', language='python', name='python3'))))

@pytest.fixture
def tiny_nbs(tmp_path):
    nbs = tmp_path/'nbs'; nbs.mkdir()
    (nbs/'00_alpha.ipynb').write_text(_nb(
        ('markdown', '# Alpha\n> A tiny notebook'),
        ('code', '#| hide\nSECRET_HIDDEN = 1\nprint("hidden-output")'),
        ('code', '#| export\ndef alpha(x:int=1):\n    "Doc of alpha"\n    return x'),
        ('code', 'print(alpha(41) + 1)'),
        ('code', '#| slow\nprint("slow-" + "output")'),
        ('code', '#| eval: false\nprint("never-" + "run")'),
        ('code', 'import matplotlib.pyplot as plt\nplt.plot([0, 1]);'),
        ('markdown', 'Math $a_i * b_i$ and $c_i * d$; see [beta](01_beta.ipynb), [gone](02_gone.ipynb), [here](#no-anchor), [sec](#alpha-section)\n\n## Alpha section'),
    ))
    (nbs/'01_beta.ipynb').write_text(_nb(('markdown', '# Beta'), ('code', 'raise ValueError("boom")')))
    return nbs

def test_tiny_site_executed(tiny_nbs, tmp_path):
    out = tmp_path/'out'
    problems = make_docs.build(out, nbs=tiny_nbs, execute=True, n_workers=1, api=False, figures=False, log=lambda *a: None)
    assert len(problems) == 4, problems   # the link to the missing notebook is also a broken link
    assert 'broken link: alpha.html: 02_gone.ipynb (no file 02_gone.ipynb)' in problems
    assert 'alpha.ipynb: markdown link to a missing notebook: 02_gone.ipynb' in '\n'.join(problems)
    assert any(p.startswith('01_beta.ipynb failed to execute') and 'boom' in p for p in problems)
    assert 'broken link: alpha.html: #no-anchor (no id "no-anchor" in alpha.html)' in problems
    s = (out/'alpha.html').read_text()
    assert '42' in text_of(s) and 'hidden-output' not in s and 'SECRET_HIDDEN' not in s
    assert 'slow-output' not in s and 'never-run' not in s and 'nbdev-test --flags slow' in s
    assert '#| export' not in text_of(s) and 'id="alpha"' in s
    assert r'\(a_i * b_i\)' in s and '<em>' not in s
    assert 'href="beta.html"' in s and 'href="#alpha-section"' in s
    imgs = re.findall(r'<img src="(outputs/[^"]+\.png)"', s)
    assert len(imgs) == 1 and (out/imgs[0]).read_bytes()[:4] == b'\x89PNG'
    assert 'ValueError' in (out/'beta.html').read_text()

def test_cli_exits_with_the_problems(tiny_nbs, capsys):
    with pytest.raises(SystemExit) as e: make_docs.main(['--check', '--no-exec', '--nbs', str(tiny_nbs)])
    assert e.value.code == 1
    assert 'markdown link to a missing notebook: 02_gone.ipynb' in capsys.readouterr().err
