"""Common checks (issue 15), as scikit-learn's `check_estimator`: every learner factory and DataLoaders builder through the same cases.

A learner joins the battery with one line in `ENTRIES`: a name, a DataLoaders builder `dls(df, **kw)` (kw: seed, bs, unseen,
splitter), a learner factory `learner(dls)`, and the names of checks that do not apply (`skip`). The checks:
bad frames (empty, one row/user/item, NaN/inf/None/text/garbage ratings, mixed and missing ids, duplicates), unseen ids under
every `unseen=` option, no mutation of the caller's frame, a fit on one batch, the same seed giving the same weights, argument
checks of `predict_ratings`/`recommend`, and export -> load in a fresh process (identical predictions, no data rows).
"""
import json, subprocess, sys, warnings
from dataclasses import dataclass, field
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from fastai.learner import Learner
from fastai.losses import MSELossFlat
from fastai.collab import collab_learner
from collab_ext.core import CollabDataError, CollabWarning
from collab_ext.data.split import ColdUserSplitter, RandomRatingSplitter
from collab_ext.data.loaders import FastCollabDataLoaders
from collab_ext.models import DotProduct, DotProductBias, CollabNN
from collab_ext.ce.data import CollabCEDataLoaders
from collab_ext.ce.learner import collab_ce_learner
from collab_ext.fastloop import fast_collab_learner
from collab_ext.tabular.data import TabularCollabDataLoaders, movielens_tables
from collab_ext.tabular.learner import tabular_collab_learner
from collab_ext.data.implicit import ImplicitDataLoaders
from collab_ext.ranking.learner import implicit_learner, ease_learner
from collab_ext.rating.learner import rating_learner, RatingLearner, OrdinalMember, AutoRecMember
import collab_ext.learner, collab_ext.export  # noqa: F401  (predict_ratings, recommend, export_safe, save_collab)

N_ROWS = 3000          # the first rows of the real ML-100k: every check stays fast

# ---------------------------------------------------------------- builders and the registry
def _kw(kw): return {'seed': 0, 'bs': 256, 'unseen': 'keep', **kw}

def mse_dls(df, **kw): return FastCollabDataLoaders.from_df(df, **_kw(kw))
def ce_dls(df, **kw): return CollabCEDataLoaders.from_df(df, **_kw(kw))

_TABLES = {}
def imp_dls(df, **kw): return ImplicitDataLoaders.from_df(df, **_kw(kw))

def tab_dls(df, **kw):
    "Tabular loaders with ML-100k's user and item tables (ages, occupations, genres, years)"
    if not _TABLES:
        from collab_ext.data.load import load_movielens
        from collab_ext.core import local_ml100k
        _TABLES['t'] = movielens_tables(load_movielens(local_ml100k()))
    users,items = _TABLES['t']
    return TabularCollabDataLoaders.from_dfs(df, users, items, **_kw(kw))

@dataclass
class Entry:
    name: str
    dls: callable
    learner: callable
    skip: tuple = ()          # checks that do not apply
    xfail: dict = field(default_factory=dict)   # check -> reason: known failures, reported to the owner
    def __repr__(self): return self.name
    def check(self, name):
        "Skip or xfail check `name` for this learner when its entry says so"
        if name in self.skip: pytest.skip(f'{self.name}: {name} does not apply')
        if name in self.xfail: pytest.xfail(f'{self.name}: {self.xfail[name]}')

ENTRIES = [
    Entry('fastai collab_learner (EmbeddingDotBias)', mse_dls, lambda d: collab_learner(d, n_factors=4, y_range=(0, 5.5))),
    Entry('fastai collab_learner use_nn (EmbeddingNN)', mse_dls, lambda d: collab_learner(d, use_nn=True, layers=[8], y_range=(0, 5.5))),
    Entry('fast_collab_learner (LeanLearner)', mse_dls, lambda d: fast_collab_learner(d, n_factors=4, y_range=(0, 5.5))),
    Entry('DotProduct', mse_dls, lambda d: Learner(d, DotProduct.from_dls(d, 4, y_range=(0, 5.5)), loss_func=MSELossFlat())),
    Entry('DotProductBias', mse_dls, lambda d: Learner(d, DotProductBias.from_dls(d, 4), loss_func=MSELossFlat())),
    Entry('CollabNN', mse_dls, lambda d: Learner(d, CollabNN.from_dls(d, n_act=8), loss_func=MSELossFlat())),
    Entry('collab_ce_learner (CE dot)', ce_dls, lambda d: collab_ce_learner(d, n_factors=4)),
    Entry('collab_ce_learner (CE NN)', ce_dls, lambda d: collab_ce_learner(d, use_nn=True, layers=[8])),
    Entry('collab_ce_learner (ordinal)', ce_dls, lambda d: collab_ce_learner(d, n_factors=4, loss='ordinal')),
    Entry('tabular_collab_learner', tab_dls, lambda d: tabular_collab_learner(d, n_factors=4, layers=[8]), skip=('save_collab',)),
    Entry('implicit_learner (BPR)', imp_dls, lambda d: implicit_learner(d, n_factors=4), skip=('save_collab',)),
    Entry('ease_learner', imp_dls, lambda d: ease_learner(d, lam=50.), skip=('save_collab', 'fit_on_one_batch')),   # closed form: no steps
    Entry('rating_learner (blend)', mse_dls, lambda d: rating_learner(d, members=[OrdinalMember(8, epochs=1), AutoRecMember(16, epochs=3)]),
          skip=('fit_on_one_batch',)),   # members train in their own Learners (fit_recipe): no single step to take
]
ids = [e.name for e in ENTRIES]
every = pytest.mark.parametrize('e', ENTRIES, ids=ids)

@pytest.fixture(scope='module')
def small(ratings):
    "The first N_ROWS real ML-100k ratings (user, item, rating, timestamp)"
    return ratings[['user','item','rating','timestamp']].iloc[:N_ROWS].reset_index(drop=True)

def quiet(f, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return f(*a, **k)

def fit(learn, epochs=1):
    "`learn.fit`, or the learner's own one-call recipe when it trains its parts itself (`RatingLearner.fit_recipe`)"
    with learn.no_bar(), learn.no_logging():
        if isinstance(learn, RatingLearner): learn.fit_recipe()
        else: learn.fit(epochs, 1e-2)
    return learn

def build(e, df, **kw):
    "Loaders and learner of `e` on `df`, seeded"
    torch.manual_seed(0)
    dls = quiet(e.dls, df, **kw)
    torch.manual_seed(0)
    return quiet(e.learner, dls)

def clear_or_works(e, df, **kw):
    "Either a `CollabDataError`, or a learner that fits and predicts finite ratings for `df`'s pairs: nothing else"
    try: learn = build(e, df, **kw)
    except CollabDataError as err: return str(err)
    quiet(fit, learn)
    p = quiet(learn.predict_ratings, df[['user','item']], unknown='na')
    assert p.shape == (len(df),) and np.isfinite(p).all()
    return learn

# ---------------------------------------------------------------- bad frames
@every
def test_empty_frame(e, small):
    e.check('empty_frame')
    with pytest.raises(CollabDataError, match='empty'): quiet(e.dls, small.iloc[:0])

@every
@pytest.mark.parametrize('case', ['one row', 'one user', 'one item'])
def test_tiny_frames(e, small, case):
    e.check(f'tiny_frames[{case}]')
    df = {'one row': small.iloc[:1], 'one user': small[small.user == small.user.iloc[0]],
          'one item': small[small.item == small.item.value_counts().index[0]]}[case]
    clear_or_works(e, df.reset_index(drop=True))

BAD_RATINGS = {'NaN': np.nan, 'inf': np.inf, 'None': None, 'text': 'five', 'garbage': [1, 2]}

@every
@pytest.mark.parametrize('bad', list(BAD_RATINGS))
def test_bad_ratings(e, small, bad):
    e.check(f'bad_ratings[{bad}]')
    df = small.copy()
    df['rating'] = df.rating.astype(object)
    df.at[5, 'rating'] = BAD_RATINGS[bad]
    with pytest.raises(CollabDataError, match="'rating'"): quiet(e.dls, df)

@every
@pytest.mark.parametrize('bad', ['mixed types', 'NaN id'])
def test_bad_ids(e, small, bad):
    e.check(f'bad_ids[{bad}]')
    df = small.copy()
    df['user'] = df.user.astype(object)
    df.at[7, 'user'] = 'u7' if bad == 'mixed types' else np.nan
    with pytest.raises(CollabDataError, match="'user'"): quiet(e.dls, df)

@every
def test_duplicates_deduplicated_with_warning(e, small):
    e.check('duplicates')
    df = pd.concat([small, small.iloc[:10].assign(rating=1.0)], ignore_index=True)
    with pytest.warns(CollabWarning, match='duplicated'): dls = e.dls(df, **_kw({}))
    assert len(dls.train_ds) + len(dls.valid_ds) == len(small)

# ---------------------------------------------------------------- unseen ids
@every
@pytest.mark.parametrize('how', ['warn', 'keep', 'drop', 'move', 'error'])
def test_unseen_options(e, small, how):
    e.check(f'unseen_options[{how}]')
    spl = ColdUserSplitter(0.2, seed=1)
    if how == 'error':
        with pytest.raises(CollabDataError, match='absent from training'): quiet(e.dls, small, splitter=spl, unseen=how)
        return
    if how == 'warn':
        with pytest.warns(CollabWarning, match='absent from training'): e.dls(small, **_kw(dict(splitter=spl, unseen=how)))
    learn = build(e, small, splitter=spl, unseen=how)
    tr,va = learn.dls.splits
    unseen = ~small.user.iloc[va].isin(small.user.iloc[tr])
    assert unseen.any() == (how in ('warn', 'keep'))
    assert (len(tr) + len(va) < len(small)) == (how == 'drop')         # dropped, or kept / moved to training
    quiet(fit, learn)
    p = quiet(learn.predict_ratings, small.iloc[va][['user','item']], unknown='na')
    assert np.isfinite(p).all()

@every
def test_predict_unknown_ids(e, small):
    e.check('predict_unknown_ids')
    learn = quiet(fit, build(e, small))
    new = pd.DataFrame({'user': [small.user.iloc[0], 99_999], 'item': [small.item.iloc[0]]*2})
    with pytest.raises(KeyError, match='99999'): quiet(learn.predict_ratings, new, unknown='error')   # the default warns and scores '#na#'
    assert np.isfinite(quiet(learn.predict_ratings, new, unknown='na')).all()

# ---------------------------------------------------------------- the caller's data, fitting, seeds
@every
def test_no_mutation_of_caller_frame(e, small):
    e.check('no_mutation')
    df = small.copy(); before = df.copy()
    learn = build(e, df)
    quiet(fit, learn)
    quiet(learn.predict_ratings, df[['user','item']].iloc[:50], unknown='na')
    quiet(learn.recommend, df.user.iloc[0], n=3)
    pd.testing.assert_frame_equal(df, before)

@every
def test_fit_on_one_batch(e, small):
    e.check('fit_on_one_batch')
    df = small.iloc[:400]
    learn = build(e, df, bs=1024)
    assert len(learn.dls.train) == 1
    w0 = {k: v.clone() for k,v in learn.model.state_dict().items()}
    quiet(fit, learn)
    assert np.isfinite(learn.recorder.losses[-1].item())
    assert any(not torch.equal(w0[k], v) for k,v in learn.model.state_dict().items())

@every
def test_same_seed_same_weights(e, small):
    e.check('same_seed')
    a,b = [quiet(fit, build(e, small)) for _ in range(2)]
    sa,sb = a.model.state_dict(),b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

@every
def test_argument_checks(e, small):
    e.check('argument_checks')
    learn = build(e, small)
    q = small[['user','item']].iloc[:20]
    for kw in (dict(bs=0), dict(bs=-5), dict(unknown='bogus')):
        with pytest.raises(CollabDataError, match=list(kw)[0]): learn.predict_ratings(q, **kw)
    for n in (-1, 0, 2.5):
        with pytest.raises(CollabDataError, match='n='): learn.recommend(small.user.iloc[0], n=n)
    with pytest.raises(CollabDataError, match='one user'): learn.recommend(list(small.user.iloc[:2]))

# ---------------------------------------------------------------- export -> load in a fresh process
LOADER = r'''
import sys, json, warnings, numpy as np, pandas as pd, torch
torch.set_num_threads(1); warnings.simplefilter('ignore')
from fastai.learner import load_learner
from collab_ext.export import load_collab
res = {}
for job in json.loads(sys.argv[1]):
    learn = load_learner(job['path']) if job['how'] == 'export_safe' else load_collab(job['path'])
    q = pd.read_pickle(job['pairs'])
    np.save(job['out'], learn.predict_ratings(q, unknown='na'))
    dss = [learn.dls.train_ds, learn.dls.valid_ds]
    ts = [t for ds in dss for t in (getattr(ds, 'x', None), getattr(ds, 'y', None), getattr(ds, 'x_cat', None), getattr(ds, 'x_cont', None))
          if isinstance(t, torch.Tensor)]
    res[job['key']] = {'rows': sum(len(ds) for ds in dss), 'storage': sum(t.untyped_storage().nbytes() for t in ts)}
print(json.dumps(res))
'''

@pytest.fixture(scope='module')
def exported(small, tmp_path_factory):
    "Every entry trained, its predictions, exported both ways and loaded back in ONE fresh process"
    d = tmp_path_factory.mktemp('exports')
    q = small[['user','item']].iloc[::7]
    q.to_pickle(d/'pairs.pkl')
    jobs,ref,failed = [],{},{}
    for k,e in enumerate(ENTRIES):
        try:
            learn = quiet(fit, build(e, small))
            ref[e.name] = quiet(learn.predict_ratings, q, unknown='na')
        except Exception as err: failed[e.name] = f'{type(err).__name__}: {err}'; continue     # fails that entry's tests only
        for how in ('export_safe', 'save_collab'):
            if how in e.skip: continue
            p = d/f'{k}_{how}'; p.mkdir()
            try: path = learn.export_safe(p/'model.pkl') if how == 'export_safe' else learn.save_collab(p)
            except Exception as err: failed[f'{e.name}|{how}'] = f'{type(err).__name__}: {err}'; continue
            jobs.append(dict(key=f'{e.name}|{how}', how=how, path=str(path), pairs=str(d/'pairs.pkl'), out=str(p/'pred.npy')))
    r = subprocess.run([sys.executable, '-c', LOADER, json.dumps(jobs)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads(r.stdout.strip().splitlines()[-1])
    res = {j['key']: (ref[j['key'].split('|')[0]], np.load(j['out']), info[j['key']]) for j in jobs}
    return res,failed

@every
@pytest.mark.parametrize('how', ['export_safe', 'save_collab'])
def test_export_load_fresh_process(e, how, exported):
    e.check(how)
    res,failed = exported
    assert e.name not in failed and f'{e.name}|{how}' not in failed, failed.get(e.name) or failed.get(f'{e.name}|{how}')
    ref,got,info = res[f'{e.name}|{how}']
    np.testing.assert_array_equal(got, ref)
    assert info == {'rows': 0, 'storage': 0}
