"Foundation data layer: loaders of every layout, splitters' guarantees, DataLoaders contract with fastai, bad input."
import pickle
import numpy as np, pandas as pd, pytest, torch
from hypothesis import given, settings, strategies as st, HealthCheck
from fastai.collab import collab_learner, TabularCollab, EmbeddingDotBias
from fastai.tabular.core import Categorify
from fastai.data.block import TransformBlock
from fastai.learner import load_learner
from collab_ext.core import CollabDataError, CollabWarning
from collab_ext.data.load import load_movielens
from collab_ext.data.core import crosstab, ratings_matrix, clean_ratings
from collab_ext.data.split import *
from collab_ext.data.loaders import FastCollabDataLoaders
from collab_ext.synth import synth_movielens

# ---------------------------------------------------------------- loaders of every layout
def test_ml100k_real(ml100k):
    r,u,i = ml100k
    assert ml100k.layout == 'ml-100k' and len(r) == 100_000 and len(u) == 943 and len(i) == 1682
    assert r.columns.tolist() == ['user','item','rating','timestamp','title']
    assert r.timestamp.min() == pd.Timestamp('1997-09-20 03:05:10')
    assert u.loc[u.user==1, ['age','gender','occupation','zip']].values.tolist() == [[24,'M','technician','85711']]
    assert i[ml100k.genres].sum().sum() == 2893          # genre flags as in u.item
    assert r.rating.sum() == 352_986

def test_untar_path_used_when_no_path(monkeypatch, ml100k_path):
    import fastai.data.external as ext
    calls = []
    monkeypatch.setattr(ext, 'untar_data', lambda url, *a, **k: calls.append(url) or ml100k_path)
    ml = load_movielens()
    assert calls == [ext.URLs.ML_100k] and len(ml.ratings) == 100_000

def test_download_failure_is_clear(monkeypatch):
    import fastai.data.external as ext
    def boom(*a, **k): raise OSError('Name or service not known')
    monkeypatch.setattr(ext, 'untar_data', boom)
    with pytest.raises(CollabDataError, match='could not download MovieLens-100k'): load_movielens()

def _write_1m(d):
    d.mkdir(parents=True)
    (d/'ratings.dat').write_text('1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n3::48::2::978298413\n')
    (d/'movies.dat').write_bytes('1193::One Flew Over the Cuckoo\'s Nest (1975)::Drama\n661::James and the Giant Peach (1996)::Animation|Children\'s|Musical\n48::Pocahontas (1995)::Animation|Children\'s|Musical|Romance\n'.encode('latin-1'))
    (d/'users.dat').write_text('1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n')

def test_ml1m_layout(tmp_path):
    _write_1m(tmp_path/'ml-1m')
    ml = load_movielens(tmp_path/'ml-1m')
    assert ml.layout == 'ml-1m' and len(ml.ratings) == 4
    assert ml.ratings.title.tolist()[0] == "One Flew Over the Cuckoo's Nest (1975)"
    assert ml.users.occupation.tolist() == ['K-12 student', 'self-employed', 'scientist']
    assert ml.items.set_index('item').loc[48, 'Romance'] == 1 and ml.items.year.tolist() == [1975, 1996, 1995]

def test_ml10m_layout_without_users(tmp_path):
    d = tmp_path/'ml-10M100K'; d.mkdir()
    (d/'ratings.dat').write_text('1::122::5::838985046\n1::185::4.5::838983525\n')
    (d/'movies.dat').write_text('122::Boomerang (1992)::Comedy|Romance\n185::Net, The (1995)::Action|Crime|Thriller\n')
    ml = load_movielens(d)
    assert ml.layout == 'ml-10m' and ml.ratings.rating.tolist() == [5.0, 4.5] and ml.users.user.tolist() == [1]

@pytest.mark.parametrize('name', ['ml-latest-small', 'ml-latest', 'ml-20m', 'ml-25m'])
def test_csv_family(tmp_path, name):
    d = tmp_path/name; d.mkdir()
    (d/'ratings.csv').write_text('userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n2,1,0.5,964982224\n')
    (d/'movies.csv').write_text('movieId,title,genres\n1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n3,"Grumpier Old Men, The (1995)",Comedy|Romance\n5,Untitled,(no genres listed)\n')
    ml = load_movielens(tmp_path)        # layout found one level down
    assert ml.layout == 'csv' and ml.ratings.rating.tolist() == [4.0, 4.5, 0.5]
    assert ml.items.Comedy.tolist() == [1, 1, 0] and '(no genres listed)' not in ml.genres
    assert ml.ratings.timestamp.dtype.kind == 'M'

def test_malformed_lines_name_file_and_line(tmp_path):
    _write_1m(tmp_path/'a')
    p = tmp_path/'a'/'ratings.dat'
    p.write_text(p.read_text() + '4::12::x::978298413\n')
    with pytest.raises(CollabDataError, match=r"ratings.dat: malformed line 5 .*'rating'"): load_movielens(tmp_path/'a')
    p.write_text('1::1193::5::978300760\n1::661::3\n')
    with pytest.raises(CollabDataError, match=r"ratings.dat: malformed line 2"): load_movielens(tmp_path/'a')
    p.write_text('1::1193::5::978300760::9\n')
    with pytest.raises(CollabDataError, match=r"ratings.dat: malformed line 1"): load_movielens(tmp_path/'a')

def test_missing_path_and_unknown_layout(tmp_path):
    with pytest.raises(CollabDataError, match='no such file'): load_movielens(tmp_path/'nope')
    (tmp_path/'notes.txt').write_text('x')
    with pytest.raises(CollabDataError, match=r"no MovieLens layout recognised.*notes.txt"): load_movielens(tmp_path)

# ---------------------------------------------------------------- crosstab and sparse matrix
def test_crosstab_matches_rows(ratings):
    ct = crosstab(ratings, 15, 15)
    top_u = ratings.user.value_counts().index[:15]
    assert list(ct.index) == list(top_u)
    sub = ratings[ratings.user.isin(ct.index) & ratings.item.isin(ct.columns)]
    assert ct.notna().sum().sum() == len(sub)
    u,i,r = sub.iloc[3][['user','item','rating']]
    assert ct.loc[u, i] == r

def test_ratings_matrix_is_sparse_and_exact(ratings):
    sm = ratings_matrix(ratings)
    assert sm.matrix.nnz == 100_000 and sm.matrix.format == 'csr'
    rows, cols = sm.user_index(ratings.user), sm.item_index(ratings.item)
    np.testing.assert_array_equal(np.asarray(sm.matrix[rows, cols]).ravel(), ratings.rating.to_numpy())

def test_ratings_matrix_huge_id_space_stays_small():
    ids = np.array([1, 10**12, 5*10**12])
    df = pd.DataFrame({'user': ids, 'item': ids[::-1], 'rating': [1., 2., 3.]})
    sm = ratings_matrix(df)
    assert sm.matrix.shape == (3, 3) and sm.matrix.nnz == 3

# ---------------------------------------------------------------- splitters (property tests)
def frames(min_rows=5):
    "Random small ratings frames with repeated users/items and timestamps"
    return st.integers(min_rows, 120).flatmap(lambda n: st.tuples(
        st.lists(st.integers(1, 15), min_size=n, max_size=n), st.lists(st.integers(1, 25), min_size=n, max_size=n),
        st.lists(st.integers(0, 50), min_size=n, max_size=n))).map(
        lambda t: pd.DataFrame({'user': t[0], 'item': t[1], 'rating': 3.0, 'timestamp': t[2]}))

def _partition(tr, va, n):
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == n
    assert set(tr) | set(va) == set(range(n))

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames(), st.floats(0.05, 0.95), st.integers(0, 10**6))
def test_cold_splits_never_leak(df, pct, seed):
    for spl, col in ((ColdUserSplitter(pct, seed), 'user'), (ColdItemSplitter(pct, seed), 'item')):
        tr, va = spl(df)
        _partition(tr, va, len(df))
        assert not set(df[col].iloc[tr]) & set(df[col].iloc[va])
        assert df[col].iloc[va].nunique() == int(round(df[col].nunique()*pct))

@settings(max_examples=60, deadline=None)
@given(frames(), st.integers(1, 4), st.integers(0, 3))
def test_last_n_really_latest(df, n, min_train):
    tr, va = LastNSplitter(n=n, min_train=min_train)(df)
    _partition(tr, va, len(df))
    for u, g in df.groupby('user'):
        pos = g.index.to_numpy()
        v = np.intersect1d(pos, va); t = np.intersect1d(pos, tr)
        assert len(v) == min(n, max(len(g) - min_train, 0))
        if len(v) and len(t): assert df.timestamp[v].min() >= df.timestamp[t].max()

@settings(max_examples=40, deadline=None)
@given(frames(), st.floats(0.05, 0.95))
def test_time_split_orders(df, pct):
    tr, va = TimeSplitter(valid_pct=pct)(df)
    _partition(tr, va, len(df))
    if len(tr) and len(va): assert df.timestamp[tr].max() <= df.timestamp[va].min()

@settings(max_examples=40, deadline=None)
@given(frames(), st.floats(0.05, 0.95), st.integers(0, 10**6))
def test_random_split_partition_and_seed(df, pct, seed):
    tr, va = RandomRatingSplitter(pct, seed)(df)
    _partition(tr, va, len(df))
    np.testing.assert_array_equal(tr, RandomRatingSplitter(pct, seed)(df)[0])

def test_unseen_report_counts(ratings):
    small = ratings.iloc[:3000]
    tr, va = RandomRatingSplitter()(small)
    rep = unseen_report(small, (tr, va))
    known_u, known_i = set(small.user.iloc[tr]), set(small.item.iloc[tr])
    expect = sum((u not in known_u) or (i not in known_i) for u, i in zip(small.user.iloc[va], small.item.iloc[va]))
    assert rep.n_rows == expect > 0

def test_unseen_warns_and_moves(ratings):
    small = ratings.iloc[:3000][['user','item','rating']]
    with pytest.warns(CollabWarning, match='validation rows have an id absent from training'):
        dls = FastCollabDataLoaders.from_df(small, seed=1)
    assert (dls.valid_ds.x == 0).any()
    with pytest.warns(CollabWarning, match='moved to training'):
        dls = FastCollabDataLoaders.from_df(small, seed=1, unseen='move')
    assert not (dls.valid_ds.x == 0).any() and len(dls.train_ds) + len(dls.valid_ds) == 3000

# ---------------------------------------------------------------- the DataLoaders contract with fastai
@pytest.fixture(scope='module')
def bench_dls(ratings):
    return FastCollabDataLoaders.from_df(ratings[['user','item','rating','timestamp','title']], bs=1024, seed=42,
                                         splitter=RandomRatingSplitter(0.2, 42), unseen='keep')

def test_classes_match_fastai_categorify(ratings, bench_dls):
    tr, va = bench_dls.splits
    to = TabularCollab(ratings[['user','item','rating']], [Categorify], ['user','item'], y_names=['rating'],
                       y_block=TransformBlock(), splits=(list(tr), list(va)))
    for n in ('user','item'): assert list(to.classes[n]) == list(bench_dls.classes[n])
    np.testing.assert_array_equal(to.train.xs.values, bench_dls.train_ds.x.numpy())
    np.testing.assert_array_equal(to.valid.xs.values, bench_dls.valid_ds.x.numpy())

def test_benchmark_split_rows(ratings, bench_dls):
    idx = np.random.default_rng(42).permutation(100_000)
    x = bench_dls.train_ds.x[:5]
    rows = ratings.iloc[idx[:5]]
    assert [bench_dls.classes['user'][c] for c in x[:,0].tolist()] == rows.user.tolist()
    np.testing.assert_allclose(bench_dls.train_ds.y[:5,0].numpy(), rows.rating.to_numpy())

def test_train_predict_export_roundtrip(tmp_path, ratings, bench_dls):
    torch.manual_seed(0)
    learn = collab_learner(bench_dls, n_factors=20, y_range=(0, 5.5))
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(3, 3e-2, wd=0.5)
    val = float(learn.validate()[0])
    assert val < 0.92**2 + 0.05                       # MSE: learns (global mean alone gives ~1.27)
    rows = ratings.iloc[np.random.default_rng(42).permutation(100_000)[80_000:80_200]][['user','item','rating']]
    with learn.no_bar(): p1 = learn.get_preds(dl=bench_dls.test_dl(rows))[0]
    rating, pred, _ = learn.predict(rows.iloc[0])
    assert abs(rating - p1[0].item()) < 1e-5
    learn.path = tmp_path; learn.export('m.pkl')
    learn2 = load_learner(tmp_path/'m.pkl')
    with learn2.no_bar(): p2 = learn2.get_preds(dl=learn2.dls.test_dl(rows))[0]
    torch.testing.assert_close(p1, p2)
    assert list(learn2.dls.classes['item']) == list(bench_dls.classes['item'])
    assert (learn2.dls.train_ds.titles == bench_dls.train_ds.titles).all()

def test_fastai_model_helpers_and_show(bench_dls):
    model = EmbeddingDotBias.from_classes(10, bench_dls.classes)
    assert model.u_weight.weight.shape == (944, 10) and model.i_weight.weight.shape[0] == len(bench_dls.classes['item'])
    assert model.bias([50, 181], is_item=True).shape == (2,)
    df = bench_dls.train.show_batch(max_n=4, show=False)
    assert df.columns.tolist() == ['user','item','title','rating'] and len(df) == 4
    learn = collab_learner(bench_dls, use_nn=True, layers=[20], y_range=(0, 5.5))
    assert learn.model.embeds[0].weight.shape[0] == 944

def test_each_row_once_per_epoch_and_seeded(bench_dls):
    xs = torch.cat([x for x, y in bench_dls.train])
    assert len(xs) == 78*1024 == len(bench_dls.train)*1024
    assert len(torch.unique(xs[:,0]*10_000 + xs[:,1])) == len(xs)
    df = bench_dls.train_ds.decode(bench_dls.train_ds.x[:5000], bench_dls.train_ds.y[:5000]).drop(columns='title')
    order = lambda dl: torch.cat([x for x, _ in dl])
    a, b, c = (FastCollabDataLoaders.from_df(df, seed=s, bs=100, unseen='keep') for s in (3, 3, 4))
    a1, a2, b1, c1 = order(a.train), order(a.train), order(b.train), order(c.train)
    assert torch.equal(a1, b1)                                        # same seed, same order
    assert not torch.equal(a1, a.train.dataset.x[:len(a1)])           # shuffled, not file order
    assert not torch.equal(a1, a2) and not torch.equal(a1, c1)        # a new order every epoch, another for another seed

def test_pickle_loader(bench_dls):
    dl = pickle.loads(pickle.dumps(bench_dls.valid))
    assert torch.equal(dl.one_batch()[0], bench_dls.valid.one_batch()[0])

# ---------------------------------------------------------------- bad input
def _df(**kw):
    base = dict(user=[1, 1, 2, 3], item=[10, 20, 10, 30], rating=[4., 5., 3., 1.])
    base.update(kw); return pd.DataFrame(base)

def test_missing_columns_named():
    with pytest.raises(CollabDataError, match=r"\['movie'\] not found; the frame has \['user', 'item', 'rating'\]"):
        FastCollabDataLoaders.from_df(_df(), item_name='movie')

@pytest.mark.parametrize('bad,msg', [([4., np.nan, 3., np.inf], '2 NaN/inf rating'), (['4', 'five', '3', '1'], '1 non-numeric rating'),
                                     ([4., None, 3., 1.], '1 NaN/inf')])
def test_bad_ratings(bad, msg):
    with pytest.raises(CollabDataError, match=msg): FastCollabDataLoaders.from_df(_df(rating=bad))

def test_empty_and_not_a_frame():
    with pytest.raises(CollabDataError, match='empty'): FastCollabDataLoaders.from_df(_df().iloc[:0])
    with pytest.raises(CollabDataError, match='DataFrame'): FastCollabDataLoaders.from_df([[1, 2, 3]])

def test_duplicates_last_mean_error():
    df = _df(user=[1, 1, 2, 3], item=[10, 10, 10, 30], rating=[4., 2., 3., 1.])
    with pytest.warns(CollabWarning, match=r'2 rows share 1 duplicated \(user, item\) pair'):
        assert clean_ratings(df, 'user', 'item', 'rating').rating.tolist() == [2., 3., 1.]
    with pytest.warns(CollabWarning, match='averaged'):
        assert clean_ratings(df, 'user', 'item', 'rating', duplicates='mean').rating.tolist() == [3., 3., 1.]
    with pytest.raises(CollabDataError, match='duplicated'): clean_ratings(df, 'user', 'item', 'rating', duplicates='error')

def test_string_and_int_ids_both_work():
    ml = synth_movielens(n_users=60, n_items=80, n_ratings=2000, seed=0)
    r = ml.ratings[['user','item','rating']]
    for df in (r, r.assign(user='u' + r.user.astype(str), item='i' + r.item.astype(str))):
        dls = FastCollabDataLoaders.from_df(df, bs=64, seed=0, unseen='keep')
        learn = collab_learner(dls, n_factors=4, y_range=(0, 5.5))
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
        assert np.isfinite(learn.validate()[0])
        ids = list(dls.classes['user'])
        assert ids[0] == '#na#' and ids[1:] == sorted(ids[1:]) and set(ids[1:]) <= set(df.user)   # the ids themselves, sorted
        assert all(type(i) is (str if pd.api.types.is_string_dtype(df.user) else int) for i in ids[1:])
        p = learn.predict_ratings(df.iloc[:3], unknown='na')
        assert len(p) == 3 and np.isfinite(p).all()
    with pytest.raises(CollabDataError, match='mixes id types'):
        FastCollabDataLoaders.from_df(r.assign(user=[1 if k % 2 else 'a' for k in range(len(r))]))
    with pytest.raises(CollabDataError, match="missing id"):
        FastCollabDataLoaders.from_df(r.assign(item=r.item.where(r.index > 3)))

def test_unknown_ids_at_predict(bench_dls):
    rows = pd.DataFrame({'user': [1, 5000, 5001], 'item': [1, 1, 99999]})
    with pytest.raises(KeyError, match=r"2 user\(s\) not in the training vocab of 943 \(2 rows\): 5000, 5001"): bench_dls.test_dl(rows, unknown='error')
    dl = bench_dls.test_dl(rows, unknown='na')
    assert dl.dataset.x.tolist() == [[1, 1], [0, 1], [0, 0]]
    with pytest.raises(KeyError, match=r"close matches: .Toy Stori.: \[.Toy Story.\]"):
        FastCollabDataLoaders.from_df(pd.DataFrame({'u': [1, 2, 3, 4], 't': ['Toy Story', 'Heat', 'Up', 'Heat'], 'r': [1., 2., 3., 4.]}),
                                      seed=0, unseen='keep', valid_pct=0.25).test_dl(pd.DataFrame({'u': [1], 't': ['Toy Stori']}), unknown='error')

def test_from_csv_and_from_movielens(tmp_path, ratings, ml100k_path):
    p = tmp_path/'r.csv'
    ratings.iloc[:5000][['user','item','rating']].rename(columns={'user':'userId','item':'movieId'}).to_csv(p, index=False)
    dls = FastCollabDataLoaders.from_csv(p, seed=0, bs=128, unseen='keep')
    assert list(dls.classes) == ['userId','movieId'] and len(dls.train_ds) + len(dls.valid_ds) == 5000
    with pytest.raises(CollabDataError, match='no such file'): FastCollabDataLoaders.from_csv(tmp_path/'nope.csv')
    dls = FastCollabDataLoaders.from_movielens(ml100k_path, seed=42, splitter=RandomRatingSplitter(), unseen='keep')
    assert len(dls.valid_ds) == 20_000 and dls.movielens.layout == 'ml-100k'
    assert dls.train_ds.titles.loc[50] == 'Star Wars (1977)'

def test_split_without_training_rows_is_an_error(ratings):
    with pytest.raises(CollabDataError, match='left no training rows'):
        FastCollabDataLoaders.from_df(ratings.iloc[:100][['user','item','rating','timestamp']], splitter=TimeSplitter(cutoff='1990-01-01'))

def test_encode_read_only_columns_without_torch_warning():
    "pandas' copy-on-write gives read-only float32 columns: encoding them must not trigger torch's 'NumPy array is not writable' (issue 11)"
    import warnings
    df = pd.DataFrame({'user': [1, 2, 3, 1], 'item': [1, 1, 2, 2], 'rating': np.array([1, 2, 3, 4], np.float32)})
    dls = FastCollabDataLoaders.from_df(df, valid_pct=0.25, seed=0, unseen='keep')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        enc = dls.train_ds.encode(df, unknown='na')
    assert enc.y.flatten().tolist() == [1, 2, 3, 4]

# ---------------------------------------------------------------- issue 15: damaged files, arguments at the door, positional roles
import gzip, shutil, warnings, zipfile

def _copy_100k(src, tmp_path):
    d = tmp_path/'ml-100k'; shutil.copytree(src, d); return d, (d/'u.data').read_bytes()

def test_damaged_u_data(tmp_path, ml100k_path):
    d,raw = _copy_100k(ml100k_path, tmp_path)
    (d/'u.data').write_bytes(b'')
    with pytest.raises(CollabDataError, match=r'u.data is empty \(0 bytes\)'): load_movielens(d)
    (d/'u.data').write_bytes(raw[:-4])                                  # cut mid-timestamp, no final newline
    with pytest.raises(CollabDataError, match='malformed line 100000 .*ends without a newline'): load_movielens(d)
    (d/'u.data').write_bytes(raw[:-1])                                  # only the final newline missing: a valid file
    assert len(load_movielens(d).ratings) == 100_000
    (d/'u.data').write_bytes(gzip.compress(raw))                        # gzip bytes under the plain name
    assert load_movielens(d).ratings.rating.sum() == 352_986

def test_zip_path_is_read_not_its_sibling(tmp_path, ml100k_path):
    d,raw = _copy_100k(ml100k_path, tmp_path)
    with zipfile.ZipFile(tmp_path/'ml-100k.zip', 'w') as z:
        for p in d.iterdir(): z.write(p, f'ml-100k/{p.name}')
    (d/'u.data').write_bytes(raw[:2000].rsplit(b'\n', 1)[0] + b'\n')   # the sibling folder now differs
    ml = load_movielens(tmp_path/'ml-100k.zip')
    assert len(ml.ratings) == 100_000 and ml.path == tmp_path/'ml-100k.zip'

def test_headerless_and_gzip_csv(tmp_path):
    d = tmp_path/'ml-latest-small'; d.mkdir()
    (d/'movies.csv').write_text('movieId,title,genres\n1,Toy Story (1995),Comedy\n3,Heat (1995),Action\n')
    (d/'ratings.csv').write_text('1,1,4.0,964982703\n1,3,4.5,964981247\n2,1,2.5,964982224\n')
    with pytest.warns(CollabWarning, match='looks like data, not a header'): assert len(load_movielens(d).ratings) == 3
    (d/'ratings.csv').write_bytes(gzip.compress(b'userId,movieId,rating,timestamp\n1,1,4.0,964982703\n2,3,1.0,964982224\n'))
    assert load_movielens(d).ratings.rating.tolist() == [4.0, 1.0]
    df = pd.DataFrame({'user': np.arange(40) % 8, 'item': np.arange(40) // 8, 'rating': np.arange(40) % 5 + 1.0})
    (tmp_path/'r.csv').write_bytes(gzip.compress(df.to_csv(index=False).encode()))
    assert len(FastCollabDataLoaders.from_csv(tmp_path/'r.csv', seed=0, unseen='keep').train_ds) == 32
    (tmp_path/'h.csv').write_text(df.to_csv(index=False, header=False))
    with pytest.raises(CollabDataError, match='is numbers, not column names'): FastCollabDataLoaders.from_csv(tmp_path/'h.csv')

@pytest.mark.parametrize('make', [lambda: RandomRatingSplitter(1.5), lambda: RandomRatingSplitter(-0.1), lambda: TimeSplitter(valid_pct=1.0),
                                  lambda: LastNSplitter(n=-1), lambda: LastNSplitter(n=2.5), lambda: ColdUserSplitter(1.5), lambda: ColdItemSplitter(-1)])
def test_splitter_arguments(make):
    with pytest.raises(CollabDataError, match='must be'): make()

def test_time_splitters_on_text_and_missing_times(ratings):
    sub = ratings.iloc[:2000].reset_index(drop=True)
    iso = sub.assign(timestamp=sub.timestamp.dt.strftime('%Y-%m-%dT%H:%M:%S'))
    for spl in (TimeSplitter(), TimeSplitter(cutoff='1998-01-01'), LastNSplitter()):
        assert all((a == b).all() for a,b in zip(spl(iso), spl(sub)))
    with pytest.raises(CollabDataError, match='neither numbers nor dates'): TimeSplitter()(sub.assign(timestamp='later'))
    secs = sub.assign(timestamp=(sub.timestamp - pd.Timestamp('1970-01-01')) // pd.Timedelta('1s'))     # Unix seconds
    holes = secs.assign(timestamp=secs.timestamp.astype(float).where(np.arange(len(sub)) % 20 != 0))
    for spl in (TimeSplitter(), TimeSplitter(cutoff=880_000_000), LastNSplitter()):
        with pytest.warns(CollabWarning, match='100 of 2000 rows have no'): tr,va = spl(holes)
        assert set(range(0, 2000, 20)) <= set(tr)                        # rows without a time train, never validate

def test_from_df_arguments_and_positional_roles(ratings):
    small = ratings[['user','item','rating','timestamp']].iloc[:2000]
    for kw in (dict(valid_pct=1.5), dict(valid_pct=-0.1), dict(bs=0)):
        with pytest.raises(CollabDataError, match=list(kw)[0]): FastCollabDataLoaders.from_df(small, **kw)
    with pytest.raises(CollabDataError, match='training needs at least 2'): FastCollabDataLoaders.from_df(small.iloc[:1], seed=0)
    for cols,msg in ((['rating','user','item'], "'user' looks like the user column"), (['user','item','timestamp'], 'timestamps?')):
        with pytest.warns(CollabWarning, match=msg): FastCollabDataLoaders.from_df(small[cols], seed=0, unseen='keep')
    with warnings.catch_warnings():
        warnings.simplefilter('error', CollabWarning)
        FastCollabDataLoaders.from_df(small[['rating','user','item']], user_name='user', item_name='item', rating_name='rating', seed=0, unseen='keep')
