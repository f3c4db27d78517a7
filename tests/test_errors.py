"Bad input gets a clear error that names the argument and the fix: one case per row of `CASES`, and a few tests that need data or training"
import gzip, warnings
import numpy as np
import pytest, torch
from torch import nn
from fasttransform import Pipeline
from fastai.learner import Learner
from self_supervised.augmentations import get_batch_augs, get_multi_aug_pipelines, get_multi_crop_pipelines, NormalizeBatch
from self_supervised.data import fashion_mnist, read_idx, ssl_dls, TensorDL, fmnist_stats, check_images
from self_supervised.layers import create_encoder, load_encoder, export_encoder, encoder_nf, small_resnet, encoder_metadata
from self_supervised.losses import nt_xent_loss, moco_loss, swav_loss, barlow_twins_loss, vicreg_loss
from self_supervised.evaluation import evaluate_encoder, linear_probe, linear_probe_from_ssl, fine_tune_from_ssl
from self_supervised.registry import ssl_args, ssl_learner, recipe_uses, Recipe
from self_supervised.vision.simclr import SimCLR, create_simclr_model, get_simclr_aug_pipelines
from self_supervised.vision.moco import MOCO
from self_supervised.vision.byol import BYOL
from self_supervised.vision.barlow_twins import BarlowTwins
from self_supervised.vision.vicreg import VICReg
from self_supervised.timeseries.data import ts_dls
from self_supervised.timeseries.encoders import create_ts_encoder

def cnn(n_in=1):
    return nn.Sequential(nn.Conv2d(n_in, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())

def augs(n=2): return get_multi_aug_pipelines(n, 16)
def imgs(n=32, c=1, s=16): return (torch.rand(n, c, s, s) * 255).byte()
def dls(n=32, c=1, s=16, bs=8): return ssl_dls(imgs(n, c, s), bs=bs, device='cpu')
def z(n=4, d=8): return torch.randn(n, d)
nan, inf = float('nan'), float('inf')

def _clip_tokenizer(*args):
    pytest.importorskip('open_clip')
    from self_supervised.multimodal.data import CLIPTokenizer
    return CLIPTokenizer(*args)

def _recipe(**kw): return Recipe('T', 'p', model=None, views=None, callback=None, **kw)

# (case id, a callable that triggers it, the exception, a regex of its message)
CASES = [
    # the callbacks' pipelines
    ('pipelines-wrong-number', lambda: SimCLR(augs(3)), ValueError, r'`aug_pipelines` needs 2 pipelines.*get_multi_aug_pipelines\(2, size\)'),
    ('pipelines-not-a-list', lambda: SimCLR(get_batch_augs(16)), TypeError, '`aug_pipelines` must be a list'),
    ('pipeline-wrong-type', lambda: SimCLR([get_batch_augs(16), nn.Identity()]), TypeError, r'`aug_pipelines\[1\]`.*Pipeline\(tfms, split_idx=0\)'),
    ('pipeline-not-for-training', lambda: SimCLR([get_batch_augs(16), Pipeline([NormalizeBatch(0.5, 0.5)], split_idx=1)]), ValueError,
     r'`aug_pipelines\[1\]` has split_idx=1.*split_idx=0'),
    ('stats-vs-channels', lambda: get_batch_augs(16)(torch.rand(2, 1, 16, 16)), ValueError, '`stats` has 3 values per channel but the batch has 1'),
    # losses
    ('loss-batch-of-one', lambda: nt_xent_loss(z(1), z(1)), ValueError, 'at least 2 samples.*increase the batch size'),
    ('loss-dim-differs', lambda: nt_xent_loss(z(4, 8), z(4, 7)), ValueError, 'same shape'),
    ('loss-batch-differs', lambda: nt_xent_loss(z(4, 8), z(5, 8)), ValueError, 'same shape'),
    # temperatures: one shared check, in the losses and the callbacks
    ('temp-negative-callback', lambda: SimCLR(get_simclr_aug_pipelines(16), temp=-1.), ValueError, '`SimCLR`: the temperature `temp` must be > 0'),
    ('temp-zero-loss', lambda: nt_xent_loss(z(), z(), temp=0.), ValueError, '`nt_xent_loss`: the temperature `temp` must be > 0'),
    ('temp-string', lambda: SimCLR(augs(), temp='0.5'), TypeError, r"`temp` must be a number, got '0.5'.*`temp=0.5`"),
    ('temp-inf', lambda: MOCO(augs(), temp=inf), ValueError, '`MOCO`: the temperature `temp` must be a finite number'),
    ('temp-nan', lambda: moco_loss(z(), z(), temp=nan), ValueError, '`temp` must be a finite number, got nan'),
    ('temp-swav', lambda: swav_loss([z()], [torch.softmax(z(), 1)], temp=-0.1), ValueError, '`swav_loss`: the temperature `temp` must be > 0'),
    # loss weights and momentum
    ('weight-barlow-negative', lambda: BarlowTwins(augs(), lmb=-1e-3), ValueError, '`BarlowTwins`: the weight of the off-diagonal terms `lmb` must be >= 0'),
    ('weight-barlow-nan', lambda: barlow_twins_loss(z(), z(), lambd=nan), ValueError, '`lambd` must be a finite number'),
    ('weight-vicreg-negative', lambda: VICReg(augs(), var_w=-1.), ValueError, '`VICReg`: the weight `var_w` must be >= 0'),
    ('weight-vicreg-loss', lambda: vicreg_loss(z(), z(), cov_w=-1.), ValueError, '`vicreg_loss`: the weight `cov_w` must be >= 0'),
    ('momentum-above-1', lambda: BYOL(augs(), m=1.5), ValueError, r'BYOL: the momentum `m` must be a number in \[0, 1\]'),
    ('momentum-negative', lambda: MOCO(augs(), m=-0.1), ValueError, r'MOCO: the momentum `m` must be a number in \[0, 1\]'),
    # sizes and crops of the views
    ('size-zero', lambda: get_batch_augs(0), ValueError, '`size` is the side of the square views in pixels, a positive int, got 0'),
    ('size-negative', lambda: get_simclr_aug_pipelines(-28), ValueError, '`size` is the side'),
    ('min-scale-zero', lambda: get_batch_augs(16, resize_scale=(0., 1.)), ValueError, r'`resize_scale=\(0.0, 1.0\)`.*0 < min <= max <= 1'),
    ('min-scale-above-1', lambda: get_multi_aug_pipelines(2, 16, resize_scale=(1.2, 1.)), ValueError, '`resize_scale'),
    ('multi-crop-scale', lambda: get_multi_crop_pipelines((16, 8), (2, 2), (0.3, -0.1), (1., 0.5)), ValueError, '`resize_scale'),
    # encoders
    ('arch-unknown', lambda: create_encoder('resnet181'), ValueError, r"Unknown architecture `arch='resnet181'`.*Close matches: .*resnet18"),
    ('width-zero', lambda: small_resnet(width=0), ValueError, '`small_resnet`: `width` is the number of channels.*positive int, got 0'),
    ('width-zero-by-name', lambda: create_encoder('small_resnet', n_in=1, width=0), ValueError, '`width`.*got 0'),
    ('pool-bogus-small-resnet', lambda: create_encoder('small_resnet', n_in=1, pool_type='bogus'), ValueError,
     r"Unknown `pool_type='bogus'` for a small_resnet encoder: choose one of 'avg', 'max', 'catavgmax', 'fast'"),
    ('pool-bogus-fastai', lambda: create_encoder('xresnet18', n_in=1, pool_type='bogus'), ValueError, r"`pool_type='bogus'` for a fastai encoder"),
    ('pool-bogus-timm', lambda: create_encoder('resnet18', n_in=1, pool_type='bogus'), ValueError, r"`pool_type='bogus'` for a timm encoder.*'avgmax'"),
    ('pool-avgmax-fastai', lambda: create_encoder('xresnet18', n_in=1, pool_type='avgmax'), ValueError, "'avgmax'.*exists for timm encoders only"),
    ('encoder-feature-map', lambda: encoder_nf(nn.Sequential(nn.Conv2d(1, 4, 3))), ValueError,
     r'outputs shape \(4, 30, 30\) per sample.*no global pooling.*AdaptiveAvgPool2d'),
    ('encoder-flattens-feature-map', lambda: create_simclr_model(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten()), 8, 4), ValueError,
     'it flattens a feature map: it has no global pooling'),
    ('encoder-without-layers', lambda: encoder_nf(nn.Sequential(nn.Identity())), ValueError, 'no Linear or convolution layer.*num_out_features'),
    ('ts-encoder-width-zero', lambda: create_ts_encoder(n_in=2, width=0), ValueError, '`width`.*>= 1, got 0'),
    ('ts-encoder-zero-frames', lambda: create_ts_encoder(n_in=2, width=8)(torch.randn(2, 2, 0)), ValueError, 'clips of 0 frames'),
    # data
    ('dataset-empty', lambda: TensorDL(torch.zeros(0, 1, 8, 8, dtype=torch.uint8)), ValueError, '`x` is empty'),
    ('channels-last-grey', lambda: ssl_dls(torch.zeros(8, 16, 16, 1), bs=4), ValueError, r'looks channels-last.*train_x.permute\(0, 3, 1, 2\)'),
    ('channels-last-rgb', lambda: ssl_dls(np.zeros((8, 16, 16, 3), np.uint8), bs=4), ValueError, r'\(8, 16, 16, 3\).*channels-last'),
    ('no-channel-axis', lambda: ssl_dls(torch.zeros(8, 16, 16), bs=4), ValueError, r'without a channel axis.*`train_x\[:, None\]`'),
    ('valid-channels-last', lambda: ssl_dls(torch.zeros(8, 1, 16, 16), torch.zeros(4, 16, 16, 3), bs=4), ValueError, '`valid_x`.*channels-last'),
    ('ts-zero-frames', lambda: ts_dls(torch.randn(8, 3, 0), bs=4), ValueError, '0 frames per clip'),
    ('clip-tokenizer-none', lambda: _clip_tokenizer(None), ValueError, r"`context_length` must be an int >= 3.*got None.*CLIP's 77"),
    # evaluation
    ('eval-empty-test-set', lambda: evaluate_encoder(cnn(), imgs(8), torch.arange(8) % 2, imgs(0), torch.zeros(0)), ValueError, '`test_x` is empty'),
    ('eval-n-probe-zero', lambda: evaluate_encoder(cnn(), imgs(8), torch.arange(8) % 2, imgs(4), torch.arange(4) % 2, n_probe=0), ValueError,
     r'`n_probe=0`.*at least 2.*probe=False'),
    ('probe-one-class', lambda: linear_probe(z(4, 3), torch.zeros(4), z(2, 3), torch.zeros(2)), ValueError, 'all of one class'),
    ('probe-lr-negative', lambda: linear_probe_from_ssl(cnn(), dls(), lr=-1e-3), ValueError, '`linear_probe_from_ssl`: `lr` must be > 0'),
    ('fine-tune-lr-nan', lambda: fine_tune_from_ssl(cnn(), dls(), base_lr=nan), ValueError, '`fine_tune_from_ssl`: `base_lr` must be a finite number'),
    # the registry's settings
    ('setting-typo', lambda: ssl_args(dls(), 'simclr', tmep=0.2), ValueError, r'Unknown setting `tmep` for `simclr` \(did you mean `temp`\?\): the settings are'),
    ('setting-typo-recipe', lambda: ssl_learner(dls(), 'byol', recipe={'min_scal': 0.2}), ValueError, r'Unknown setting `min_scal`.*`min_scale`'),
    ('setting-temp-string', lambda: ssl_args(dls(), 'simclr', temp='0.5'), TypeError, "`ssl_args`: `temp` must be a number"),
    ('setting-lr-negative', lambda: ssl_args(dls(), 'simclr', lr=-1.), ValueError, '`ssl_args`: `lr` must be > 0'),
    ('setting-lr-inf', lambda: ssl_args(dls(), 'simclr', recipe=dict(lr=inf)), ValueError, '`lr` must be a finite number'),
    ('setting-min-scale', lambda: ssl_args(dls(), 'byol', min_scale=1.5), ValueError, r'`min_scale` must be in \(0, 1\]'),
    ('setting-size-zero', lambda: ssl_args(dls(), 'byol', size=0), ValueError, '`size` is the side'),
    ('recipe-lr-negative', lambda: _recipe(lr=-1.), ValueError, '`Recipe T`: `lr` must be > 0'),
]

@pytest.mark.parametrize('fn,exc,msg', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(fn, exc, msg):
    with pytest.raises(exc, match=msg): fn()

def test_case_ids_are_unique(): assert len({c[0] for c in CASES}) == len(CASES)

# ---- warnings

def test_float_images_in_0_255_warn():
    with pytest.warns(UserWarning, match=r'`train_x` holds float images with values up to .*Divide by 255 \(`train_x / 255`\)'):
        ssl_dls(torch.rand(8, 1, 16, 16) * 255, bs=4, device='cpu')
    with warnings.catch_warnings():
        warnings.simplefilter('error'); ssl_dls(torch.rand(8, 1, 16, 16), bs=4, device='cpu')   # [0, 1]: silent

def test_setting_the_algorithm_does_not_use_warns():
    assert recipe_uses('simclr', 'temp') and not recipe_uses('byol', 'temp') and recipe_uses('byol', 'n_in')
    with pytest.warns(UserWarning, match=r"`byol` does not use the setting `temp=0.2`.*recipe_uses\('byol', 'temp'\)"):
        ssl_args(dls(), 'byol', temp=0.2)
    with warnings.catch_warnings():   # the defaults (what a CLI passes to every method), and a run's other keys, are silent
        warnings.simplefilter('error'); ssl_args(dls(), 'byol', dict(min_scale=0.4, bn=True, epochs=3, arch='small_resnet'))

def test_numpy_images_are_accepted():
    d = ssl_dls(np.random.randint(0, 255, (8, 1, 16, 16), dtype=np.uint8), bs=4, device='cpu')
    assert d.one_batch()[0].shape == (4, 1, 16, 16)

# ---- files

def test_data_directory_without_files(no_fmnist):
    d = no_fmnist/'some_dir'; d.mkdir()
    with pytest.raises(FileNotFoundError) as e: fashion_mnist(d)
    assert str(d) in str(e.value) and 'train-images-idx3-ubyte.gz' in str(e.value)   # an explicit folder is used or refused
    with pytest.raises(FileNotFoundError) as e: fashion_mnist()   # no folder: where it looked, and three ways to get the data
    msg = str(e.value)
    assert 'apt-get install dataset-fashion-mnist' in msg and 'SSL_DATA' in msg and 'download_fashion_mnist' in msg

def _write(path, raw):
    path.write_bytes(gzip.compress(raw)); return path

def test_corrupt_idx_file(tmp_path):
    (tmp_path/'x.gz').write_bytes(gzip.compress(b'\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02'))
    with pytest.raises(ValueError, match='truncated IDX header'): read_idx(_write(tmp_path/'y.gz', b'\x00\x00\x08\x03\x00\x00\x00\x05'))
    with pytest.raises(ValueError, match='header says shape'): read_idx(tmp_path/'x.gz')

def test_truncated_or_plain_idx_file(tmp_path):
    raw = gzip.compress(b'\x00\x00\x08\x01\x00\x00\x00\x05' + bytes(5))
    (tmp_path/'cut.gz').write_bytes(raw[:len(raw) // 2])
    with pytest.raises(ValueError, match=r'cut.gz cannot be read as a gzipped IDX file.*truncated or not gzip'): read_idx(tmp_path/'cut.gz')
    (tmp_path/'plain.gz').write_bytes(b'\x00\x00\x08\x01\x00\x00\x00\x05' + bytes(5))
    with pytest.raises(ValueError, match=r'plain.gz cannot be read.*name without .gz'): read_idx(tmp_path/'plain.gz')

def test_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='No encoder weights'): load_encoder(cnn(), tmp_path/'none.safetensors')

def test_weights_files_of_other_kinds(tmp_path):
    enc = create_encoder('small_resnet', n_in=1, width=4)
    torch.save({'model': enc.state_dict(), 'opt': {'state': {}, 'hypers': []}}, tmp_path/'learn.pth')   # what `learn.save` writes
    with pytest.raises(ValueError, match=r"learn.pth'` is a training checkpoint of `learn.save`.*export_encoder\(learn.model"):
        load_encoder(enc, tmp_path/'learn.pth')
    torch.save(enc.state_dict(), tmp_path/'renamed.safetensors')
    with pytest.raises(ValueError, match=r"renamed.safetensors'` is not a safetensors file"): load_encoder(enc, tmp_path/'renamed.safetensors')
    torch.save(enc, tmp_path/'model.pth')   # a pickled module: torch would advise `weights_only=False`, which runs code
    with pytest.raises(ValueError, match=r"model.pth'` cannot be read as weights") as e: load_encoder(enc, tmp_path/'model.pth')
    assert 'weights_only' not in str(e.value)

def test_export_refuses_non_finite_weights(tmp_path):
    enc = create_encoder('small_resnet', n_in=1, width=4)
    with torch.no_grad(): enc[1][0].weight[0, 0, 0, 0] = float('inf')
    with pytest.raises(ValueError, match=r'The weight `1.0.weight` of the encoder exported to .* holds 1 NaN or Inf'):
        export_encoder(enc, tmp_path/'enc.safetensors')
    assert not (tmp_path/'enc.safetensors').exists()

def test_checksum_is_checked(tmp_path):
    from safetensors.torch import load_file, save_file
    f = export_encoder(create_encoder('small_resnet', n_in=1, width=4), tmp_path/'enc.safetensors')
    meta, sd = encoder_metadata(f), load_file(f)
    assert len(meta['sha256']) == 64
    sd['0.0.weight'] = sd['0.0.weight'] * 2
    save_file(sd, tmp_path/'changed.safetensors', metadata=meta)
    with pytest.raises(ValueError, match=r'changed.safetensors` do not match the checksum'): load_encoder(tmp_path/'changed.safetensors')
    del meta['sha256']; save_file(sd, tmp_path/'old.safetensors', metadata=meta)
    load_encoder(tmp_path/'old.safetensors')   # a file without a checksum still loads

# ---- in training

def test_batch_of_one_in_training():
    dls = ssl_dls(imgs(5), bs=4, device='cpu')
    dls.train.drop_last = False; dls.train.shuffle = False
    learn = Learner(dls, create_simclr_model(cnn(), 8, 4), cbs=SimCLR(get_simclr_aug_pipelines(16, stats=fmnist_stats)))
    with pytest.raises(ValueError, match='at least 2 images.*increase `bs`'): learn.fit(1)

def test_channels_do_not_match_encoder():
    learn = Learner(ssl_dls(imgs(8, 3), bs=4, device='cpu'), create_simclr_model(cnn(1), 8, 4),
                    cbs=SimCLR(get_simclr_aug_pipelines(16, stats=None)))
    with pytest.raises(ValueError, match=r'3 channel\(s\) but the encoder expects 1.*n_in=3'): learn.fit(1)

def test_nan_in_batch_stops_training():
    "A NaN or Inf in the input is an error that says so (training stops rather than spreading NaN into the weights)"
    x = torch.rand(32, 1, 16, 16)
    x[5, 0, 3, 3] = float('nan')
    dls = ssl_dls(x, bs=16, device='cpu')
    dls.train.shuffle = False
    learn = Learner(dls, create_simclr_model(cnn(), 8, 4), cbs=SimCLR(get_simclr_aug_pipelines(16, stats=fmnist_stats)))
    with pytest.raises(ValueError, match='contains NaN or Inf: check the data'):
        learn.fit(1)

def test_model_that_does_not_match_its_callback():
    "BYOL's model (two outputs) under SimCLR and MoCo: the callback says what the model returned and where the right builder is"
    from self_supervised.vision.byol import create_byol_model
    from self_supervised.vision.moco import MOCO, get_moco_aug_pipelines
    for cb, name in ((SimCLR(get_simclr_aug_pipelines(16, stats=fmnist_stats)), 'simclr'), (MOCO(get_moco_aug_pipelines(16, stats=fmnist_stats), K=32), 'moco')):
        learn = Learner(ssl_dls(imgs(32), bs=16, device='cpu'), create_byol_model(cnn(), 8, 4), cbs=cb)
        with pytest.raises(TypeError, match=rf"{type(cb).__name__} cannot compute its loss from the model's output, a tuple of 2 \(a tensor of shape \(\d+, 4\), .*"
                                            rf"the model does not match the callback.*self_supervised.vision.{name}"):
            with learn.no_bar(), learn.no_logging(): learn.fit(1)

def test_float_images_in_0_255_warn_in_any_loader():
    "A loader of the user's own (a torch Dataset of floats) is checked by the callback, once per fit"
    from fastai.data.core import DataLoaders
    from self_supervised.callback import SSLLearner
    learn = SSLLearner(DataLoaders.from_dsets(list(zip(torch.rand(32, 1, 16, 16) * 255)), list(zip(torch.rand(8, 1, 16, 16))), bs=8, device='cpu'),
                    create_simclr_model(cnn(), 8, 4), cbs=SimCLR(get_simclr_aug_pipelines(16, stats=None)))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        with learn.no_bar(), learn.no_logging(): learn.fit(1)
    msgs = [str(o.message) for o in w if 'Divide by 255' in str(o.message)]
    assert len(msgs) == 1 and '`the input batch` holds float images with values up to' in msgs[0]
