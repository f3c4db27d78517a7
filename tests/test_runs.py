"""What `SSLLearner` promises about whole runs, with the registry's algorithms: training stops at the first NaN, a run
resumed from a checkpoint ends where the straight run ends (with the defaults, no `SeedEpochs` to add), state of
another configuration is refused with both shapes named, and files are written and read back safely."""
import os
from pathlib import Path
import pytest, torch
from fastai.learner import load_learner
from fastai.callback.training import GradientAccumulation
from fastai.torch_core import set_seed
from self_supervised.callback import NonFiniteError, CheckpointError, SSLState, _assert_same
from self_supervised.registry import ALGOS, get_recipe, ssl_args, ssl_learner, algo_images
from self_supervised.data import ssl_dls
from self_supervised.layers import create_encoder
from fastai_checks import tiny_learner, ssl_cb, BS

def _fit(learn, n, lr=1e-3, **kwargs):
    with learn.no_bar(), learn.no_logging(): learn.fit(n, lr, **kwargs)
    return learn

# --- training stops at the first non-finite value ----------------------------------------------------------------------
@pytest.mark.parametrize('algo', ['simclr', 'moco'])
def test_nan_learning_rate_stops_before_the_weights_change(algo):
    learn = tiny_learner(algo)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with pytest.raises(NonFiniteError, match=r'learning rate is nan at epoch 0, step 0'):
        with learn.no_bar(), learn.no_logging(): learn.fit(1, float('nan'))
    for k, v in learn.model.state_dict().items():
        if v.is_floating_point(): assert torch.isfinite(v).all(), k
    assert all(torch.equal(p, before[n]) for n, p in learn.model.named_parameters())

def test_nan_gradient_names_the_parameter_through_compile_and_accumulation():
    "A NaN gradient in one parameter (a hook makes it): the error names it, with a compiled model and gradient accumulation"
    learn = tiny_learner('simclr')
    name, p = next((n, p) for n, p in learn.model.named_parameters() if n.startswith('projector'))
    p.register_hook(lambda g: torch.full_like(g, float('nan')))
    learn.model = torch.compile(learn.model, backend='eager')
    with pytest.raises(NonFiniteError, match=rf'gradient of `{name}` is not finite .* epoch 0, step 0 of 4'):
        _fit(learn, 1, cbs=GradientAccumulation(2 * BS))
    assert torch.isfinite(p).all()

def test_check_finite_off_trains_on():
    learn = tiny_learner('simclr', check_finite=False)
    _fit(learn, 1, lr=float('nan'))   # nothing stops it: the weights are NaN afterwards
    assert not all(torch.isfinite(p).all() for p in learn.model.parameters())

# --- exact resume with SSLLearner's defaults ---------------------------------------------------------------------------
@pytest.mark.parametrize('algo', ['simclr', 'moco'])
def test_resumes_exactly_by_default(algo, tmp_path):
    "2 epochs straight == 1 epoch, save, fresh Learner (other initial weights), load, 1 more: no SeedEpochs added"
    straight = _fit(tiny_learner(algo, path=tmp_path), 2)
    _fit(tiny_learner(algo, path=tmp_path), 1).save('e1')
    resumed = _fit(tiny_learner(algo, init_seed=5, path=tmp_path).load('e1'), 2, start_epoch=1)
    assert resumed.train_iter == straight.train_iter // 2
    _assert_same(straight.model.state_dict(), resumed.model.state_dict(), 1e-6, 'model')
    _assert_same(ssl_cb(straight).state_dict(), ssl_cb(resumed).state_dict(), 1e-6, algo)
    other = _fit(tiny_learner(algo, init_seed=1, path=tmp_path), 2)   # another run still draws differently
    assert not torch.allclose(other.model.encoder[0][0].weight, straight.model.encoder[0][0].weight)

def test_without_reseeding_resuming_differs(tmp_path):
    "The test above can fail: with `exact_resume=False` the resumed run sees other views and batches"
    straight = _fit(tiny_learner('simclr', path=tmp_path, exact_resume=False), 2)
    _fit(tiny_learner('simclr', path=tmp_path, exact_resume=False), 1).save('e1')
    set_seed(3)
    resumed = _fit(tiny_learner('simclr', init_seed=None, path=tmp_path, exact_resume=False).load('e1'), 2, start_epoch=1)
    with pytest.raises(AssertionError, match='differs after resuming'):
        _assert_same(straight.model.state_dict(), resumed.model.state_dict(), 1e-6, 'model')

# --- state that does not fit the callback ------------------------------------------------------------------------------
def _learner(algo, path, n=64, **cb_attrs):
    "The registry's recipe for `algo` on `n` random images, its callback's attributes (e.g. the queue size `K`) changed before it joins"
    g = torch.Generator().manual_seed(0)
    x = algo_images(algo, (torch.rand(n + BS, 1, 28, 28, generator=g) * 255).to(torch.uint8))
    dls = ssl_dls(x[:n], x[n:], bs=BS, device='cpu', with_idx=ALGOS[algo].with_idx)
    r, a = get_recipe(algo), ssl_args(dls, algo)
    cb = r.callback(r.views(a), a)
    for k, v in cb_attrs.items(): setattr(cb, k, v)
    return ssl_learner(dls, cb, model=r.model(create_encoder('small_resnet', n_in=1, width=4), a), path=path)

@pytest.mark.parametrize('algo, key, small, large', [
    ('moco', 'queue', dict(K=256), dict(K=512)),
    ('nnclr', 'support', dict(K=256), dict(K=512)),
    ('swav', 'queue', dict(K=64), dict(K=128)),
    ('instdisc', 'bank', dict(n=48), dict(n=64)),   # a memory bank has a row per item of the data set
])
def test_state_of_other_arguments_is_refused_both_ways(algo, key, small, large, tmp_path):
    for src, dst in ((large, small), (small, large)):
        saved = _learner(algo, tmp_path, **src)
        saved.save('ckpt')
        fresh = _learner(algo, tmp_path, **dst)
        theirs, ours = tuple(getattr(saved.model.ssl_state, key).shape), tuple(getattr(fresh.model.ssl_state, key).shape)
        assert theirs != ours
        with pytest.raises(ValueError, match=rf"{type(ssl_cb(fresh)).__name__} callback: `ssl_state.{key}` has shape "
                                             rf"{theirs} in the checkpoint but {ours} here.*checkpoint's arguments".replace('(', r'\(').replace(')', r'\)')):
            fresh.load('ckpt')

def test_swav_prototypes_of_another_number_are_refused(tmp_path):
    "The prototypes are parameters of the model, outside the SSL state: PyTorch's own check names them"
    learn = tiny_learner('swav', path=tmp_path); learn.save('ckpt')
    sd = torch.load(tmp_path/'models'/'ckpt.pth', weights_only=False)   # no optimizer yet: the model's state dict
    k = next(k for k in sd if 'proto' in k)
    sd[k] = torch.cat([sd[k], sd[k][:1]])
    torch.save(sd, tmp_path/'models'/'other.pth')
    with pytest.raises(RuntimeError, match=rf'size mismatch for {k}'): tiny_learner('swav', path=tmp_path).load('other')

@pytest.mark.parametrize('algo', list(ALGOS))
def test_every_algorithm_refuses_state_of_another_shape(algo, tmp_path):
    "A checkpoint whose first SSL-state tensor has one more row: loading it names that tensor and both shapes"
    learn = tiny_learner(algo, path=tmp_path)
    sts = [m for m in learn.model.modules() if isinstance(m, SSLState)]
    learn.save('ckpt')
    sd = torch.load(tmp_path/'models'/'ckpt.pth', weights_only=False)
    keys = [k for k, v in sd.items() if k.startswith('ssl_state') and v.ndim]   # no optimizer yet: the model's state dict
    if not keys:
        assert not any(len(st.state_dict()) for st in sts), f"{algo} holds SSL state, none of it saved"
        return   # a method without state: nothing to mismatch
    k = keys[0]; v = sd[k]
    sd[k] = torch.cat([v, v[:1]])
    torch.save(sd, tmp_path/'models'/'other.pth')
    fresh = tiny_learner(algo, seed=1, path=tmp_path)
    fresh.load('ckpt')   # the checkpoint as saved loads
    shapes = rf"`{k}` has shape \({len(v) + 1}, ?{', '.join(map(str, v.shape[1:]))}\) in the checkpoint but \({', '.join(map(str, v.shape))},?\) here"
    with pytest.raises(ValueError, match=shapes): fresh.load('other')

# --- files -------------------------------------------------------------------------------------------------------------
def test_save_mode_follows_the_umask(tmp_path):
    learn = tiny_learner('moco', path=tmp_path)
    old = os.umask(0o022)
    try: f, e = learn.save('ckpt'), learn.export('exp.pkl')
    finally: os.umask(old)
    assert oct(f.stat().st_mode & 0o777) == oct(0o644)
    assert oct((tmp_path/'exp.pkl').stat().st_mode & 0o777) == oct(0o644)

def test_damaged_checkpoints_are_named(tmp_path):
    learn = _fit(tiny_learner('moco', path=tmp_path), 1)
    f = learn.save('ckpt'); d = f.parent
    learn.load('ckpt')
    b = bytearray(f.read_bytes())
    for i in (len(b) // 3, len(b) // 2, len(b) - 200):   # bits flipped in the data and near the end
        c = bytearray(b); c[i] ^= 0x10; (d/'flip.pth').write_bytes(bytes(c))
        with pytest.raises(CheckpointError, match=r'flip\.pth (does not match the checksum|is truncated or damaged)'): learn.load('flip')
    (d/'cut.pth').write_bytes(bytes(b[:len(b) // 2]))
    with pytest.raises(CheckpointError, match=r'cut\.pth is truncated'): learn.load('cut')
    (d/'empty.pth').write_bytes(b'')
    with pytest.raises(CheckpointError, match=r'empty\.pth is empty'): learn.load('empty')
    (d/'notes.pth').write_text('lr: 1e-3\n')
    with pytest.raises(CheckpointError, match=r'notes\.pth is not a PyTorch checkpoint'): learn.load('notes')
    torch.save(learn.model.state_dict(), d/'plain.pth')   # no checksum: torch's (and fastai's) own files load as before
    learn.load('plain', with_opt=False)

def test_interrupted_export_keeps_the_previous_one(tmp_path, monkeypatch):
    learn = _fit(tiny_learner('moco', path=tmp_path), 1)
    learn.export('exp.pkl')
    before = (tmp_path/'exp.pkl').read_bytes()
    def half_write(obj, f, *args, **kwargs): Path(f).write_bytes(b'partial'); raise OSError('killed')
    monkeypatch.setattr(torch, 'save', half_write)
    with pytest.raises(OSError, match='killed'): learn.export('exp.pkl')
    monkeypatch.undo()
    assert (tmp_path/'exp.pkl').read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ['exp.pkl']   # no temporary file left
    assert len(learn.dls.train.dataset) and learn.opt is not None                  # the Learner is whole again
    assert isinstance(ssl_cb(load_learner(tmp_path/'exp.pkl')), type(ssl_cb(learn)))
