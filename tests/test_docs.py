"The docs render the nbdev way: nbdev's processing of every notebook and `show_doc` of every export find no problem, and the checks can fail"
import json, subprocess, sys
from pathlib import Path
import pytest

root = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(root/'tools'))
import check_docs

def test_nbdev_processes_every_notebook():
    "What `nbdev-docs` runs before Quarto: nbdev-proc-nbs (show_doc of the exports, the cells rendering executes), no error or warning"
    problems = check_docs.process(root/'_proc')
    assert problems == [], '\n'.join(problems)
    assert check_docs.check_links(root/'_proc') == []
    assert {check_docs.page_name(p) for p in (root/'nbs').glob('*.ipynb')} >= {'index.html', 'registry.html', 'losses_contrastive.html'}

def test_show_doc_renders_every_export():
    assert check_docs.check_show_doc() == []

def _nb(path, *md):
    path.write_text(json.dumps(dict(cells=[dict(cell_type='markdown', metadata={}, source=[m]) for m in md], metadata={}, nbformat=4, nbformat_minor=5)))

def test_link_check_finds_broken_links(tmp_path):
    _nb(tmp_path/'10_simclr.ipynb', 'See [the losses](losses_contrastive.html#nt_xent_loss), [moco](moco.html), [a paper](https://arxiv.org/abs/2002.05709), [below](#usage).')
    _nb(tmp_path/'03b_losses_contrastive.ipynb', 'Back to [SimCLR](simclr.html) and [nowhere](missing.html), [a figure](images/none.png).')
    problems = check_docs.check_links(tmp_path)
    assert problems == ['03b_losses_contrastive.ipynb: broken link to `missing.html`', '03b_losses_contrastive.ipynb: broken link to `images/none.png`',
                        '10_simclr.ipynb: broken link to `moco.html`']

def test_processing_warnings_are_problems(monkeypatch, tmp_path):
    "A cell that mixes imports with code (nbdev executes it while rendering) fails the check, as a failed processing does"
    out = ".venv/lib/python3.11/site-packages/nbdev/processors.py:242: UserWarning: Found cells containing imports and other code. See FAQ.\n"
    monkeypatch.setattr(subprocess, 'run', lambda *a, **k: subprocess.CompletedProcess(a, 0, '', out))
    assert check_docs.process(tmp_path) == [out.strip().split('site-packages/')[1] + ' (nbdev-proc-nbs)']
    monkeypatch.setattr(subprocess, 'run', lambda *a, **k: subprocess.CompletedProcess(a, 1, '', 'Exception: Error in notebook: x'))
    assert 'failed (exit 1)' in check_docs.process(tmp_path)[0]
