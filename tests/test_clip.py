"""CLIP and CLIP-MoCo through the registry's checklist, with the `ALGOS` entries proposed for them.

`self_supervised.cli.ALGOS` does not list them yet: the entries below are added for the duration of each test
(the same dicts as proposed for the CLI), and the Learner is built by `ssl_learner` exactly as the registry tests
build theirs: 64 random 28-px images with labels, a width-4 small_resnet, batches of 16. The captions are made
from the images and labels by `FMNISTCaptioner`, as the CLI's image loaders carry no text.
"""
import math, warnings
import pytest, torch
from fastai.learner import load_learner
from fastai.callback.schedule import fit_one_cycle, fit_flat_cos, lr_find   # Learner methods
from fastai.callback.tracker import SaveModelCallback
from fastai.torch_core import set_seed

pytest.importorskip('open_clip')
from self_supervised import cli
from self_supervised.callback import SSLCallback, check_resume
from self_supervised.data import ssl_dls
from self_supervised.layers import create_encoder
from self_supervised.training import CPUMixedPrecision
from self_supervised.multimodal.clip import create_clip_model, get_clip_aug_pipelines, CLIP, LOG_MAX_SCALE
from self_supervised.multimodal.clip_moco import CLIPMOCO
from self_supervised.multimodal.data import FMNISTCaptioner, FMNIST_CONTEXT, CLIPTokenizer, fmnist_captions, _bpe

ENTRIES = {
    'clip': dict(temp=0.07, augs=lambda a: get_clip_aug_pipelines(a.size, stats=a.stats),
                 model=lambda enc, a: create_clip_model(enc, embed_dim=128, context_length=FMNIST_CONTEXT, width=64, heads=4, layers=2, temp=a.temp),
                 cb=lambda augs, a: CLIP(augs, captions=FMNISTCaptioner())),
    'clip_moco': dict(temp=0.07, augs=lambda a: get_clip_aug_pipelines(a.size, stats=a.stats),
                 model=lambda enc, a: create_clip_model(enc, embed_dim=128, context_length=FMNIST_CONTEXT, width=64, heads=4, layers=2, temp=a.temp),
                 cb=lambda augs, a: CLIPMOCO(augs, K=4096, m=0.99, captions=FMNISTCaptioner())),
}
N, BS = 64, 16

@pytest.fixture(params=list(ENTRIES))
def algo(request, monkeypatch):
    monkeypatch.setitem(cli.ALGOS, request.param, ENTRIES[request.param])
    return request.param

def tiny_learner(algo, seed=0, init_seed=0, **kwargs):
    if init_seed is not None: set_seed(init_seed)
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(N + BS, 1, 28, 28, generator=g) * 255).to(torch.uint8)
    y = torch.randint(0, 10, (N + BS,), generator=g)
    dls = ssl_dls(x[:N], x[N:], y[:N], y[N:], bs=BS, device='cpu')
    return cli.ssl_learner(dls, algo, create_encoder('small_resnet', n_in=1, width=4), lr=1e-3, **kwargs)

def _cb(learn): return next(cb for cb in learn.cbs if isinstance(cb, SSLCallback))

def test_resumes_exactly(algo):
    straight, resumed = check_resume(lambda: tiny_learner(algo, init_seed=None))
    assert resumed.train_iter == straight.train_iter // 2

def test_bf16_autocast_stays_finite(algo):
    learn = tiny_learner(algo)
    learn.add_cb(CPUMixedPrecision())
    with learn.no_bar(), learn.no_logging(): learn.fit(4, 1e-3)
    assert all(math.isfinite(float(l)) for l in learn.recorder.losses)
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())
    assert learn.model.logit_scale.item() <= LOG_MAX_SCALE

def test_fastai_calls_and_checkpoints(algo, tmp_path):
    learn = tiny_learner(algo, path=tmp_path)
    assert 'CLIPModel' in learn.summary()
    with learn.no_bar(), learn.no_logging():
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')   # lr_find may stop early on tiny data
            learn.lr_find(num_it=6, show_plot=False)
        learn.fit_one_cycle(1, 1e-3)
        learn.fit_flat_cos(1, 1e-3)
        learn.fit(1, 1e-3, cbs=SaveModelCallback(every_epoch=True, fname='ckpt', with_opt=True))
    val = learn.validate()
    assert all(v is None or math.isfinite(v) for v in val)
    fresh = tiny_learner(algo, seed=1, init_seed=1, path=tmp_path)
    fresh.load('ckpt_0')
    torch.testing.assert_close(fresh.model.state_dict(), learn.model.state_dict())
    sd0, sd1 = _cb(learn).state_dict(), _cb(fresh).state_dict()
    assert sd0.keys() == sd1.keys()
    for k in sd0:
        if isinstance(sd0[k], torch.Tensor): torch.testing.assert_close(sd0[k], sd1[k])   # the queues come back

def test_export_and_load_learner(algo, tmp_path):
    learn = tiny_learner(algo, path=tmp_path)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    learn.export('learner.pkl')
    back = load_learner(tmp_path/'learner.pkl', cpu=True)
    x = learn.dls.valid.one_batch()[0][:4]
    toks = CLIPTokenizer(FMNIST_CONTEXT)(['a photo of a coat', 'a dark bag', 'a plain sneaker in grey', 'a photo of a dress'])
    learn.model.eval(); back.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(learn.model.encode_image(x), back.model.encode_image(x))
        torch.testing.assert_close(learn.model.encode_text(toks), back.model.encode_text(toks))
    assert isinstance(_cb(back), type(_cb(learn)))
    assert isinstance(_cb(back).captions, FMNISTCaptioner)

def test_queue_smaller_than_batch_is_refused(monkeypatch):
    monkeypatch.setitem(cli.ALGOS, 'clip_moco', dict(ENTRIES['clip_moco'], cb=lambda augs, a: CLIPMOCO(augs, K=BS - 1, captions=FMNISTCaptioner())))
    learn = tiny_learner('clip_moco')
    with pytest.raises(ValueError, match=f'K >= {BS}'): learn.fit(1)

def test_image_only_loader_without_captions_is_refused(monkeypatch):
    monkeypatch.setitem(cli.ALGOS, 'clip', dict(ENTRIES['clip'], cb=lambda augs, a: CLIP(augs)))
    with pytest.raises(ValueError, match='holds no captions'): tiny_learner('clip').fit(1)

def test_tokenizer_works_offline():
    "The BPE vocabulary is a file inside the installed `open_clip` package: no download, and the ids are CLIP's"
    import open_clip, os
    from open_clip.tokenizer import default_bpe
    assert os.path.dirname(default_bpe()) == os.path.dirname(open_clip.__file__) and os.path.exists(default_bpe())
    tok = CLIPTokenizer(8)
    assert tok('a photo of a cat')[0].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407, 0]   # OpenAI CLIP's ids
    assert _bpe() is _bpe()
