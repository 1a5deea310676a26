"Contracts of `collab_ext.tabular` (data, model, learner, coldstart) on the real ML-100k: joins, bad input, export, new ids, learning."
import warnings, tempfile
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from fastai.learner import load_learner
from collab_ext.core import CollabDataError, CollabWarning
from collab_ext.data.split import RandomRatingSplitter, ColdUserSplitter
from collab_ext.tabular import *
from collab_ext.metrics.rating import rmse_np

CATS,UCONT = ['gender','occupation','zip1'], ['age']

@pytest.fixture(scope='module')
def tables(ml100k): return movielens_tables(ml100k)

def small_dls(ml, users, items, n_users=200, **kw):
    "Dls over the ratings of the first `n_users` users"
    r = ml.ratings.loc[ml.ratings.user <= n_users, ['user','item','rating','timestamp']]
    kw = {**dict(date_col='timestamp', cat_names=CATS, cont_names=UCONT+['year']+ml.genres, bs=512, seed=0, unseen='keep'), **kw}
    return TabularCollabDataLoaders.from_dfs(r, users, items, **kw)

def quiet_fit(learn, epochs=1, lr=1e-2):
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, lr, wd=0.1)
    return learn

def preds(learn, df):
    with learn.no_bar(): return learn.get_preds(dl=learn.dls.test_dl(df, unknown='na'))[0][:,0].numpy()

@pytest.fixture(scope='module')
def trained(ml100k, tables):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', CollabWarning)
        dls = small_dls(ml100k, *tables)
    return quiet_fit(tabular_collab_learner(dls, n_factors=16, layers=(32,), p_id=0.1), epochs=2)

def test_no_rating_lost_when_metadata_missing(ml100k, tables):
    users,items = tables
    r = ml100k.ratings.loc[ml100k.ratings.user <= 100, ['user','item','rating','timestamp']]
    users = users[~users.user.isin([1, 2, 3])].copy()
    users.loc[users.user==10, 'age'] = np.nan
    with pytest.warns(CollabWarning, match=r"3 user id\(s\) \((\d+) rating rows\) have no metadata row"):
        dls = TabularCollabDataLoaders.from_dfs(r, users, items, date_col='timestamp', cat_names=CATS, cont_names=UCONT+['year'],
                                                splitter=RandomRatingSplitter(0.2, 1), unseen='keep', bs=256)
    tr,va = dls.splits
    assert len(dls.train_ds) + len(dls.valid_ds) == len(r)
    np.testing.assert_array_equal(np.sort(np.r_[tr, va]), np.arange(len(r)))
    np.testing.assert_array_equal(dls.train_ds.y[:,0].numpy(), r.rating.to_numpy(np.float32)[tr])
    # users without metadata: '#na#' gender, filled age flagged by FillMissing's `age_na`
    assert 'age_na' in dls.train_ds.cat_names
    rows = dls.test_dl(pd.DataFrame({'user':[1, 10, 20], 'item':[1, 1, 1]})).dataset
    g = dls.train_ds.cat_names.index('gender'); na = dls.train_ds.cat_names.index('age_na')
    assert rows.x_cat[0, g] == 0 and rows.x_cat[2, g] != 0
    assert rows.x_cat[:, na].tolist() == [2, 2, 1]   # classes: '#na#', False, True

def test_bad_metadata(ml100k, tables):
    users,items = tables
    r = ml100k.ratings.loc[ml100k.ratings.user <= 50, ['user','item','rating','timestamp']]
    kw = dict(cat_names=CATS, cont_names=UCONT, unseen='keep')
    with pytest.raises(CollabDataError, match=r"2 user id\(s\) appear on more than one row"):
        TabularCollabDataLoaders.from_dfs(r, pd.concat([users, users.iloc[:2]]), items, **kw)
    bad = users.copy(); bad['age'] = bad.age.astype(str); bad.loc[:4, 'age'] = 'old'
    with pytest.raises(CollabDataError, match=r"'age'.*5 value\(s\) are not numbers"):
        TabularCollabDataLoaders.from_dfs(r, bad, items, **kw)
    rd = r.copy(); rd['timestamp'] = rd.timestamp.astype(str); rd.loc[rd.index[:3], 'timestamp'] = 'yesterday-ish'
    with pytest.raises(CollabDataError, match=r"3 value\(s\) are not dates"):
        TabularCollabDataLoaders.from_dfs(rd, users, items, date_col='timestamp', **kw)
    with pytest.raises(CollabDataError, match="'shoe_size'"):
        TabularCollabDataLoaders.from_dfs(r, users, items, cat_names=['shoe_size'], cont_names=[])
    with pytest.raises(CollabDataError, match="no user id"):
        TabularCollabDataLoaders.from_dfs(r, users.astype({'user':str}), items, **kw)

def test_unknown_ids_and_catalog(trained, ml100k):
    dls = trained.dls
    with pytest.raises(KeyError, match='12345'): dls.test_dl(pd.DataFrame({'user':[12345], 'item':[1]}), unknown='error')
    with pytest.warns(CollabWarning, match='12345'):                  # the package's one default for unseen ids: '#na#', with a warning
        assert dls.test_dl(pd.DataFrame({'user':[12345], 'item':[1]})).dataset.x_cat[0, 0] == 0
    assert dls.test_dl(pd.DataFrame({'user':[12345], 'item':[1]}), unknown='na').dataset.x_cat[0, 0] == 0
    with pytest.warns(CollabWarning, match=r"1 missing date\(s\) filled with the latest training time"):
        dls.test_dl(pd.DataFrame({'user':[1, 2], 'item':[1, 1], 'timestamp':[pd.NaT, pd.Timestamp('1998-01-01')]}))
    tr = dls.splits[0]
    r = ml100k.ratings.loc[ml100k.ratings.user <= 200].reset_index(drop=True).iloc[tr]
    assert len(dls.catalog_items()) == 1682 and set(dls.known_items()) == set(r.item)   # known = the training rows' items
    assert set(dls.known_users()) == set(r.user)
    assert set(dls.seen_items(7)) == set(r.item[r.user == 7])

def test_new_user_and_item_use_their_features(trained):
    learn = trained
    learn.dls.add_users(pd.DataFrame({'user':[7001, 7002], 'age':[18, 18], 'gender':['M','M'], 'occupation':['student','retired'], 'zip1':['1','1']}))
    p = preds(learn, pd.DataFrame({'user':[7001, 7002], 'item':[50, 50]}))
    assert np.isfinite(p).all() and abs(p[0]-p[1]) > 1e-4          # occupation moves the prediction
    p2 = preds(learn, pd.DataFrame({'user':[7001, 7001], 'item':[50, 50], 'age':[18, 70]}))
    assert abs(p2[0]-p2[1]) > 1e-4 and abs(p2[0]-p[0]) < 1e-6     # a column in the frame overrides the table
    g = {c:0 for c in learn.dls.meta.items.columns if c not in ('title','year')}
    learn.dls.add_items(pd.DataFrame([{'item':90001, 'title':'New Horror', 'year':1998., **g, 'Horror':1},
                                      {'item':90002, 'title':'New Musical', 'year':1998., **g, 'Musical':1}]))
    q = preds(learn, pd.DataFrame({'user':[1, 1], 'item':[90001, 90002]}))
    assert abs(q[0]-q[1]) > 1e-4 and learn.dls.titles[90001] == 'New Horror' and 90002 in learn.dls.catalog_items()

def test_export_keeps_procs_vocab_and_metadata(trained):
    learn = trained
    new = pd.DataFrame({'user':[7003, 1], 'item':[50, 50], 'age':[33, 24], 'gender':['F','M'], 'occupation':['writer','technician'], 'zip1':['9','8']})
    learn.dls.add_users(pd.DataFrame({'user':[7004], 'age':[40], 'gender':['F'], 'occupation':['writer'], 'zip1':['2']}))
    p = preds(learn, new)
    with tempfile.TemporaryDirectory() as d:
        learn.path = Path(d); learn.export('t.pkl'); l2 = load_learner(Path(d)/'t.pkl')
    m1,m2 = learn.dls.meta, l2.dls.meta
    assert m2.cat_names == m1.cat_names and m2.cont_names == m1.cont_names
    for n in m1.cat_names: assert list(m2.classes[n]) == list(m1.classes[n])
    assert m2.to.procs.normalize.means == m1.to.procs.normalize.means
    assert m2.to.procs.fill_missing.na_dict == m1.to.procs.fill_missing.na_dict
    np.testing.assert_allclose(preds(l2, new), p, rtol=1e-5)
    assert 7004 in l2.dls.catalog_users() and 7004 not in l2.dls.known_users()   # users added before export travel too

def test_predict_cold_mean_leaves_weights_unchanged(trained):
    "The 'mean' strategy swaps the `#na#` id rows for the mean embedding only while it scores"
    learn = trained
    before = {k: v.clone() for k,v in learn.model.state_dict().items()}
    df = pd.DataFrame({'user':[12345, 1, 12345], 'item':[1, 99999, 99999]})
    p_mean, p_tower = predict_cold(learn, df, 'mean'), predict_cold(learn, df, 'tower')
    assert np.isfinite(p_mean).all() and not np.allclose(p_mean, p_tower)   # the mean rows were in use
    after = learn.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)

def test_learns_and_cold_start_beats_baselines_on_ml100k(ml100k, tables):
    "Cold users on the real ML-100k (400 users, 3 epochs): the model learns; fold-in improves with each answer and beats the baseline"
    users,items = tables
    r = ml100k.ratings.loc[ml100k.ratings.user <= 400, ['user','item','rating','timestamp']].reset_index(drop=True)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', CollabWarning)
        dls = TabularCollabDataLoaders.from_dfs(r, users, items, date_col='timestamp', cat_names=CATS, cont_names=UCONT+['year']+ml100k.genres,
                                                splitter=ColdUserSplitter(0.2, 42), bs=512, seed=0)
    torch.manual_seed(0)
    learn = quiet_fit(tabular_collab_learner(dls, n_factors=20, layers=(32,), p_id=0.1), epochs=3)
    tr,va = dls.splits
    p,y = learn.get_preds()
    assert float(((p-y)**2).mean().sqrt()) < 1.06
    curve = foldin_curve(learn, r.iloc[va], r.iloc[tr], ks=(0, 5, 20))
    print(curve)
    assert curve.loc[0, 'tower'] < 1.02 * curve.loc[0, 'item_bias']        # metadata alone: near the baseline on a small, short run
    assert curve.loc[20, 'foldin'] < 0.96 * curve.loc[0, 'item_bias']      # 20 answers: clearly better
    assert curve.loc[20, 'foldin'] < curve.loc[5, 'foldin'] < curve.loc[0, 'foldin']

def test_recommend_known_and_new_users(trained, ml100k):
    "`learn.recommend` (collab_ext.learner) serves a known user without their seen items, and a metadata-only new user"
    learn = trained
    import collab_ext.learner  # noqa: F401
    recs = learn.recommend(1, n=10)
    assert len(recs) == 10 and not set(recs.item) & set(learn.dls.seen_items(1))
    assert recs.columns[-1] == 'rating_pred' and recs.rating_pred.is_monotonic_decreasing
    learn.dls.add_users(pd.DataFrame({'user':[7101], 'age':[25], 'gender':['F'], 'occupation':['writer'], 'zip1':['9']}))
    new = learn.recommend(7101, n=5)
    assert len(new) == 5 and np.isfinite(new.rating_pred).all()
    direct = learn.predict_ratings(pd.DataFrame({'user':[7101]*5, 'item':new.item.tolist()}))   # metadata-only user: no unknown='na' needed
    np.testing.assert_allclose(direct, new.rating_pred.to_numpy(), rtol=1e-5)
    with pytest.raises(KeyError): learn.recommend(999999)

def test_integer_side_category_survives_missing_metadata():
    "An int feature made float by a join with an id missing from the metadata keeps its labels ('1', not '1.0')"
    r = pd.DataFrame({'user': [1, 2, 3, 1, 2, 3, 9], 'item': [1, 1, 1, 2, 2, 2, 1], 'rating': [4., 3., 5., 2., 4., 3., 1.]})
    users = pd.DataFrame({'user': [1, 2, 3], 'agegrp': [1, 2, 2]})
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', CollabWarning)
        dls = TabularCollabDataLoaders.from_dfs(r, users=users, cat_names=['agegrp'], cont_names=[], bs=4, seed=0,
                                                splitter=lambda df: (np.arange(7), np.arange(0)), unseen='keep')
    assert list(dls.classes['agegrp'])[1:] == ['1', '2']
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', CollabWarning)
        x = dls.test_dl(pd.DataFrame({'user': [1, 2], 'item': [1, 1]})).dataset.x_cat
    k = list(dls.classes).index('agegrp')
    assert x[:, k].tolist() == [1, 2]                       # known users keep their category, not '#na#'

def test_split_without_training_rows_is_an_error():
    r = pd.DataFrame({'user': [1, 2], 'item': [1, 1], 'rating': [4., 3.]})
    with pytest.raises(CollabDataError, match=r'left (no|0) training row'):
        TabularCollabDataLoaders.from_dfs(r, cat_names=[], cont_names=[], splitter=lambda df: (np.arange(0), np.arange(2)))

def test_missing_date_column_warns_or_errors(trained, ml100k):
    "A frame without the date column is scored as of the latest training time, announced (issue 11); 'latest' is silent, 'error' refuses"
    learn,m = trained, trained.dls.meta
    va = ml100k.ratings.loc[ml100k.ratings.user <= 200].iloc[learn.dls.splits[1]]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        p_nodate = learn.predict_ratings(va[['user','item']], unknown='na')
    msgs = [str(o.message) for o in w if issubclass(o.category, CollabWarning) and 'timestamp' in str(o.message)]
    assert len(msgs) == 1, msgs
    assert f"its {len(va)} row(s) are scored as of the latest training time {m.time_fill}" in msgs[0]
    assert 'timestamp_Month, timestamp_Dayofweek, timestamp_Elapsed' in msgs[0]
    tr = ml100k.ratings.loc[ml100k.ratings.user <= 200].iloc[learn.dls.splits[0]]
    assert m.time_fill == pd.to_datetime(tr.timestamp, unit='s').max()           # the latest *training* time, not the validation rows'
    with warnings.catch_warnings():
        warnings.simplefilter('error', CollabWarning)
        p_dated = learn.predict_ratings(va[['user','item','timestamp']], unknown='na')
        m.missing_date = 'latest'
        try: p_latest = learn.predict_ratings(va[['user','item']], unknown='na')
        finally: m.missing_date = 'warn'
    np.testing.assert_array_equal(p_latest, p_nodate)
    assert not np.allclose(p_dated, p_nodate)                     # the date is a feature: filling it changes the predictions
    y = va.rating.to_numpy()
    assert rmse_np(p_dated, y) != rmse_np(p_nodate, y)
    m.missing_date = 'error'
    try:
        with pytest.raises(CollabDataError, match=r"no 'timestamp' column.*timestamp_Elapsed"): learn.predict_ratings(va[['user','item']])
    finally: m.missing_date = 'warn'
