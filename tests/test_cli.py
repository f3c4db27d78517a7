"The `ssl-pretrain` command end to end on a small subset, and its errors"
import json, os, re, subprocess, sys
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

# --- runs that are never lost: checkpoints, resume, run folders, non-finite losses, argument checks

TINY = dict(n_train=256, bs=64, n_test=100, probe=False, threads=2)

def fit_with(monkeypatch, cb):
    "Make every `ssl_pretrain` learner carry the callback `cb` as well"
    import self_supervised.cli as cli
    real = cli.ssl_learner
    def with_cb(*args, **kwargs):
        learn = real(*args, **kwargs); learn.add_cb(cb); return learn
    monkeypatch.setattr(cli, 'ssl_learner', with_cb)

def weights(path):
    from safetensors.torch import load_file
    return load_file(str(path))

@pytest.mark.parametrize('algo', ['simclr', 'moco'])
def test_cli_resume_ends_like_an_uninterrupted_run(algo, tmp_path, monkeypatch, capsys):
    from fastai.callback.core import Callback
    straight = ssl_pretrain(algo=algo, epochs=2, out=str(tmp_path/'a'), **TINY)
    class CtrlC(Callback):
        def before_epoch(self):
            if self.epoch == 1: raise KeyboardInterrupt
    with monkeypatch.context() as m:
        fit_with(m, CtrlC())
        with pytest.raises(SystemExit) as e: ssl_pretrain(algo=algo, epochs=2, out=str(tmp_path/'b'), **TINY)
    assert e.value.code == 130
    err = capsys.readouterr().err
    assert f"{tmp_path/'b'/'checkpoint.pth'} holds its 1 finished epoch(s)" in err
    cmd = err.split('Continue with:')[1].strip()
    assert cmd == f"ssl-pretrain {'' if algo == 'simclr' else f'--algo {algo} '}--epochs 2 --bs 64 --n-train 256 --n-test 100 --probe false --threads 2 --out {tmp_path/'b'} --resume"
    run = json.loads((tmp_path/'b'/'run.json').read_text())
    assert run['epochs_done'] == 1 and not run['finished'] and not (tmp_path/'b'/'encoder.safetensors').exists()
    if algo == 'simclr':   # the printed command itself, in a shell's process
        import shlex
        r = run_cli(*shlex.split(cmd)[1:])
        assert r.returncode == 0 and 'Resuming the run' in r.stdout, r.stderr[-2000:]
        resumed = json.loads((tmp_path/'b'/'results.json').read_text())['results']
    else: resumed = ssl_pretrain(algo=algo, epochs=2, out=str(tmp_path/'b'), resume=True, **TINY)
    a, b = weights(tmp_path/'a'/'encoder.safetensors'), weights(tmp_path/'b'/'encoder.safetensors')
    assert a.keys() == b.keys()
    for k in a: torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    assert resumed['random'] == straight['random'] and abs(resumed[algo]['knn'] - straight[algo]['knn']) < 0.02
    assert json.loads((tmp_path/'b'/'run.json').read_text())['finished']

def test_cli_run_folders(tmp_path, capsys):
    "One run per folder: another run is refused unless --force; --resume only with the run's arguments and only if unfinished"
    out = str(tmp_path/'run')
    ssl_pretrain(epochs=1, out=out, **TINY)
    before = weights(tmp_path/'run'/'encoder.safetensors')
    with pytest.raises(SystemExit, match=r'holds the outputs of another run \(run.json, checkpoint.pth, encoder.safetensors, results.json\).*--force to overwrite it'):
        ssl_pretrain(algo='byol', epochs=1, out=out, **TINY)
    assert all(torch.equal(v, weights(tmp_path/'run'/'encoder.safetensors')[k]) for k, v in before.items())   # untouched
    with pytest.raises(SystemExit, match='finished its 1 epochs: nothing to resume'): ssl_pretrain(epochs=1, out=out, resume=True, **TINY)
    with pytest.raises(SystemExit, match=r"started with other arguments:\n  --algo: 'simclr' in the run, 'byol' now\n  --lr: None in the run, 0.002 now"):
        ssl_pretrain(algo='byol', lr=2e-3, epochs=1, out=out, resume=True, **TINY)
    with pytest.raises(SystemExit, match='pass one of them'): ssl_pretrain(out=out, resume=True, force=True)
    with pytest.raises(SystemExit, match='holds no run to resume'): ssl_pretrain(out=str(tmp_path/'new'), resume=True)
    ssl_pretrain(algo='byol', epochs=1, out=out, force=True, **TINY)
    assert json.loads((tmp_path/'run'/'results.json').read_text())['args']['algo'] == 'byol'

def test_cli_out_not_writable_fails_before_training(tmp_path):
    (tmp_path/'file').write_text('')
    import time; t0 = time.time()
    with pytest.raises(SystemExit, match=r'--out .*file/run: cannot write there .*pass a folder this run can write to'):
        ssl_pretrain(out=str(tmp_path/'file'/'run'), **TINY)
    assert time.time() - t0 < 5   # no data read, nothing trained

def test_cli_non_finite_stops_and_exports_nothing(tmp_path, monkeypatch):
    from fastai.callback.core import Callback
    class Poison(Callback):
        "What a diverging run does: a weight becomes NaN after a few steps"
        def after_step(self):
            if self.train_iter == 2:
                with torch.no_grad(): next(self.model.parameters()).fill_(float('nan'))
    fit_with(monkeypatch, Poison())
    with pytest.raises(SystemExit, match=r'(?s)No encoder was exported; the last finished epoch is in'):
        ssl_pretrain(epochs=1, out=str(tmp_path), **TINY)
    assert not (tmp_path/'encoder.safetensors').exists() and not (tmp_path/'results.json').exists()

CLI_ARGS = [   # arguments, what the message must say
    (dict(bs=0), r'--bs 0: must be at least 2'),
    (dict(bs=-1), r'--bs -1: must be at least 2'),
    (dict(epochs=0), r'--epochs 0: must be at least 1'),
    (dict(epochs=-1), r'--epochs -1: must be at least 1'),
    (dict(lr=float('nan')), r'--lr nan: must be a finite number above 0'),
    (dict(lr=-1e-3), r'--lr -0.001: must be a finite number above 0'),
    (dict(temp=float('inf')), r'--temp inf: must be a finite number above 0'),
    (dict(algo='byol', temp=0.5), r'--temp: --algo byol has no temperature'),
    (dict(labelled=0.5), r'--labelled: --algo simclr trains without labels'),
    (dict(min_scale=2.), r'--min-scale 2.0: must be a fraction of the image area, in \(0, 1\]'),
    (dict(width=0), r'--width 0: must be at least 1'),
    (dict(arch='resnet18', width=32), r'--width sets the width of small_resnet, not of --arch resnet18'),
    (dict(threads=-1), r'--threads -1: must be at least 1'),
    (dict(n_test=0), r'--n-test 0: must be at least 1'),
    (dict(n_probe=0), r'--n-probe 0: must be at least 2'),
    (dict(size=4), r'--size 4: must be at least 8'),
    (dict(pool='bogus'), r"--pool 'bogus': choose one of .*avg.*catavgmax"),
    (dict(preset='quick'), r"--preset 'quick': choose one of fast"),
    (dict(precision='half'), r"--precision 'half': choose one of fp32, bf16, auto"),
    (dict(preset='fast', temp=0.), r'--temp 0.0: must be a finite number above 0'),   # the preset's values and the given ones are checked alike
]

@pytest.mark.parametrize('args,msg', CLI_ARGS, ids=[' '.join(f'{k}={v}' for k, v in a.items()) for a, _ in CLI_ARGS])
def test_cli_checks_arguments_before_reading_data(args, msg, no_fmnist):
    "Checked first: a machine without the data still gets the argument's message"
    with pytest.raises(SystemExit) as e: ssl_pretrain(out=str(no_fmnist/'out'), **args)
    assert re.search(msg, str(e.value)), str(e.value)
    assert not (no_fmnist/'out'/'run.json').exists()

def test_cli_preset_given_arguments_win_and_curve(tmp_path, capsys):
    "`--preset fast` sets what is not given (and says so); `--curve` records kNN against training time, first and last points the table's"
    from self_supervised.cli import PRESETS, cpu_has_bf16
    res = ssl_pretrain(preset='fast', epochs=3, size=24, curve=True, out=str(tmp_path), **TINY)
    out = capsys.readouterr().out
    said = ', '.join(f"--{k.replace('_', '-')} {v}" for k, v in PRESETS['fast'].items() if k not in {'size', 'epochs', *TINY})   # not the ones given
    assert f'--preset fast: {said}\n' in out
    args = json.loads((tmp_path/'results.json').read_text())['args']
    assert (args['size'], args['epochs'], args['algo'], args['preset'], args['channels_last']) == (24, 3, PRESETS['fast']['algo'], 'fast', True)
    assert args['precision'] == ('bf16' if cpu_has_bf16() else 'fp32')
    pts = json.loads((tmp_path/'curve.json').read_text())
    assert [p['epoch'] for p in pts] == [0, 1, 2, 3]
    assert all(a['seconds'] < b['seconds'] for a, b in zip(pts, pts[1:]))
    assert pts[0]['knn'] == res['random']['knn'] and pts[-1]['knn'] == res[args['algo']]['knn']
    assert json.loads((tmp_path/'results.json').read_text())['curve'] == pts
    assert (tmp_path/'curve.png').stat().st_size > 5_000 and '| 3 |' in out.split('kNN accuracy against training time')[1]

def test_cli_curve_survives_resume(tmp_path, monkeypatch):
    "A run interrupted after epoch 2 of 3 keeps its curve's points and goes on from their training time"
    from fastai.callback.core import Callback
    class CtrlC(Callback):
        def before_epoch(self):
            if self.epoch == 2: raise KeyboardInterrupt
    with monkeypatch.context() as m:
        fit_with(m, CtrlC())
        with pytest.raises(SystemExit): ssl_pretrain(epochs=3, curve=True, out=str(tmp_path), **TINY)
    first = json.loads((tmp_path/'curve.json').read_text())
    assert [p['epoch'] for p in first] == [1, 2]
    ssl_pretrain(epochs=3, curve=True, out=str(tmp_path), resume=True, **TINY)
    pts = json.loads((tmp_path/'curve.json').read_text())
    assert [p['epoch'] for p in pts] == [0, 1, 2, 3] and pts[1:3] == first
    assert pts[3]['seconds'] > pts[2]['seconds']

def test_cli_curve_needs_labels(tmp_path):
    "An image folder without class subfolders has nothing to draw the curve with: refused before training"
    from PIL import Image
    import numpy as np
    for i in range(40): Image.fromarray(np.random.randint(0, 255, (24, 24), dtype=np.uint8)).save(tmp_path/f'{i}.png')
    with pytest.raises(SystemExit, match=r'--curve plots the kNN accuracy after each epoch: The images of .* are not in class subfolders'):
        ssl_pretrain(data=str(tmp_path), curve=True, size=16, bs=8, epochs=1, out=str(tmp_path/'run'), workers=0)
    assert not (tmp_path/'run'/'checkpoint.pth').exists()
