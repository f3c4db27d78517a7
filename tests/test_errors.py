"Bad input gets a clear error that names the argument and the fix: one test per case"
import gzip
import pytest, torch
from torch import nn
from fasttransform import Pipeline
from fastai.learner import Learner
from self_supervised.augmentations import get_batch_augs, get_multi_aug_pipelines, assert_aug_pipelines, NormalizeBatch
from self_supervised.data import fashion_mnist, read_idx, ssl_dls, TensorDL, fmnist_stats
from self_supervised.layers import create_encoder, load_encoder
from self_supervised.losses import nt_xent_loss
from self_supervised.vision.simclr import SimCLR, create_simclr_model, get_simclr_aug_pipelines

def cnn(n_in=1):
    return nn.Sequential(nn.Conv2d(n_in, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())

def test_wrong_number_of_pipelines():
    with pytest.raises(ValueError, match=r'`aug_pipelines` needs 2 pipelines.*get_multi_aug_pipelines\(2, size\)'):
        SimCLR(get_multi_aug_pipelines(3, 16))

def test_pipelines_not_a_list():
    with pytest.raises(TypeError, match='`aug_pipelines` must be a list'):
        SimCLR(get_batch_augs(16))

def test_pipeline_of_wrong_type():
    with pytest.raises(TypeError, match=r'`aug_pipelines\[1\]`.*Pipeline\(tfms, split_idx=0\)'):
        SimCLR([get_batch_augs(16), nn.Identity()])

def test_pipeline_not_for_training():
    with pytest.raises(ValueError, match=r'`aug_pipelines\[1\]` has split_idx=1.*split_idx=0'):
        SimCLR([get_batch_augs(16), Pipeline([NormalizeBatch(0.5, 0.5)], split_idx=1)])

def test_batch_of_one_for_contrastive_loss():
    with pytest.raises(ValueError, match='at least 2 samples.*increase the batch size'):
        nt_xent_loss(torch.randn(1, 8), torch.randn(1, 8))

def test_batch_of_one_in_training():
    imgs = (torch.rand(5, 1, 16, 16) * 255).byte()
    dls = ssl_dls(imgs, bs=4, device='cpu')
    dls.train.drop_last = False; dls.train.shuffle = False
    learn = Learner(dls, create_simclr_model(cnn(), 8, 4), cbs=SimCLR(get_simclr_aug_pipelines(16, stats=fmnist_stats)))
    with pytest.raises(ValueError, match='at least 2 images.*increase `bs`'): learn.fit(1)

def test_embeddings_of_different_shapes():
    with pytest.raises(ValueError, match='same shape'): nt_xent_loss(torch.randn(4, 8), torch.randn(4, 7))
    with pytest.raises(ValueError, match='same shape'): nt_xent_loss(torch.randn(4, 8), torch.randn(5, 8))

def test_channels_do_not_match_encoder():
    imgs = (torch.rand(8, 3, 16, 16) * 255).byte()
    learn = Learner(ssl_dls(imgs, bs=4, device='cpu'), create_simclr_model(cnn(1), 8, 4),
                    cbs=SimCLR(get_simclr_aug_pipelines(16, stats=None)))
    with pytest.raises(ValueError, match=r'3 channel\(s\) but the encoder expects 1.*n_in=3'): learn.fit(1)

def test_stats_do_not_match_channels():
    with pytest.raises(ValueError, match='`stats` has 3 values per channel but the batch has 1'):
        get_batch_augs(16)(torch.rand(2, 1, 16, 16))

def test_unknown_architecture_lists_close_matches():
    with pytest.raises(ValueError, match=r"Unknown architecture `arch='resnet181'`.*Close matches: .*resnet18"):
        create_encoder('resnet181')

def test_data_directory_without_files(no_fmnist):
    d = no_fmnist/'some_dir'; d.mkdir()
    with pytest.raises(FileNotFoundError) as e: fashion_mnist(d)
    msg = str(e.value)
    assert str(d) in msg and 'train-images-idx3-ubyte.gz' in msg
    assert 'apt-get install dataset-fashion-mnist' in msg and 'SSL_DATA' in msg and 'download_fashion_mnist' in msg

def _write(path, raw):
    path.write_bytes(gzip.compress(raw)); return path

def test_corrupt_idx_file(tmp_path):
    (tmp_path/'x.gz').write_bytes(gzip.compress(b'\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02'))
    with pytest.raises(ValueError, match='truncated IDX header'): read_idx(_write(tmp_path/'y.gz', b'\x00\x00\x08\x03\x00\x00\x00\x05'))
    with pytest.raises(ValueError, match='header says shape'): read_idx(tmp_path/'x.gz')

def test_empty_dataset():
    with pytest.raises(ValueError, match='`x` is empty'): TensorDL(torch.zeros(0, 1, 8, 8, dtype=torch.uint8))

def test_temperature_out_of_range():
    with pytest.raises(ValueError, match='`temp` must be > 0'): SimCLR(get_simclr_aug_pipelines(16), temp=-1.)

def test_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='No encoder weights'): load_encoder(cnn(), tmp_path/'none.safetensors')

def test_nan_in_batch_stops_training():
    "A NaN or Inf in the input is an error that says so (training stops rather than spreading NaN into the weights)"
    x = torch.rand(32, 1, 16, 16)
    x[5, 0, 3, 3] = float('nan')
    dls = ssl_dls(x, bs=16, device='cpu')
    dls.train.shuffle = False
    learn = Learner(dls, create_simclr_model(cnn(), 8, 4), cbs=SimCLR(get_simclr_aug_pipelines(16, stats=fmnist_stats)))
    with pytest.raises(ValueError, match='contains NaN or Inf: check the data'):
        learn.fit(1)
