"Encoder files others load without this library, rebuilt from their metadata alone; pretrained weights without a network"
import copy, json, pickle, socket, subprocess, sys, time, warnings
from pathlib import Path
import pytest, timm, torch, torchvision
from torch import nn
from safetensors.torch import load_file, save_file
from fastai.layers import AdaptiveConcatPool2d
from fastai.vision.learner import create_body
from fastai.vision.models.xresnet import xresnet18
import huggingface_hub.constants as hf_constants
from self_supervised import __version__
from self_supervised.layers import (create_encoder, export_encoder, load_encoder, encoder_metadata, PoolingType, SMALL_RESNET_SRC,
                                    _reachable)
from self_supervised.vision.simclr import create_simclr_model
from self_supervised.vision.splitbrain import LabEncoder, copy_encoder

torch.manual_seed(0)
X1, X3 = torch.randn(2, 1, 32, 32), torch.rand(2, 3, 32, 32)

def features(m, x):
    m.eval()
    with torch.no_grad(): return m(x)

def assert_same_weights(a:dict, b:dict):
    assert set(a) == set(b)
    for k in a: assert torch.equal(a[k], b[k]), k

# ---- strict loads into the plain models, and `load_encoder(path)`

@pytest.mark.parametrize('pool,nf', [('avg', 512), ('catavgmax', 1024)])
def test_timm_loads_into_plain_timm_model(tmp_path, pool, nf):
    model = create_simclr_model(create_encoder('resnet18', n_in=1, pool_type=pool), 32, 16)
    f = export_encoder(model, tmp_path/'enc.safetensors', algo='simclr')
    meta = encoder_metadata(f)
    assert {k: meta[k] for k in ('format', 'library', 'version', 'source', 'arch', 'n_in', 'pool', 'num_features', 'algo', 'kwargs')} == dict(
        format='self_supervised.encoder.v1', library='self_supervised', version=__version__, source='timm', arch='resnet18', n_in='1',
        pool=pool, num_features=str(nf), algo='simclr', kwargs='{}')
    plain = timm.create_model('resnet18', num_classes=0, global_pool=meta['pool'], in_chans=int(meta['n_in']))
    plain.load_state_dict(load_file(f), strict=True)
    ref = features(model.encoder, X1)
    assert ref.shape == (2, nf)
    torch.testing.assert_close(features(plain, X1), ref)
    back = load_encoder(f)
    assert back.encoder_spec == model.encoder.encoder_spec
    torch.testing.assert_close(features(back, X1), ref)

@pytest.mark.parametrize('arch,fn', [('xresnet18', xresnet18), (torchvision.models.resnet18, torchvision.models.resnet18)])
def test_fastai_and_torchvision_bodies_load_into_create_body(tmp_path, arch, fn):
    enc = create_encoder(arch, n_in=1)
    f = export_encoder(enc, tmp_path/'enc.safetensors')
    sd = load_file(f)
    assert not any(k.startswith('0.0.0.') for k in sd)   # not the old layout only this library could read
    body = create_body(fn(), n_in=1, pretrained=False)
    body.load_state_dict(sd, strict=True)
    ref = features(enc, X1)
    torch.testing.assert_close(features(nn.Sequential(body, AdaptiveConcatPool2d(), nn.Flatten()), X1), ref)
    meta = encoder_metadata(f)
    assert (meta['source'], meta['arch'], meta['n_in'], meta['pool'], meta['num_features']) == ('fastai', fn.__name__, '1', 'catavgmax', '1024')
    torch.testing.assert_close(features(load_encoder(f), X1), ref)

@pytest.mark.parametrize('pool', ['avg', 'max', 'catavgmax'])
def test_small_resnet_plain_snippet(tmp_path, pool):
    enc = create_encoder('small_resnet', n_in=1, width=8, pool_type=pool)
    f = export_encoder(enc, tmp_path/'enc.safetensors')
    meta = encoder_metadata(f)
    assert (json.loads(meta['kwargs']), meta['n_in'], meta['pool']) == ({'width': 8}, '1', pool)
    ns = {}
    exec(SMALL_RESNET_SRC, ns)
    plain = ns['small_resnet'](n_in=1, width=8, pool=pool)
    plain.load_state_dict(load_file(f), strict=True)
    torch.testing.assert_close(features(plain, X1), features(enc, X1))
    torch.testing.assert_close(features(load_encoder(f), X1), features(enc, X1))

def test_rebuild_recipe_runs_without_the_library(tmp_path):
    "The `rebuild` lines of a small_resnet file run in a Python that cannot import self_supervised, fastai or timm"
    enc = create_encoder('small_resnet', n_in=1, width=4, pool_type='catavgmax')
    f = export_encoder(enc, tmp_path/'enc.safetensors')
    torch.save(features(enc, X1), tmp_path/'ref.pt'); torch.save(X1, tmp_path/'x.pt')
    code = ("import sys, torch\nfor m in ('self_supervised', 'fastai', 'timm'): sys.modules[m] = None\n"
            "from safetensors import safe_open\n"
            f"path = {str(f)!r}\n"
            "with safe_open(path, 'pt') as fh: rebuild = fh.metadata()['rebuild']\n"
            "exec(rebuild)\nmodel.eval()\n"
            f"with torch.no_grad(): out = model(torch.load({str(tmp_path/'x.pt')!r}))\n"
            f"torch.testing.assert_close(out, torch.load({str(tmp_path/'ref.pt')!r})); print('ok')\n")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and 'ok' in r.stdout, r.stderr[-2000:]

def test_timm_recipe_in_metadata(tmp_path):
    f = export_encoder(create_encoder('resnet18', n_in=2, pool_type='avg', drop_rate=0.1), tmp_path/'enc.safetensors')
    meta = encoder_metadata(f)
    assert "timm.create_model('resnet18', num_classes=0, in_chans=2, global_pool='avg', drop_rate=0.1)" in meta['rebuild']
    ns = {'path': f}
    exec(meta['rebuild'], ns)   # loads strictly
    assert json.loads(meta['kwargs']) == {'drop_rate': 0.1}

def test_lab_encoder(tmp_path):
    "Split-Brain's and CMC's two halves: both exported, each under its name in its plain layout, rebuilt as a `LabEncoder`"
    l_net = create_encoder('xresnet18', n_in=1, pool_type='avg')
    lenc = LabEncoder(l_net, copy_encoder(l_net, 2))
    f = export_encoder(lenc, tmp_path/'lab.safetensors', algo='cmc')
    meta = encoder_metadata(f)
    assert (meta['source'], meta['arch'], meta['module'], meta['n_in'], meta['num_features'], meta['algo']) == (
        'composite', 'LabEncoder', 'self_supervised.vision.splitbrain', '3', '1024', 'cmc')
    parts = json.loads(meta['parts'])
    assert {p: (s['source'], s['arch'], s['n_in'], s['pool']) for p, s in parts.items()} == {
        'l_net': ('fastai', 'xresnet18', 1, 'avg'), 'ab_net': ('fastai', 'xresnet18', 2, 'avg')}
    sd = load_file(f)
    for p, n in (('l_net', 1), ('ab_net', 2)):
        body = create_body(xresnet18(), n_in=n, pretrained=False)
        body.load_state_dict({k[len(p) + 1:]: v for k, v in sd.items() if k.startswith(p + '.')}, strict=True)
    back = load_encoder(f)
    assert isinstance(back, LabEncoder)
    assert_same_weights(back.state_dict(), lenc.state_dict())
    # and into a LabEncoder one builds, the old way
    fresh = LabEncoder(create_encoder('xresnet18', n_in=1, pool_type='avg'), create_encoder('xresnet18', n_in=2, pool_type='avg'))
    assert_same_weights(load_encoder(fresh, f).state_dict(), lenc.state_dict())
    # a part this library did not build: the LabEncoder loads into a module, and `load_encoder(path)` says which part
    custom = LabEncoder(l_net, nn.Sequential(nn.Conv2d(2, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    f = export_encoder(custom, tmp_path/'custom.safetensors')
    with pytest.raises(ValueError, match='a `LabEncoder` whose part\\(s\\) `ab_net` this library did not build'): load_encoder(f)
    assert_same_weights(load_encoder(copy.deepcopy(custom), f).state_dict(), custom.state_dict())

def test_lab_encoder_features(tmp_path):
    l_net = create_encoder('small_resnet', n_in=1, width=4)
    lenc = LabEncoder(l_net, create_encoder('small_resnet', n_in=2, width=8, pool_type='avg'))
    back = load_encoder(export_encoder(lenc, tmp_path/'lab.safetensors'))
    assert back.ab_net.encoder_spec == lenc.ab_net.encoder_spec
    torch.testing.assert_close(features(back, X3), features(lenc, X3))
    assert features(back, X3).shape == (2, 2 * 4 * 4 + 4 * 8)

def test_custom_module(tmp_path):
    tiny = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    f = export_encoder(tiny, tmp_path/'m.safetensors')
    meta = encoder_metadata(f)
    assert (meta['source'], meta['arch'], meta['num_features'], meta['n_in']) == ('module', 'Sequential', '8', '3')
    assert_same_weights(load_file(f), tiny.state_dict())
    with pytest.raises(ValueError, match=r'module `Sequential`.*pass it: `load_encoder\(encoder, path\)`'): load_encoder(f)
    other = copy.deepcopy(tiny); nn.init.zeros_(other[0].weight)
    torch.testing.assert_close(features(load_encoder(other, f), X3), features(tiny, X3))

def test_unregistered_composite_is_not_imported(tmp_path):
    enc = create_encoder('small_resnet', width=4)
    f = tmp_path/'x.safetensors'
    save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, f,
              metadata=dict(source='composite', arch='Evil', module='os', parts='{}', n_in='', pool='', kwargs='{}'))
    with pytest.raises(ValueError, match='`os.Evil` is not a composite encoder'): load_encoder(f)

# ---- the spec, and files of older versions

def test_spec_survives_copies_pickles_and_ssl_models():
    enc = create_encoder('small_resnet', n_in=1, width=8)
    spec = dict(source='small_resnet', arch='small_resnet', n_in=1, pool='catavgmax', kwargs={'width': 8})
    assert enc.encoder_spec == spec
    for e in (copy.deepcopy(enc), pickle.loads(pickle.dumps(enc)), create_simclr_model(enc, 16, 8).encoder): assert e.encoder_spec == spec
    with pytest.raises(ValueError, match='avgmax'): create_encoder('xresnet18', pool_type=PoolingType.AvgMax)   # timm's only: refused, not replaced
    assert copy_encoder(enc, 2).encoder_spec['n_in'] == 2 and enc.encoder_spec['n_in'] == 1

def test_pth_and_older_files(tmp_path):
    enc = create_encoder('xresnet18', n_in=1)
    export_encoder(enc, tmp_path/'enc.pth')
    sd = torch.load(tmp_path/'enc.pth', weights_only=True)
    create_body(xresnet18(), n_in=1, pretrained=False).load_state_dict(sd, strict=True)
    assert_same_weights(load_encoder(create_encoder('xresnet18', n_in=1), tmp_path/'enc.pth').state_dict(), enc.state_dict())
    with pytest.raises(ValueError, match='no metadata'): load_encoder(tmp_path/'enc.pth')
    # a file of an older version: the encoder's own names (`0.0.0.weight`), no metadata
    save_file(enc.state_dict(), tmp_path/'old.safetensors')
    assert_same_weights(load_encoder(create_encoder('xresnet18', n_in=1), tmp_path/'old.safetensors').state_dict(), enc.state_dict())
    with pytest.raises(ValueError, match='older version'): load_encoder(tmp_path/'old.safetensors')

def test_changed_encoder_exports_its_own_names(tmp_path):
    enc = create_encoder('small_resnet', n_in=1, width=4)
    enc[0][0] = nn.Conv2d(1, 4, 5, padding=2, bias=False)
    with pytest.warns(UserWarning, match='cannot be rebuilt from its `encoder_spec`'): f = export_encoder(enc, tmp_path/'e.safetensors')
    assert encoder_metadata(f)['source'] == 'module'
    assert_same_weights(load_file(f), enc.state_dict())

def test_load_encoder_arguments(tmp_path):
    f = export_encoder(create_encoder('small_resnet', width=4), tmp_path/'e.safetensors')
    with pytest.raises(TypeError, match='two paths'): load_encoder(f, f)
    with pytest.raises(TypeError, match='needs the `path`'): load_encoder(create_encoder('small_resnet', width=4))
    with pytest.raises(FileNotFoundError, match='No encoder weights'): load_encoder(tmp_path/'none.safetensors')

# ---- pretrained weights

@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    "Empty Hugging Face and torch hub caches, HF_HUB_OFFLINE unset"
    monkeypatch.setattr(hf_constants, 'HF_HUB_CACHE', str(tmp_path/'hf'))
    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path/'torch'))
    return tmp_path

def test_pretrained_without_network_fails_fast(empty_caches):
    if _reachable(hf_constants.ENDPOINT): pytest.skip('this machine reaches huggingface.co')
    t = time.time()
    with pytest.raises(ConnectionError) as e: create_encoder('resnet18', pretrained=True)
    took = time.time() - t
    assert took < 10, took
    msg = str(e.value)
    for s in ('huggingface.co cannot be reached', 'HF_HUB_OFFLINE', "create_encoder('resnet18', pretrained='path/to/weights.safetensors')"): assert s in msg, msg
    with pytest.raises(ConnectionError, match=r'create_encoder\(resnet18, pretrained='): create_encoder(torchvision.models.resnet18, pretrained=True)

def test_hf_hub_offline_fails_at_once(empty_caches, monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    t = time.time()
    with pytest.raises(ConnectionError, match='HF_HUB_OFFLINE is set'): create_encoder('resnet18', pretrained=True)
    assert time.time() - t < 2

def test_reachable_gives_up_after_its_timeout():
    "A server that accepts the connection and never answers (a network that drops packets, seen from the client)"
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); s.listen(1)
        t = time.time()
        assert not _reachable(f'http://127.0.0.1:{s.getsockname()[1]}/x', timeout=1)
        assert time.time() - t < 3

def test_local_weights_file_timm(tmp_path):
    ref = timm.create_model('resnet18')   # stands for downloaded weights: a classifier, 3 channels
    save_file(ref.state_dict(), tmp_path/'r18.safetensors'); torch.save({'state_dict': ref.state_dict()}, tmp_path/'r18.pth')
    for f in ('r18.safetensors', 'r18.pth'):
        enc = create_encoder('resnet18', pretrained=str(tmp_path/f))
        assert_same_weights(enc.state_dict(), {k: v for k, v in ref.state_dict().items() if not k.startswith('fc.')})
    enc1 = create_encoder('resnet18', n_in=1, pretrained=tmp_path/'r18.pth')
    torch.testing.assert_close(enc1.conv1.weight, ref.conv1.weight.sum(1, keepdim=True))   # timm adapts the first layer
    # a file written by `export_encoder` is a weights file too
    export_encoder(enc1, tmp_path/'e.safetensors')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert_same_weights(create_encoder('resnet18', n_in=1, pretrained=tmp_path/'e.safetensors').state_dict(), enc1.state_dict())
    with pytest.raises(ValueError, match="None of the weights"): create_encoder('resnet18', pretrained=export_encoder(create_encoder('xresnet18'), tmp_path/'x.pth'))
    with pytest.raises(FileNotFoundError, match='none.safetensors'): create_encoder('resnet18', pretrained=tmp_path/'none.safetensors')

def test_local_weights_file_fastai_and_torchvision(tmp_path):
    tv = torchvision.models.resnet18()
    torch.save(tv.state_dict(), tmp_path/'tv.pth')
    enc = create_encoder(torchvision.models.resnet18, pretrained=tmp_path/'tv.pth')
    assert_same_weights(enc[0].state_dict(), {k: v for k, v in create_body(tv, pretrained=True).state_dict().items()})
    xr = xresnet18()
    save_file(xr.state_dict(), tmp_path/'xr.safetensors')
    enc = create_encoder('xresnet18', n_in=1, pretrained=tmp_path/'xr.safetensors')
    torch.testing.assert_close(enc[0][0][0].weight, xr[0][0].weight.sum(1, keepdim=True))   # fastai adapts the first layer
    torch.testing.assert_close(enc[0][4][1].convpath[0][0].weight, xr[4][1].convpath[0][0].weight)
    # an exported body
    export_encoder(enc, tmp_path/'body.safetensors')
    assert_same_weights(create_encoder('xresnet18', n_in=1, pretrained=tmp_path/'body.safetensors').state_dict(), enc.state_dict())
    with pytest.raises(ValueError, match='does not hold the weights of `xresnet18`'): create_encoder('xresnet18', pretrained=tmp_path/'tv.pth')
    with pytest.raises(FileNotFoundError, match='none.pth'): create_encoder('xresnet18', pretrained=tmp_path/'none.pth')
    with pytest.raises(ValueError, match='no published weights'): create_encoder('small_resnet', pretrained=True)
    s = create_encoder('small_resnet', width=4)
    assert_same_weights(create_encoder('small_resnet', width=4, pretrained=export_encoder(s, tmp_path/'s.safetensors')).state_dict(), s.state_dict())

def test_cached_weights_are_used_without_network(empty_caches, monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    # timm's weights in the Hugging Face cache, as huggingface_hub lays them out
    ref = timm.create_model('resnet18')
    repo = empty_caches/'hf'/'models--timm--resnet18.a1_in1k'
    rev = 'a' * 40
    (repo/'snapshots'/rev).mkdir(parents=True); (repo/'refs').mkdir()
    (repo/'refs'/'main').write_text(rev)
    save_file(ref.state_dict(), repo/'snapshots'/rev/'model.safetensors')
    t = time.time()
    enc = create_encoder('resnet18', pretrained=True)
    assert time.time() - t < 5
    assert_same_weights(enc.state_dict(), {k: v for k, v in ref.state_dict().items() if not k.startswith('fc.')})
    # torchvision's in torch hub's cache
    tv = torchvision.models.resnet18()
    ckpt = Path(torch.hub.get_dir())/'checkpoints'
    assert str(ckpt).startswith(str(empty_caches))
    ckpt.mkdir(parents=True)
    torch.save(tv.state_dict(), ckpt/'resnet18-f37072fd.pth')
    enc = create_encoder(torchvision.models.resnet18, pretrained=True)
    torch.testing.assert_close(enc[0][7][1].conv2.weight, tv.layer4[1].conv2.weight)
