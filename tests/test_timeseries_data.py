"""Finding and reading the `.ts` files: the search order, the errors on a machine without them, and (where aeon's
files are installed) the shapes of the bundled data sets."""
import pytest, torch
import self_supervised.timeseries.data as tsd
from self_supervised.timeseries.data import find_ts_data, ts_dataset, read_ts, ts_datasets_available

TOY = "@problemName Toy\n@classLabel true a b\n@data\n{}\n"

def _write(d, name, train_rows, test_rows):
    d.mkdir(parents=True, exist_ok=True)
    (d/f'{name}_TRAIN.ts').write_text(TOY.format('\n'.join(train_rows)))
    (d/f'{name}_TEST.ts').write_text(TOY.format('\n'.join(test_rows)))

@pytest.fixture
def no_packages(monkeypatch):
    "A machine without aeon or sktime installed"
    monkeypatch.setattr(tsd, '_package_data_dir', lambda pkg: None)
    monkeypatch.delenv('SSL_TS_DATA', raising=False)

def test_env_var_then_path(tmp_path, monkeypatch, no_packages):
    "`path` wins over $SSL_TS_DATA, which is searched in a folder named after the data set's prefix"
    _write(tmp_path/'env'/'Toy', 'Toy_eq', ['1,2:3,4:a', '5,6:7,8:b'], ['1,1:1,1:b'])
    monkeypatch.setenv('SSL_TS_DATA', str(tmp_path/'env'))
    assert find_ts_data('Toy_eq') == tmp_path/'env'/'Toy'
    _write(tmp_path/'mine', 'Toy_eq', ['0,0:0,0:a', '1,1:1,1:b'], ['1,1:1,1:a'])
    assert find_ts_data('Toy_eq', tmp_path/'mine') == tmp_path/'mine'
    ds = ts_dataset('Toy_eq', tmp_path/'mine', norm=False)
    assert ds.train_x.shape == (2, 2, 2) and ds.test_y.tolist() == [0]

def test_missing_everywhere(tmp_path, no_packages):
    with pytest.raises(FileNotFoundError, match='pip install --no-deps aeon'): find_ts_data('BasicMotions', tmp_path)
    assert ts_datasets_available(tmp_path) == []

def test_unknown_label_and_bad_file(tmp_path, no_packages):
    _write(tmp_path, 'Toy', ['1,2:3,4:a'], ['1,2:3,4:c'])
    with pytest.raises(ValueError, match='not in the header'): ts_dataset('Toy', tmp_path)
    (tmp_path/'x.ts').write_text('1,2,3\n')
    with pytest.raises(ValueError, match='header line'): read_ts(tmp_path/'x.ts')
    (tmp_path/'y.ts').write_text('@problemName y\n')
    with pytest.raises(ValueError, match='no `@data`'): read_ts(tmp_path/'y.ts')

def test_standardised_with_training_stats(tmp_path, no_packages):
    _write(tmp_path, 'Toy', ['1,3:10,30:a', '3,5:30,50:b'], ['3,3:30,30:a'])
    ds = ts_dataset('Toy', tmp_path)
    torch.testing.assert_close(ds.train_x.mean((0, 2)), torch.zeros(2))
    torch.testing.assert_close(ds.test_x, torch.zeros(1, 2, 2))        # the training means, in both features
    torch.testing.assert_close(ds.stats[0], torch.tensor([3., 30.]))

aeon = pytest.mark.skipif(tsd._package_data_dir('aeon') is None, reason="aeon's data files are not installed (pip install --no-deps aeon)")

@aeon
@pytest.mark.parametrize('name,train,test,n_classes', [('BasicMotions', (40, 6, 100), (40, 6, 100), 4),
                                                        ('JapaneseVowels_eq', (270, 12, 25), (370, 12, 25), 9)])
def test_bundled(name, train, test, n_classes):
    ds = ts_dataset(name)
    assert tuple(ds.train_x.shape) == train and tuple(ds.test_x.shape) == test and len(ds.classes) == n_classes
    assert torch.isfinite(ds.train_x).all() and ds.train_y.bincount().min() > 0
    with pytest.raises(ValueError, match="pad='edge'"): ts_dataset('JapaneseVowels')
