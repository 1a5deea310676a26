"Contracts of `collab_ext.ce`: levels, class-index targets, CE/ordinal learners, metrics, export, bad input."
import warnings
import numpy as np, pytest, torch
from hypothesis import given, settings, assume, strategies as st
from fastai.learner import load_learner
from fastai.interpret import ClassificationInterpretation
from fastai.callback.progress import ProgressCallback
from collab_ext.core import CollabDataError, CollabWarning
from collab_ext.synth import synth_movielens
from collab_ext.core import snap_to_levels
from collab_ext.data.split import RandomRatingSplitter
from collab_ext.data.loaders import FastCollabDataLoaders
from fastai.collab import collab_learner
from collab_ext.ce.all import *
from collab_ext.ce.models import *

def quiet(learn):
    learn.remove_cb(ProgressCallback)
    return learn

def fit(learn, epochs, lr=1e-2, wd=0.5):
    with learn.no_logging(): learn.fit_one_cycle(epochs, lr, wd=wd)
    return learn

@pytest.fixture(scope='module')
def small():
    "A small 1-5 star synthetic data set"
    return synth_movielens(n_users=120, n_items=150, n_ratings=4000, seed=3).ratings[['user','item','rating']]

@pytest.fixture(scope='module')
def small_dls(small): return CollabCEDataLoaders.from_df(small, bs=256, seed=0, unseen='keep')

@pytest.fixture(scope='module')
def bench_dls(ratings):
    "The benchmark split of the real ML-100k"
    return CollabCEDataLoaders.from_df(ratings[['user','item','rating','title']], splitter=RandomRatingSplitter(0.2, 42),
                                       bs=1024, seed=42, unseen='keep')

# ---- levels and targets

@given(st.sampled_from([np.arange(1, 6.), np.arange(.5, 5.01, .5), np.arange(0, 11.)]), st.integers(2, 200), st.integers(0, 10**6))
@settings(max_examples=40, deadline=None)
def test_decode_encode_roundtrip(levels, n, seed):
    r = np.random.default_rng(seed).choice(levels, n).astype(np.float32)
    assert (decode_ratings(encode_ratings(r, levels), levels) == r).all()
    if len(np.unique(r)) < 2: return                               # a single level is an error (test_single_level)
    lv = infer_levels(r)
    assert (decode_ratings(encode_ratings(r, lv), lv) == r).all()

def test_levels_inferred():
    assert list(infer_levels([1, 5, 3, 3, 2, 4])) == [1, 2, 3, 4, 5]
    assert list(infer_levels(np.arange(.5, 5.01, .5))) == list(np.arange(.5, 5.01, .5).astype(np.float32))
    assert list(infer_levels(np.arange(10, 101, 10))) == list(range(10, 101, 10))       # steps coarser than 1
    assert list(infer_levels([2, 4, 6, 8, 10])) == [2, 4, 6, 8, 10]                      # not 2..10 by 1 (4 unused)
    assert list(infer_levels([.5, 1.5, 2.5, 3.5])) == [.5, 1.5, 2.5, 3.5]               # offset grid
    with pytest.warns(CollabWarning, match=r'2 of the 5 inferred levels have no rating: \[3, 4\]'): infer_levels([1, 2, 5, 5])

GRID_STEPS = [.1, .2, .25, .3, .5, 1., 2., 2.5, 3., 5., 10., 25.]

@st.composite
def grid_sample(draw):
    "(levels, ratings): a regular grid and ratings on it that use its lowest, second and highest level, and half its levels"
    step,lo,n = draw(st.sampled_from(GRID_STEPS)),draw(st.integers(-20, 20)),draw(st.integers(2, 20))
    levels = (lo*step + step*np.arange(n)).astype(np.float32)
    used = draw(st.lists(st.integers(0, n-1), min_size=(n+1)//2, max_size=n, unique=True))
    idx = draw(st.lists(st.sampled_from(used), min_size=0, max_size=60)) + used + [0, 1, n-1]
    return levels,levels[np.random.default_rng(draw(st.integers(0, 1000))).permutation(idx)]

@given(grid_sample())
@settings(max_examples=80, deadline=None)
def test_infer_levels_finds_any_grid(sample):
    "Any step and offset: the levels are the grid lowest..highest by the GCD of the gaps, and encode/decode round-trips"
    levels,r = sample
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', CollabWarning)                                   # inner levels may be unused
        lv = infer_levels(r)
    np.testing.assert_allclose(lv, levels, atol=1e-4 * max(1, np.abs(levels).max()))
    assert (decode_ratings(encode_ratings(r, lv), lv) == lv[encode_ratings(r, lv)]).all()
    np.testing.assert_allclose(decode_ratings(encode_ratings(r, lv), lv), r, atol=1e-4 * max(1, np.abs(levels).max()))

@given(grid_sample(), st.floats(.2, .45))
@settings(max_examples=60, deadline=None)
def test_stray_values_stay_off_the_grid(sample, frac):
    "A stray value (< 10% of rows) that would make the grid too fine or mostly empty leaves it alone; encode errors, rounds or bins it"
    levels,r = sample
    r = np.concatenate([r]*20)                                                           # the stray is 1 row in ≥ 60
    step = float(levels[1] - levels[0])
    stray = np.float32(levels[0] + step*frac)
    n_fine = round((levels.max() - levels.min()) / grid_step(np.append(levels, stray), 1e-4 * max(1, np.abs(levels).max()))) + 1
    assume(abs(stray - levels[0]) > 1e-3*step and (n_fine > 20 or n_fine > 2*(len(np.unique(r)) + 1)))
    x = np.append(r, stray)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', CollabWarning)
        lv = infer_levels(x)
    np.testing.assert_allclose(lv, levels, atol=1e-4 * max(1, np.abs(levels).max()))
    with pytest.raises(CollabDataError, match='not on the levels'): encode_ratings(x, lv)
    assert encode_ratings([stray], lv, 'round')[0] == 0 and encode_ratings([stray], lv, 'bin')[0] == 0
    assert encode_ratings([levels[0] + step*(1-frac)], lv, 'round')[0] == 1

@given(st.lists(st.floats(-2, 8, allow_nan=False), min_size=1, max_size=50), st.sampled_from([np.arange(1, 6.), np.arange(.5, 5.01, .5)]))
@settings(max_examples=50, deadline=None)
def test_one_snapping_rule(x, levels):
    "nearest_level, encode_ratings(off_grid='round') and the MSE metrics all snap as `synth.snap_to_levels`"
    x = np.float32(x)
    lv = levels.astype(np.float32)
    idx = nearest_level(x, lv)
    assert (lv[idx] == snap_to_levels(x, lv)).all()
    inside = (x >= lv[0]) & (x <= lv[-1])
    assert (encode_ratings(x[inside], lv, 'round') == idx[inside]).all()
    t = lv[np.random.default_rng(0).integers(0, len(lv), len(x))]
    assert rounded_accuracy(torch.from_numpy(x), torch.from_numpy(t), lv).item() == pytest.approx((lv[idx] == t).mean())

def test_dls_targets_and_vocab(small, small_dls):
    xb,yb = small_dls.one_batch()
    assert yb.dtype == torch.int64 and yb.shape == (256,)
    assert list(small_dls.vocab) == [1., 2., 3., 4., 5.]
    tr = small_dls.splits[0]
    assert (decode_ratings(small_dls.train_ds.y, small_dls.levels) == small.rating.to_numpy()[tr]).all()
    df = small_dls.show_batch(show=False, max_n=5)
    assert set(df.rating) <= {1., 2., 3., 4., 5.}
    # labelled test data is encoded with the same levels
    tdl = small_dls.test_dl(small.head(7), with_labels=True)
    assert (tdl.dataset.y.numpy() == encode_ratings(small.rating.head(7), small_dls.levels)).all()

def test_half_stars_same_code():
    half = synth_movielens(n_users=150, n_items=200, n_ratings=6000, levels=np.arange(.5, 5.01, .5), seed=5).ratings[['user','item','rating']]
    dls = CollabCEDataLoaders.from_df(half, bs=256, seed=0, unseen='keep')
    assert dls.n_levels == 10 and dls.vocab[0] == .5
    for loss in ('ce', 'ordinal'):
        torch.manual_seed(0)
        learn = fit(quiet(collab_ce_learner(dls, n_factors=8, loss=loss)), 3, lr=3e-2, wd=0.1)
        probs,_ = learn.get_preds()
        assert probs.shape == (len(dls.valid_ds), 10)
        torch.testing.assert_close(probs.sum(1), torch.ones(len(probs)))
        r = learn.predict(half.iloc[0])[0]
        assert r in set(np.arange(.5, 5.01, .5).round(1))

# ---- bad input

def test_off_grid_error_names_values_and_counts(small):
    bad = small.astype({'rating': float})
    bad.loc[:4, 'rating'] = 3.7; bad.loc[5:6, 'rating'] = 2.2
    with pytest.raises(CollabDataError, match=r"7 rating\(s\).*3\.7 \(5 rows\), 2\.2 \(2 rows\).*off_grid='round'"):
        CollabCEDataLoaders.from_df(bad)
    r = CollabCEDataLoaders.from_df(bad, off_grid='round', unseen='keep', seed=0)
    b = CollabCEDataLoaders.from_df(bad, off_grid='bin', unseen='keep', seed=0)
    assert r.n_levels == b.n_levels == 5
    # 3.7 rounds to 4 stars and bins down to 3 stars
    assert encode_ratings([3.7], r.levels, 'round')[0] == 3 and encode_ratings([3.7], b.levels, 'bin')[0] == 2
    with pytest.raises(CollabDataError, match='off_grid must be'): CollabCEDataLoaders.from_df(bad, off_grid='nearest')

def test_levels_not_covering_data(small):
    with pytest.raises(CollabDataError, match=r'do not cover .*1 \('): CollabCEDataLoaders.from_df(small, levels=[2, 3, 4, 5])
    with pytest.raises(CollabDataError, match='increasing'): CollabCEDataLoaders.from_df(small, levels=[5, 4, 3, 2, 1])

def test_single_level(small):
    with pytest.raises(CollabDataError, match='single level'): CollabCEDataLoaders.from_df(small.assign(rating=4.))
    with pytest.warns(CollabWarning, match='one observed level'):
        CollabCEDataLoaders.from_df(small.assign(rating=4.), levels=[1, 2, 3, 4, 5], unseen='keep')

def test_continuous_ratings(small):
    cont = small.assign(rating=np.random.default_rng(0).uniform(1, 5, len(small)))
    with pytest.raises(CollabDataError, match='discrete'): CollabCEDataLoaders.from_df(cont)
    assert CollabCEDataLoaders.from_df(cont, levels=[1, 2, 3, 4, 5], off_grid='round', unseen='keep').n_levels == 5

def test_learner_needs_level_dls(small):
    fdls = FastCollabDataLoaders.from_df(small, unseen='keep')
    with pytest.raises(CollabDataError, match='CollabCEDataLoaders'): collab_ce_learner(fdls)
    with pytest.raises(CollabDataError, match="'ce' or 'ordinal'"): collab_ce_learner(CollabCEDataLoaders.from_df(small, unseen='keep'), loss='mse')

# ---- models and losses

@pytest.mark.parametrize('loss', ['ce', 'ordinal'])
@pytest.mark.parametrize('use_nn', [False, True])
def test_probabilities_sum_to_one(small_dls, loss, use_nn):
    learn = quiet(collab_ce_learner(small_dls, n_factors=8, loss=loss, use_nn=use_nn, layers=[16]))
    with torch.no_grad():
        for p in learn.model.parameters(): p.normal_(0, 1)     # far from the zero init: stress the tails
    probs,targs,dec = learn.get_preds(with_decoded=True)
    assert probs.shape == (len(small_dls.valid_ds), 5) and (probs >= 0).all()
    torch.testing.assert_close(probs.sum(1), torch.ones(len(probs)))
    assert (dec == probs.argmax(1)).all()

def test_ordinal_monotonic():
    torch.manual_seed(0)
    m = CollabOrdinal(DotScore(30, 40, 6), 7, n_users=30, n_items=40)
    with torch.no_grad():
        for p in m.parameters(): p.normal_(0, 2)
    x = torch.stack([torch.randint(0, 30, (500,)), torch.randint(0, 40, (500,))], 1)
    c = m(x)
    assert (c[:,1:] < c[:,:-1]).all()                              # logit P(y > k) decreases in k
    probs = OrdinalLoss().activation(c)
    cum = probs.cumsum(1)                                          # P(y <= k) increases to 1
    assert (probs >= 0).all() and (cum[:,1:] >= cum[:,:-1] - 1e-6).all()
    torch.testing.assert_close(1 - cum[:,:-1], torch.sigmoid(c), atol=1e-5, rtol=1e-4)
    # a higher score never lowers the expected rating
    s = torch.linspace(-5, 5, 50)[:,None]
    e = expected_rating(OrdinalLoss().activation(m.cuts(s, torch.zeros(50, 2, dtype=torch.long))), np.arange(7.))
    assert (e[1:] >= e[:-1]).all()

def test_ordinal_loss_is_nll():
    "NLL of P(y=k) = σ(c_{k-1}) - σ(c_k), with σ(c_{-1}) = 1 and σ(c_{K-1}) = 0, `c_k` = logit P(y > k)"
    c,t = torch.randn(20, 4).sort(1, descending=True)[0],torch.randint(0, 5, (20,))
    cum = torch.cat([torch.ones(20, 1), torch.sigmoid(c.double()), torch.zeros(20, 1)], 1)     # P(y > k-1), k = 0..K
    nll = -(cum[torch.arange(20), t] - cum[torch.arange(20), t+1]).log()
    lf = OrdinalLoss()
    torch.testing.assert_close(lf(c, t).double(), nll.mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(OrdinalLoss(reduction='none')(c, t).double(), nll, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lf.activation(c).double(), cum[:,:-1] - cum[:,1:], rtol=1e-5, atol=1e-6)

def test_metrics_match_functions(small_dls):
    torch.manual_seed(0)
    learn = fit(quiet(collab_ce_learner(small_dls, n_factors=8, loss='ordinal')), 1)
    vals = dict(zip(learn.recorder.metric_names[3:-1], learn.recorder.values[-1][2:]))   # before get_preds, which edits `values`
    probs,targs = learn.get_preds()
    lv = small_dls.levels
    assert vals['exp_rmse'] == pytest.approx(expected_rmse(probs, targs, lv).item(), abs=1e-5)
    assert vals['accuracy'] == pytest.approx(level_accuracy(probs, targs, lv).item(), abs=1e-6)
    assert vals['nll'] == pytest.approx(level_nll(probs, targs, lv).item(), abs=1e-5)
    assert 0 <= vals['ece'] <= 1 and 0 <= vals['within_1'] <= 1
    # biases and thresholds are left out of weight decay, factors are not
    st = learn.opt.state
    assert st[learn.model.scorer.u_bias.weight]['do_wd'] is False and st[learn.model.cuts.gaps]['do_wd'] is False
    assert st[learn.model.scorer.u_weight.weight].get('do_wd', True)
    # each metric builds its level tensor once, not per batch nor per epoch
    lvt = [m._lv for m in learn.metrics]
    fit(learn, 1)
    assert all(m._lv is t for m,t in zip(learn.metrics, lvt))

def test_mse_metrics_match_ce_names(small):
    "`mse_metrics(levels)` on fastai's collab_learner: the `ce_metrics` columns an MSE model has, computed by hand"
    fdls = FastCollabDataLoaders.from_df(small, bs=256, seed=0, unseen='keep')
    lv = infer_levels(small.rating)
    torch.manual_seed(0)
    learn = fit(quiet(collab_learner(fdls, n_factors=8, y_range=(0, 5.5), metrics=mse_metrics(lv))), 2, lr=3e-2, wd=0.1)
    vals = dict(zip(learn.recorder.metric_names[3:-1], learn.recorder.values[-1][2:]))
    assert list(vals) == ['exp_rmse', 'exp_mae', 'accuracy', 'within_1']
    assert set(vals) <= {m.name for m in ce_metrics()}
    p,t = (o.view(-1).numpy() for o in learn.get_preds())
    hit = lv[np.abs(p[:,None] - lv[None]).argmin(1)]
    assert vals['exp_rmse'] == pytest.approx(np.sqrt(((p-t)**2).mean()), abs=1e-5)
    assert vals['exp_mae'] == pytest.approx(np.abs(p-t).mean(), abs=1e-5)
    assert vals['accuracy'] == pytest.approx((hit == t).mean(), abs=1e-6)
    assert vals['within_1'] == pytest.approx((np.abs(hit-t) <= 1).mean(), abs=1e-6)
    assert 0.2 < vals['accuracy'] < vals['within_1'] <= 1

# ---- Learner integration

@pytest.mark.parametrize('loss', ['ce', 'ordinal'])
def test_export_load_identical_probs(small, small_dls, loss, tmp_path):
    torch.manual_seed(0)
    learn = fit(quiet(collab_ce_learner(small_dls, n_factors=8, loss=loss, path=tmp_path)), 1)
    learn.export('ce.pkl')
    learn2 = load_learner(tmp_path/'ce.pkl')
    dl1,dl2 = learn.dls.test_dl(small.head(50)),learn2.dls.test_dl(small.head(50))
    p1,p2 = learn.get_preds(dl=dl1)[0],learn2.get_preds(dl=dl2)[0]
    assert torch.equal(p1, p2)
    assert list(learn2.dls.vocab) == [1., 2., 3., 4., 5.]
    r,lvl,p = learn2.predict(small.iloc[3])
    assert r == float(small_dls.levels[lvl]) and p.shape == (5,)

def test_real_ml100k_learns(bench_dls):
    "Accuracy clearly above the majority class after a short fit; interpretation works with star labels"
    y = bench_dls.valid_ds.y
    majority = torch.bincount(y).max().item() / len(y)
    assert 0.3 < majority < 0.37
    torch.manual_seed(0)
    learn = fit(quiet(collab_ce_learner(bench_dls, n_factors=50, loss='ordinal')), 2, wd=0.7)
    acc,rmse = learn.recorder.values[-1][2:4]
    assert acc > majority + 0.06, (acc, majority)
    assert rmse < 1.0
    interp = ClassificationInterpretation.from_learner(learn)
    cm = interp.confusion_matrix()
    assert cm.shape == (5, 5) and cm.sum() == len(y)
    assert np.trace(cm) / cm.sum() == pytest.approx(acc, abs=1e-6)
    assert [v for v in interp.vocab] == [1., 2., 3., 4., 5.]
    exp_r,top_r,true_r = learn.get_rating_preds()
    assert ((exp_r - true_r)**2).mean().sqrt().item() == pytest.approx(rmse, abs=1e-4)
    df = learn.dls.valid.show_results(learn.dls.valid.one_batch(), torch.zeros(1024, dtype=torch.long), show=False, max_n=3)
    assert list(df.rating_pred) == [1., 1., 1.]

def test_ordinal_without_user_thresholds(small_dls):
    learn = quiet(collab_ce_learner(small_dls, n_factors=8, loss='ordinal', user_thresholds=False))
    assert learn.model.cuts.user_shift is None and learn.model.cuts.item_spread is None
    th = learn.model.cuts.thresholds()
    assert th.shape == (1, 4) and (th[:,1:] > th[:,:-1]).all()
    probs = fit(learn, 1).get_preds()[0]
    torch.testing.assert_close(probs.sum(1), torch.ones(len(probs)))

def test_show_results_and_most_confused_in_stars(small_dls):
    torch.manual_seed(0)
    learn = fit(quiet(collab_ce_learner(small_dls, n_factors=8)), 1)
    b = small_dls.valid.one_batch()
    _,_,dec = learn.get_preds(dl=[b], with_decoded=True)
    df = small_dls.valid.show_results(b, dec, max_n=6, show=False)
    assert set(df.rating) | set(df.rating_pred) <= {1., 2., 3., 4., 5.}
    assert (df.rating_pred.to_numpy() == small_dls.levels[dec[:6].numpy()]).all()
    for actual,pred,n in ClassificationInterpretation.from_learner(learn).most_confused():
        assert actual in small_dls.vocab and pred in small_dls.vocab and n >= 1
