"""fastai's and PyTorch's everyday tools next to the SSL callbacks: the compatibility matrix.

Each test is one tool on one algorithm of the registry; `python bench/compat_matrix.py` runs this file and prints the
table of outcomes (algorithm x tool).
"""
import csv, math, os
from functools import partial
import pytest, torch
from torch import nn
from fastai.learner import Learner
from fastai.callback.tracker import SaveModelCallback, EarlyStoppingCallback, ReduceLROnPlateau
from fastai.callback.progress import CSVLogger
from fastai.callback.training import GradientAccumulation
from fastai.callback.fp16 import MixedPrecision
from fastai.callback.channelslast import ChannelsLast
from fastai.callback.tensorboard import TensorBoardCallback
from fastai.losses import CrossEntropyLossFlat
from fastai.optimizer import SGD
from self_supervised.registry import ALGOS
from self_supervised.data import TensorDL
from self_supervised.monitor import CollapseMonitor, KNNMonitor
from fastai_checks import tiny_learner, ssl_cb

MOMENTUM = {'moco': 'encoder_k', 'supcon_moco': 'encoder_k', 'byol': 'target', 'dino': 'teacher', 'clip_moco': 'model_k'}
# state that follows the data (written after every batch) rather than the weights (after every optimiser step)
DATA_STATE = {'moco': ['queue'], 'supcon_moco': ['queue'], 'dino': ['center'], 'clip_moco': ['img_queue', 'txt_queue'],
              'nnclr': ['support'], 'instdisc': ['bank'], 'cmc': ['bank_l', 'bank_ab'], 'pirl': ['bank'], 'swav': ['queue']}

def _fit(learn, n=1, cbs=None, lr=1e-3):
    with learn.no_bar(), learn.no_logging(): learn.fit(n, lr, cbs=cbs)
    assert all(math.isfinite(float(l)) for l in learn.recorder.losses)
    return learn

def _params(m): return [p.detach().clone() for p in m.parameters()]
def _moved(a, b): return any(not torch.equal(x, y) for x, y in zip(a, b))

def test_importing_the_library_patches_nothing_in_fastai(tmp_path):
    "A supervised fastai Learner with `SaveModelCallback()` (best model reloaded at the end) after importing every module"
    import self_supervised.callback, self_supervised.dist, self_supervised.cli  # noqa: F401 (the imports are the test)
    from fastai.distributed import DistributedDL
    assert Learner.save.__module__ == Learner.load.__module__ == 'fastai.learner'
    assert DistributedDL._broadcast.__module__ == 'fastai.distributed'
    torch.manual_seed(0)
    x, y = torch.rand(64, 1, 8, 8), torch.randint(0, 2, (64,))
    from fastai.data.core import DataLoaders
    dls = DataLoaders(TensorDL(x, y, bs=16), TensorDL(x[:16], y[:16], bs=16), device='cpu')
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), path=tmp_path)
    _fit(learn, 2, cbs=SaveModelCallback())   # fastai reloads the best epoch with its own `load(..., weights_only=...)`
    assert (tmp_path/'models'/'model.pth').exists()

@pytest.mark.parametrize('algo', list(ALGOS))
def test_everyday_callbacks(algo, tmp_path):
    """SaveModelCallback (best), EarlyStopping, ReduceLROnPlateau, CSVLogger, TensorBoard, CollapseMonitor and KNNMonitor
    together: the best checkpoint holds the method's state and is the one in memory at the end, the log and the events
    are written with the monitors' columns"""
    learn = tiny_learner(algo, path=tmp_path)
    x, y = learn.dls.train.x, learn.dls.train.y
    knn, mon = KNNMonitor(x, y, x[:32], y[:32], k=5), CollapseMonitor()
    cbs = [SaveModelCallback(monitor='train_loss', fname='best'), EarlyStoppingCallback(monitor='train_loss', patience=3),
           ReduceLROnPlateau(monitor='train_loss', patience=1), CSVLogger(tmp_path/'log.csv'), mon, knn]
    # SSL models predict no labels to show; fastai cannot write the empty valid_loss of methods without one
    tb = ssl_cb(learn).has_valid_loss
    if tb: cbs.append(TensorBoardCallback(tmp_path/'tb', trace_model=False, log_preds=False))
    _fit(learn, 3, cbs=cbs)
    saved = torch.load(tmp_path/'models'/'best.pth', weights_only=True)
    assert any(k.startswith('ssl_state.') for k in saved) == bool(ssl_cb(learn)._state)
    now = learn.model.state_dict()
    assert saved.keys() == now.keys()
    for k in saved: torch.testing.assert_close(saved[k], now[k], msg=lambda m: f'{k}: {m}')
    rows = list(csv.DictReader(open(tmp_path/'log.csv')))
    assert len(rows) == 3 and {'emb_std', 'emb_rank', 'knn_acc'} <= set(rows[0])
    assert len(knn.history) == 3 and all(0 <= h['knn_acc'] <= 1 for h in knn.history)
    assert len(mon.history) == 3 and all(h['emb_rank'] >= 1 for h in mon.history)
    if tb:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        ev = EventAccumulator(str(tmp_path/'tb')); ev.Reload()
        assert {'train_loss', 'valid_loss', 'emb_std', 'knn_acc'} <= set(ev.Tags()['scalars'])

NO_VALID_LOSS = ['instdisc', 'exemplar', 'cmc', 'pirl']

@pytest.mark.parametrize('algo', NO_VALID_LOSS)
def test_a_validation_loss_the_method_does_not_have(algo, tmp_path):
    "fastai's trackers monitor 'valid_loss' by default, TensorBoard writes it: clear errors when training starts, for methods without one"
    learn = tiny_learner(algo, path=tmp_path)
    assert not ssl_cb(learn).has_valid_loss and learn.validate()[0] is None
    with pytest.raises(ValueError, match="monitor='train_loss'"): _fit(learn, 1, cbs=SaveModelCallback())
    with pytest.raises(ValueError, match='CSVLogger'): _fit(learn, 1, cbs=TensorBoardCallback(tmp_path/'tb', log_preds=False))

def test_methods_without_validation_loss_are_marked():
    "Every other method of the registry has a validation loss (so `has_valid_loss` is right everywhere)"
    for algo in ALGOS:
        if algo in NO_VALID_LOSS: continue
        learn = tiny_learner(algo)
        assert ssl_cb(learn).has_valid_loss and math.isfinite(learn.validate()[0]), algo

def test_tensorboard_needs_log_preds_off(tmp_path):
    "TensorBoardCallback's default logs predictions as labelled results: refused when training starts, with the fix"
    learn = tiny_learner('simclr', path=tmp_path)
    with pytest.raises(ValueError, match='log_preds=False'): _fit(learn, 1, cbs=TensorBoardCallback(tmp_path/'tb'))
    _fit(learn, 1, cbs=TensorBoardCallback(tmp_path/'tb', log_preds=False))   # traces a one-input model's graph

@pytest.mark.parametrize('algo', list(ALGOS))
def test_gradient_accumulation(algo):
    """fastai's GradientAccumulation over 2 batches: the weights and the momentum encoder move at every second batch
    (one optimiser step), while the state that follows the data (queues, banks, centre) takes every batch"""
    learn = tiny_learner(algo)
    if algo == 'swav': ssl_cb(learn).queue_start_pct = 0.   # the queue takes the projections from the first batch
    cb, mom, data = ssl_cb(learn), MOMENTUM.get(algo), DATA_STATE.get(algo, [])
    log = []
    from fastai.callback.core import Callback
    class Watch(Callback):
        order = 20   # after the SSL callback
        def before_batch(self):
            self.w0, self.t0 = _params(learn.model.encoder), (_params(getattr(cb, mom)) if mom else None)
            self.d0 = [getattr(cb, d).clone() for d in data]
        def after_batch(self):
            if not self.training: return
            log.append(dict(online=_moved(self.w0, _params(learn.model.encoder)),
                            target=None if mom is None else _moved(self.t0, _params(getattr(cb, mom))),
                            data=[not torch.equal(a, getattr(cb, d)) for a, d in zip(self.d0, data)]))
    _fit(learn, 1, cbs=[GradientAccumulation(n_acc=2 * learn.dls.train.bs), Watch()])
    assert len(log) == 4
    assert [l['online'] for l in log] == [False, True, False, True]
    if mom: assert [l['target'] for l in log] == [False, True, False, True]
    for l in log: assert all(l['data']), l

# every model compiled with torch.compile: `aot_eager` traces it with dynamo and AOTAutograd (the wrapper renames the
# parameters `_orig_mod.*`) without inductor's C++ compilation, which takes minutes per model on 2 CPU cores;
# `bench/compat_matrix.py --inductor` runs the same test with inductor
COMPILE_BACKEND = os.environ.get('SSL_COMPILE_BACKEND', 'aot_eager')

@pytest.mark.parametrize('algo', list(ALGOS))
def test_torch_compile(algo, tmp_path):
    "A compiled model trains, a momentum encoder follows it, and its checkpoint (state included) loads into another compiled model"
    torch._dynamo.reset()
    learn = tiny_learner(algo, path=tmp_path)
    learn.model = torch.compile(learn.model, backend=COMPILE_BACKEND)
    cb = ssl_cb(learn)
    t0 = _params(getattr(cb, MOMENTUM[algo])) if algo in MOMENTUM else None
    w0 = _params(learn.model)
    _fit(learn, 1)
    assert _moved(w0, _params(learn.model))
    if algo in MOMENTUM: assert _moved(t0, _params(getattr(cb, MOMENTUM[algo])))
    assert any(k.startswith('_orig_mod.ssl_state.') for k in learn.model.state_dict()) == bool(cb._state)
    learn.save('compiled')
    fresh = tiny_learner(algo, seed=1, init_seed=1, path=tmp_path)
    fresh.model = torch.compile(fresh.model, backend=COMPILE_BACKEND)
    fresh.load('compiled')
    a, b = learn.model.state_dict(), fresh.model.state_dict()
    for k in a: torch.testing.assert_close(a[k], b[k], msg=lambda m: f'{k}: {m}')

@pytest.mark.parametrize('algo', list(ALGOS))
def test_channels_last(algo):
    "fastai's `to_channelslast`: the model, state included (momentum encoders), in channels-last memory format, trains"
    learn = tiny_learner(algo)
    learn.add_cb(ChannelsLast())
    _fit(learn, 1)
    convs = [m.weight for m in learn.model.modules() if isinstance(m, nn.Conv2d) and m.weight.shape[-1] > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)

@pytest.mark.parametrize('algo', list(ALGOS))
def test_fastai_mixed_precision(algo):
    """fastai's `to_bf16` (MixedPrecision): trains with finite losses. fastai autocasts CUDA only: on a CPU it runs in
    float32 (CPU bf16 is `self_supervised.training.CPUMixedPrecision`, checked for every algorithm in test_algorithms)"""
    learn = tiny_learner(algo)
    learn.add_cb(MixedPrecision(amp_mode='bf16'))
    _fit(learn, 2)

def test_collapse_monitor_next_to_a_model_traced_by_tensorboard(tmp_path):
    "TensorBoard traces the model before any validation: CollapseMonitor's hook ignores that forward pass"
    learn = tiny_learner('simclr', path=tmp_path)
    mon = CollapseMonitor()
    _fit(learn, 2, cbs=[mon, TensorBoardCallback(tmp_path/'tb', trace_model=True, log_preds=False)])
    assert len(mon.history) == 2 and all(h['emb_std'] > 0 for h in mon.history)

# --- distrib_ctx with 2 gloo processes: the algorithms not already checked against 1 process (test_dist_fastai.py, test_dist_clip.py)
DIST_REFUSED = ['bigan']   # a critic: fastai's GAN alternation freezes parameters, which DDP cannot follow
DIST = [a for a in ALGOS if a not in ('simclr', 'moco', 'byol', 'barlow_twins', 'swav', 'dino', 'clip', 'clip_moco', *DIST_REFUSED)]

def _dist_worker(rank):
    import fastai.distributed  # noqa: F401 (Learner.distrib_ctx)
    res = {}
    for algo in DIST:
        learn = tiny_learner(algo)
        with learn.distrib_ctx(sync_bn=False, cpu=True):
            with learn.no_logging(): learn.fit(1, 1e-3)
        res[algo] = dict(losses=[float(l) for l in learn.recorder.losses], sd=learn.model.state_dict(), has_state=bool(ssl_cb(learn)._state))
    # fastai's GAN alternation freezes parameters, which DDP cannot follow: refused when training starts
    try:
        learn = tiny_learner(DIST_REFUSED[0])
        with learn.distrib_ctx(sync_bn=False, cpu=True):
            with learn.no_logging(): learn.fit(1, 1e-3)
        res['bigan'] = None
    except ValueError as e: res['bigan'] = str(e)
    # fastai's own DistributedDL broadcasts the batch order through CUDA: a plain fastai Learner cannot train on CPUs
    x, y = torch.rand(32, 4), torch.randint(0, 2, (32,))
    from fastai.data.core import DataLoaders
    plain = Learner(DataLoaders(TensorDL(x, y, bs=8), TensorDL(x, y, bs=8), device='cpu'), nn.Linear(4, 2),
                    loss_func=CrossEntropyLossFlat(), opt_func=partial(SGD, mom=0.))
    try:
        with plain.distrib_ctx(sync_bn=False, cpu=True):
            with plain.no_logging(): plain.fit(1)
        res['plain'] = None
    except Exception as e: res['plain'] = f'{type(e).__name__}: {e}'
    return res

def test_distrib_ctx_two_processes(in_processes):
    "`learn.distrib_ctx()` with 2 gloo processes: every method trains, and model and state stay identical across processes"
    r0, r1 = in_processes(_dist_worker, fastai=True)
    for algo in DIST:
        assert r0[algo]['losses'] and all(math.isfinite(l) for l in r0[algo]['losses']), algo
        for k, v in r0[algo]['sd'].items(): torch.testing.assert_close(v, r1[algo]['sd'][k], msg=lambda m: f'{algo} {k}: {m}')
        assert any(k.startswith('ssl_state.') for k in r0[algo]['sd']) == r0[algo]['has_state'], algo
    assert r0['bigan'] is not None and 'one process' in r0['bigan'], r0['bigan']
    assert r0['plain'] is not None and any(w in r0['plain'].lower() for w in ('nvidia', 'cuda')), r0['plain']   # fastai's limitation
