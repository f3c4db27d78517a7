"""Every algorithm of the registry (`self_supervised.registry.ALGOS`) against the same checklist.

A new algorithm is covered by adding it to `ALGOS`: it must resume exactly from a checkpoint, train without
NaN/Inf in bfloat16 autocast, and survive fastai's usual calls (`summary`, `lr_find`, `fit_one_cycle`,
`fit_flat_cos`, `validate`, `get_preds`, the callback's `show`, `SaveModelCallback`, `export`/`load_learner`).
"""
from pathlib import Path
import pytest, torch
import matplotlib; matplotlib.use('Agg')
import matplotlib.pyplot as plt
from fastai.callback.schedule import fit_flat_cos   # a Learner method
from fastai.callback.tracker import SaveModelCallback
from self_supervised.training import CPUMixedPrecision
from self_supervised.registry import ALGOS
from fastai.callback.core import Callback
from fastai.torch_core import set_seed
from self_supervised.callback import SeedEpochs, check_resume, _assert_same
from fastai_checks import fit_with_fastai_calls, assert_validates, assert_export_roundtrip, tiny_learner, ssl_cb

def _all_finite(p) -> bool:
    "Every tensor in `p` (a tensor, nested tuples or lists of them, or None) is finite"
    if p is None: return True
    if torch.is_tensor(p): return bool(torch.isfinite(p.float()).all())
    return all(_all_finite(q) for q in p)

@pytest.mark.parametrize('algo', list(ALGOS))
def test_resumes_exactly(algo):
    "2 epochs straight == 1 epoch, save, fresh Learner, load, 1 more: parameters and all callback state"
    straight, resumed = check_resume(lambda: tiny_learner(algo, init_seed=None))   # check_resume seeds the initialisations
    assert resumed.train_iter == straight.train_iter // 2   # the resumed run really trained only the second epoch

@pytest.mark.parametrize('algo', list(ALGOS))
def test_bf16_autocast_stays_finite(algo):
    "Mixed precision (bfloat16 autocast on the CPU): the losses are computed in float32 and stay finite (200 steps: bench/reliability.py)"
    learn = tiny_learner(algo)
    learn.add_cb(CPUMixedPrecision())
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-3)   # 8 steps
    losses = torch.tensor([float(l) for l in learn.recorder.losses])
    assert torch.isfinite(losses).all(), f"{algo}: non-finite loss in bf16"
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())

@pytest.mark.parametrize('algo', list(ALGOS))
def test_fastai_calls(algo, tmp_path):
    learn = tiny_learner(algo, path=tmp_path)
    fit_with_fastai_calls(learn, num_it=6)
    with learn.no_bar(), learn.no_logging():
        learn.fit_flat_cos(1, 1e-3)
        learn.fit(1, 1e-3, cbs=SaveModelCallback(every_epoch=True, fname='ckpt', with_opt=True))
    assert (tmp_path/'models'/'ckpt_0.pth').exists()
    assert_validates(learn)
    # what `show_results` starts with (predictions on the validation set), and the callback's own grid of views
    preds = learn.get_preds()[0]
    assert _all_finite(preds)
    if torch.is_tensor(preds): assert len(preds) == len(learn.dls.valid.dataset)
    ssl_cb(learn).show(n=2)
    assert len(plt.gcf().axes) == 2 * (1 + len(ssl_cb(learn).aug_pipelines))   # each image and each of its views
    plt.close('all')
    # a checkpoint written by SaveModelCallback restores the callback's state into a fresh Learner
    fresh = tiny_learner(algo, seed=1, path=tmp_path)
    fresh.load('ckpt_0')
    sd0, sd1 = ssl_cb(learn).state_dict(), ssl_cb(fresh).state_dict()
    assert sd0.keys() == sd1.keys()

@pytest.mark.parametrize('algo', list(ALGOS))
def test_export_and_load_learner(algo, tmp_path):
    "`learn.export()` pickles the Learner with its callback; `load_learner` gives back one that still predicts"
    learn = tiny_learner(algo, path=tmp_path)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    back = assert_export_roundtrip(learn, tmp_path)
    assert isinstance(ssl_cb(back), type(ssl_cb(learn)))

class _Crash(Callback):
    "Raises `exc` at batch `it` of epoch `epoch` (an interruption in the middle of an epoch)"
    order = 0
    def __init__(self, epoch, it, exc): self.e, self.i, self.exc = epoch, it, exc
    def before_batch(self):
        if self.training and self.epoch == self.e and self.iter == self.i: raise self.exc

@pytest.mark.parametrize('algo', list(ALGOS))
def test_interrupted_mid_epoch_resumes_from_last_checkpoint(algo, tmp_path):
    "A KeyboardInterrupt in epoch 2 leaves epoch 1's checkpoint (SaveModelCallback) readable, and resuming from it ends where a straight run ends"
    def run(*cbs, start_epoch=0, load=None, seed=0):
        set_seed(seed)
        learn = tiny_learner(algo, init_seed=None, path=tmp_path)
        if load: learn.load(load)
        with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-3, cbs=[SeedEpochs(0), *cbs], start_epoch=start_epoch)
        return learn
    straight = run()
    with pytest.raises(KeyboardInterrupt):
        run(SaveModelCallback(every_epoch=True, with_opt=True, fname='ckpt'), _Crash(1, 2, KeyboardInterrupt()))
    resumed = run(start_epoch=1, load='ckpt_0', seed=1)
    _assert_same(straight.model.state_dict(), resumed.model.state_dict(), 1e-6, 'model')
    _assert_same(ssl_cb(straight).state_dict(), ssl_cb(resumed).state_dict(), 1e-6, algo)

def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    "Checkpoints are written to a temporary file then renamed: a crash in the middle of a save leaves the old one intact"
    learn = tiny_learner('moco', path=tmp_path)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    learn.save('ckpt')
    before = (tmp_path/'models'/'ckpt.pth').read_bytes()
    def half_write(obj, f, *args, **kwargs):
        Path(f).write_bytes(b'partial'); raise OSError('disk full')
    monkeypatch.setattr(torch, 'save', half_write)
    with pytest.raises(OSError, match='disk full'): learn.save('ckpt')
    monkeypatch.undo()
    assert (tmp_path/'models'/'ckpt.pth').read_bytes() == before
    assert sorted(p.name for p in (tmp_path/'models').iterdir()) == ['ckpt.pth']   # no temporary file left behind
    tiny_learner('moco', seed=1, path=tmp_path).load('ckpt')
