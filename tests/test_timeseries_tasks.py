"""Every sequence SSL task of `self_supervised.timeseries.registry.TS_ALGOS` against the same checklist.

A new task is covered by adding it to `TS_ALGOS`: it must resume exactly from a checkpoint (model, optimiser
and callback state), train without NaN/Inf in bfloat16 autocast on the CPU, and survive fastai's usual calls
(`summary`, `lr_find`, `fit_one_cycle`, `validate`, `export`/`load_learner`).
"""
import math
import pytest, torch
from fastai.torch_core import set_seed
from self_supervised.training import CPUMixedPrecision
from self_supervised.callback import SSLCallback, check_resume
from self_supervised.timeseries.data import synthetic_poses, ts_dls
from self_supervised.timeseries.registry import TS_ALGOS, ts_learner
from fastai_checks import fit_with_fastai_calls, assert_validates, assert_export_roundtrip

N, BS, T = 48, 16, 40

@pytest.fixture(autouse=True, scope='module')
def one_thread():
    "These models are tiny: one thread beats two on two busy cores; the previous setting is restored after the module"
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def tiny_ts_learner(algo, seed=0, init_seed=0, arch='tcn', **kwargs):
    "The registry's recipe for `algo` on 48 synthetic pose clips of 40 frames (half unlabelled), a width-8 encoder, batches of 16"
    if init_seed is not None: set_seed(init_seed)
    ps = synthetic_poses(n=N + BS, n_frames=T, seed=seed)
    y = ps.y.clone(); y[:N:2] = -1
    dls = ts_dls(ps.x[:N], ps.x[N:], y[:N], y[N:], bs=BS, device='cpu')
    return ts_learner(dls, algo, arch=arch, width=8, keypoints=ps.keypoints, pairs=ps.pairs, recipe=dict(hidden=16, proj=8), lr=1e-3, **kwargs)

def _cbs(learn): return [cb for cb in learn.cbs if isinstance(cb, SSLCallback)]

@pytest.mark.parametrize('algo', list(TS_ALGOS))
def test_resumes_exactly(algo):
    "2 epochs straight == 1 epoch, save, fresh Learner, load, 1 more: parameters, optimiser and callback state"
    straight, resumed = check_resume(lambda: tiny_ts_learner(algo, init_seed=None))
    assert resumed.train_iter == straight.train_iter // 2

@pytest.mark.parametrize('algo', list(TS_ALGOS))
def test_bf16_autocast_stays_finite(algo):
    "bfloat16 autocast on the CPU: the forward runs in bf16, the losses in float32, and everything stays finite"
    learn = tiny_ts_learner(algo)
    learn.add_cb(CPUMixedPrecision())
    seen = []
    orig = learn.model.forward
    def spy(*a, **k):
        out = orig(*a, **k); seen.append(torch.is_autocast_enabled('cpu')); return out
    learn.model.forward = spy
    with learn.no_bar(), learn.no_logging(): learn.fit(4, 1e-3)   # 12 steps
    assert seen and all(seen[:3]), f"{algo}: the forward pass did not run under autocast"
    losses = torch.tensor([float(l) for l in learn.recorder.losses])
    assert torch.isfinite(losses).all(), f"{algo}: non-finite loss in bf16"
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())

@pytest.mark.parametrize('algo', ['ts_contrastive', 'ts_masked_frames', 'ts_order'])
def test_transformer_encoder(algo):
    "The transformer encoder trains with the same recipes, in float32 and in bf16 autocast"
    learn = tiny_ts_learner(algo, arch='transformer')
    learn.add_cb(CPUMixedPrecision())
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-3)
    assert all(math.isfinite(float(l)) for l in learn.recorder.losses)

@pytest.mark.parametrize('algo', list(TS_ALGOS))
def test_fastai_calls(algo, tmp_path):
    "`summary`, `lr_find`, `fit_one_cycle`, `validate`, `export` and `load_learner` work with every task"
    learn = tiny_ts_learner(algo, path=tmp_path)
    fit_with_fastai_calls(learn, num_it=5)
    assert_validates(learn)
    assert_export_roundtrip(learn, tmp_path)

def _with_state(task):
    "`task`, turned into a stateful task: a subclass of its class with one piece of state, `seen`"
    object.__setattr__(task, '__class__', type(f'Stateful{type(task).__name__}', (type(task),), {'_state': ('seen',)}))
    return task

def test_multitask_state_roundtrip(tmp_path):
    "MultiTask's tasks keep their state in the model, under their names (`ssl_state_<name>`): saved and restored with it"
    learn = tiny_ts_learner('ts_multitask', path=tmp_path)
    task = _with_state(_cbs(learn)[0].tasks['contrastive'])
    task.seen = torch.arange(3.)
    assert 'ssl_state_contrastive.seen' in learn.model.state_dict()
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    learn.save('mt')
    fresh = tiny_ts_learner('ts_multitask', path=tmp_path)
    ft = _with_state(_cbs(fresh)[0].tasks['contrastive'])
    ft.seen = torch.zeros(3)
    fresh.load('mt')
    torch.testing.assert_close(ft.seen, torch.arange(3.))

@pytest.mark.parametrize('algo', list(TS_ALGOS))
def test_missing_keypoints(algo):
    "Every recipe trains on clips with 10% of their keypoints missing (NaN) and a padded clip: finite losses, NaN never reaches the model"
    from self_supervised.timeseries.data import drop_keypoints
    set_seed(0)
    ps = synthetic_poses(n=N + BS, n_frames=T, seed=0)
    x = drop_keypoints(ps.x, ps.keypoints, 0.1, seed=0); x[0, :, -5:] = float('nan')
    y = ps.y.clone(); y[:N:2] = -1
    dls = ts_dls(x[:N], x[N:], y[:N], y[N:], bs=BS, device='cpu')
    learn = ts_learner(dls, algo, width=8, keypoints=ps.keypoints, pairs=ps.pairs, recipe=dict(hidden=16, proj=8), lr=1e-3)
    seen = []
    orig = learn.model.forward
    def spy(*a, **k):
        seen.append(all(not (isinstance(t, torch.Tensor) and t.is_floating_point() and t.isnan().any()) for t in a)); return orig(*a, **k)
    learn.model.forward = spy
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    assert seen and all(seen), f"{algo}: NaN reached the model"
    assert all(math.isfinite(float(l)) for l in learn.recorder.losses), f"{algo}: non-finite loss with missing keypoints"
