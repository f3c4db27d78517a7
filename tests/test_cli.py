"The `ssl-pretrain` command end to end on a small subset, and its errors"
import json, os, subprocess, sys
from pathlib import Path
import pytest, torch
from self_supervised.cli import ssl_pretrain, ALGOS
from self_supervised.layers import small_resnet
from self_supervised.layers import load_encoder

SMALL = ['--n-train', '768', '--epochs', '1', '--bs', '128', '--n-test', '400', '--n-probe', '400']

def run_cli(*args, env=None):
    exe = Path(sys.executable).parent/'ssl-pretrain'
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})

def test_cli_end_to_end(tmp_path):
    r = run_cli(*SMALL, '--out', str(tmp_path), '--threads', '2')
    assert r.returncode == 0, r.stderr[-3000:]
    # the table: one row for the random encoder, one for the pretrained one, kNN and linear columns
    assert '| encoder | knn accuracy | linear accuracy |' in r.stdout
    rows = [l for l in r.stdout.splitlines() if l.startswith('| random') or l.startswith('| simclr')]
    assert len(rows) == 2
    res = json.loads((tmp_path/'results.json').read_text())['results']
    for name in ('random', 'simclr'):
        for k in ('knn', 'linear'): assert 0.1 <= res[name][k] <= 1.0   # above chance (10 classes) on a tiny run
    assert (tmp_path/'simclr.png').stat().st_size > 10_000
    # the saved weights are the trained encoder's and load into a fresh one
    enc = load_encoder(small_resnet(1, 16), tmp_path/'encoder.safetensors')
    fresh = small_resnet(1, 16)
    assert any(not torch.equal(a, b) for a, b in zip(enc.state_dict().values(), fresh.state_dict().values()))

def test_cli_unknown_algo(tmp_path):
    r = run_cli('--algo', 'simclr2', '--out', str(tmp_path))
    assert r.returncode != 0 and 'simclr' in (r.stderr + r.stdout) and 'choose one of' in (r.stderr + r.stdout)

def test_cli_batch_larger_than_data(tmp_path):
    r = run_cli('--n-train', '64', '--bs', '128', '--out', str(tmp_path))
    assert r.returncode != 0 and '--bs 128 is larger than the training set' in r.stderr

def test_cli_unknown_arch(tmp_path):
    r = run_cli('--arch', 'resnet181', '--n-train', '256', '--out', str(tmp_path))
    assert r.returncode != 0 and 'Close matches' in r.stderr and 'resnet18' in r.stderr

def test_cli_missing_data(no_fmnist):
    "No --data and no Fashion-MNIST anywhere: the three ways to get it; an explicit folder is used or refused, never replaced"
    with pytest.raises(SystemExit) as e: ssl_pretrain(out=str(no_fmnist/'out'))
    for hint in ('apt-get install dataset-fashion-mnist', 'SSL_DATA', 'download_fashion_mnist'): assert hint in str(e.value)
    empty = no_fmnist/'empty'; empty.mkdir()
    with pytest.raises(SystemExit) as e: ssl_pretrain(data=str(empty), out=str(no_fmnist/'out'))
    assert f'--data: `path={empty}` holds no image files' in str(e.value)

def test_registry_builds_every_algo():
    "The CLI offers every image recipe of the registry, each with its model, views and callback builders"
    from self_supervised.registry import recipes
    assert list(ALGOS) == list(recipes('image')) and len(ALGOS) >= 26
    for name, spec in ALGOS.items(): assert all(callable(f) for f in (spec.model, spec.views, spec.callback)), name
