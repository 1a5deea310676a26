"Chapter-8 models, batched prediction, recommendations and the L2 callback (collab_ext.models, collab_ext.learner)"
import numpy as np, pandas as pd, pytest, torch
from torch import nn
from fastai.learner import Learner, load_learner
from fastai.losses import MSELossFlat
from fastai.callback.core import Callback
from fastai.callback.schedule import *
from fastai.collab import collab_learner, EmbeddingDotBias, EmbeddingNN
from fastai.tabular.model import get_emb_sz
from collab_ext.core import CollabWarning, CollabDataError
from collab_ext.synth import synth_movielens
from collab_ext.data.loaders import FastCollabDataLoaders
from collab_ext.models import *
from collab_ext.learner import *
from collab_ext.learner import _to_ratings

def quiet_fit(learn, *args, **kw):
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(*args, **kw)
    return learn

@pytest.fixture(scope='module')
def synth_dls():
    ml = synth_movielens(n_users=80, n_items=120, n_ratings=5000, seed=3)
    return FastCollabDataLoaders.from_df(ml.ratings[['user','item','rating','title']], bs=256, seed=3, unseen='keep')

def make_models(dls):
    return [DotProduct.from_dls(dls, 8, y_range=(0, 5.5)), DotProductBias.from_dls(dls, 8), CollabNN.from_dls(dls, 6, 10),
            EmbeddingDotBias.from_classes(8, dls.classes, y_range=(0, 5.5)), EmbeddingNN(get_emb_sz(dls), layers=[8], y_range=(0, 5.5))]

def test_from_dls_sizes(synth_dls):
    nu,ni = len(synth_dls.classes['user']),len(synth_dls.classes['item'])
    m = DotProductBias.from_dls(synth_dls, 7)
    assert m.user_factors.shape == (nu, 7) and m.item_factors.shape == (ni, 7) and m.item_bias.shape == (ni,)
    n = CollabNN.from_dls(synth_dls, user_sz=5, item_sz=9)
    assert n.user_factors.weight.shape == (nu, 5) and n.item_factors.weight.shape == (ni, 9)
    assert isinstance(n.layers, nn.Sequential) and n.layers[0].in_features == 14

def test_dot_product_bias_forward_matches_formula():
    m = DotProductBias(3, 4, n_factors=2, y_range=(0, 5.5), std=0.5)
    x = torch.tensor([[1, 2], [2, 3]])
    raw = (m.user_factors[x[:,0]]*m.item_factors[x[:,1]]).sum(1) + m.user_bias[x[:,0]] + m.item_bias[x[:,1]]
    torch.testing.assert_close(m(x), torch.sigmoid(raw)*5.5)

@pytest.mark.parametrize('k', range(3))
def test_models_train(synth_dls, k):
    m = make_models(synth_dls)[k]
    learn = Learner(synth_dls, m, loss_func=MSELossFlat())
    before = learn.validate()[0]
    quiet_fit(learn, 4, 3e-2, wd=0.01)
    assert learn.recorder.values[-1][1] < before

def test_predict_ratings_matches_model_and_predict(synth_dls):
    df = synth_dls.valid_ds.decode(synth_dls.valid_ds.x[:40])[['user','item']]
    codes = synth_dls.valid_ds.x[:40]
    for m in make_models(synth_dls):
        learn = Learner(synth_dls, m, loss_func=MSELossFlat())
        p = learn.predict_ratings(df, bs=7)                        # several batches
        m.eval()
        np.testing.assert_allclose(p, m(codes).detach().flatten().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(p[0], float(learn.predict(df.iloc[0])[0]), rtol=1e-5)

def test_predict_ratings_unknown(synth_dls):
    learn = Learner(synth_dls, DotProductBias.from_dls(synth_dls, 4), loss_func=MSELossFlat())
    bad = pd.DataFrame({'user': [synth_dls.classes['user'][1], 10**6], 'item': [synth_dls.classes['item'][1]]*2})
    with pytest.raises(KeyError, match=str(10**6)): learn.predict_ratings(bad, unknown='error')
    with pytest.warns(CollabWarning, match=str(10**6)): learn.predict_ratings(bad)      # the default: scored as '#na#', named in a warning
    p = learn.predict_ratings(bad, unknown='na')
    learn.model.eval()
    with torch.no_grad(): expected = learn.model(torch.tensor([[1, 1], [0, 1]])).numpy()       # the unknown user is the `#na#` row
    np.testing.assert_allclose(p, expected, rtol=1e-6)

def test_sizes_follow_collab_names():
    "`from_dls` sizes users and items by `collab_names`, not by the order of `dls.classes`"
    from types import SimpleNamespace
    dls = SimpleNamespace(classes={'item': ['#na#']+list(range(3)), 'user': ['#na#']+list(range(5))},
                          train_ds=SimpleNamespace(user_name='user', item_name='item', rating_name='rating'))
    m = DotProductBias.from_dls(dls, 2)
    assert m.user_factors.shape == (6, 2) and m.item_factors.shape == (4, 2)
    assert DotProductBias.from_dls(dls, 2, user_name='item', item_name='user').user_factors.shape == (4, 2)

def test_model_factors_ce_models():
    "`model_factors` reads the `DotScore` inside `CollabCEDot` and `CollabOrdinal`"
    from collab_ext.ce.models import DotScore, CollabCEDot, CollabOrdinal
    for m in (CollabCEDot(5, 7, [1., 2., 3.], 4), CollabOrdinal(DotScore(5, 7, 4), 3, 5, 7)):
        s,f = getattr(m, 'scorer', getattr(m, 'score', None)),model_factors(m)
        assert f['user_factors'].shape == (5, 4) and f['item_bias'].shape == (7,)
        assert model_factors(m, detach=False)['item_factors'] is s.i_weight.weight

class _LevelsModel(nn.Module):
    "A stand-in classification head: 5 logits per row, favouring level index `k`"
    def __init__(self, k): super().__init__(); self.k = k; self.w = nn.Parameter(torch.zeros(1))
    def forward(self, x):
        out = torch.full((len(x), 5), -20.) + self.w
        out[:, self.k] = 20.
        return out

def test_predict_ratings_expected_rating_for_levels(synth_dls):
    learn = Learner(synth_dls, _LevelsModel(3), loss_func=MSELossFlat())
    df = synth_dls.valid_ds.decode(synth_dls.valid_ds.x[:5])[['user','item']]
    assert learn.predict_ratings(df).shape == (5, 5)                  # no levels: raw output
    synth_dls.levels = [1., 2., 3., 4., 5.]
    try: np.testing.assert_allclose(learn.predict_ratings(df), 4.0, atol=1e-4)
    finally: del synth_dls.levels
    np.testing.assert_allclose(_to_ratings(torch.tensor([[.5, 0, 0, 0, .5]]), [1, 2, 3, 4, 5]), [3.])

def test_known_and_seen_items(ml_dls, ratings):
    tr = ratings.iloc[ml_dls.splits[0]]
    assert set(ml_dls.known_items()) == set(tr.item)
    for u in (1, 196, 943):
        assert set(ml_dls.seen_items(u)) == set(tr.item[tr.user == u])
    assert ml_dls.titles[50] == 'Star Wars (1977)'

def test_recommend_excludes_seen(ml_dot_learn, ml_dls):
    recs = ml_dot_learn.recommend(196, n=15)
    assert len(recs) == 15 and list(recs.columns) == ['item', 'title', 'rating_pred']
    assert not set(recs.item) & set(ml_dls.seen_items(196))
    assert (np.diff(recs.rating_pred.to_numpy()) <= 0).all()
    # the top-15 equals brute force over unseen items
    cand = [i for i in ml_dls.known_items() if i not in set(ml_dls.seen_items(196))]
    p = ml_dot_learn.predict_ratings(pd.DataFrame({'user': 196, 'item': cand}))
    np.testing.assert_allclose(recs.rating_pred.to_numpy(), np.sort(p)[::-1][:15], rtol=1e-6)
    assert recs.title.iloc[0] == ml_dls.titles[recs.item.iloc[0]]

def test_recommend_bad_input(ml_dot_learn, ml_dls):
    with pytest.raises(KeyError, match='not in the training vocab'): ml_dot_learn.recommend(99999)   # no look-alikes of numeric ids
    with pytest.warns(CollabWarning, match='5000'):
        recs = ml_dot_learn.recommend(1, n=5000)
    assert len(recs) == len(ml_dls.known_items()) - len(ml_dls.seen_items(1))

def test_export_load_round_trip(synth_dls, tmp_path):
    df = synth_dls.valid_ds.decode(synth_dls.valid_ds.x[:30])[['user','item']]
    for k,m in enumerate(make_models(synth_dls)):
        learn = Learner(synth_dls, m, loss_func=MSELossFlat(), path=tmp_path)
        quiet_fit(learn, 1, 1e-2)
        learn.export(f'm{k}.pkl')
        learn2 = load_learner(tmp_path/f'm{k}.pkl')
        np.testing.assert_allclose(learn2.predict_ratings(df), learn.predict_ratings(df), rtol=1e-6)
        u = synth_dls.classes['user'][1]
        pd.testing.assert_frame_equal(learn2.recommend(u, 5, exclude_seen=False), learn.recommend(u, 5, exclude_seen=False))

class _ZeroLoss(Callback):
    order = -1
    def after_loss(self): self.learn.loss_grad = self.learn.loss_grad*0

@pytest.mark.parametrize('wd', [0.01, 0.3])
def test_l2_penalty_gradient_is_2_wd_p(synth_dls, wd):
    m = DotProductBias.from_dls(synth_dls, 4, std=0.2)
    learn = Learner(synth_dls, m, loss_func=MSELossFlat(), cbs=[_ZeroLoss(), L2Penalty(wd)])
    x,y = synth_dls.one_batch()
    learn.training = True; learn.xb,learn.yb = (x,),(y,)
    learn.loss_grad = learn.loss_func(m(x), y); learn('after_loss'); learn.loss_grad.backward()
    for p in m.parameters(): torch.testing.assert_close(p.grad, 2*wd*p.detach())
    expected = wd*sum((p.detach()**2).sum() for p in m.parameters())
    torch.testing.assert_close(learn.cbs.filter(lambda c: isinstance(c, L2Penalty))[0].penalty.detach(), expected)

def test_l2_penalty_batch_rows_only(synth_dls):
    m = DotProductBias(5, 6, n_factors=3, std=0.2)
    learn = Learner(synth_dls, m, loss_func=MSELossFlat(), cbs=[_ZeroLoss(), L2Penalty(0.5, rows='batch', bias_wd=0.)])
    x = torch.tensor([[1, 2], [3, 2], [1, 4]]); y = torch.ones(3, 1)
    learn.training = True; learn.xb,learn.yb = (x,),(y,)
    learn.loss_grad = learn.loss_func(m(x), y); learn('after_loss'); learn.loss_grad.backward()
    torch.testing.assert_close(m.item_factors.grad[2], 2*0.5*m.item_factors[2].detach()*2/3)
    assert m.item_factors.grad[[0, 1, 3, 5]].abs().sum() == 0           # rows outside the batch get no penalty
    assert m.item_bias.grad is None or m.item_bias.grad.abs().sum() == 0 # bias_wd=0: no bias penalty
    with pytest.raises(CollabDataError): L2Penalty(rows='some')

def test_l2_penalty_not_in_validation(synth_dls):
    learn = Learner(synth_dls, DotProductBias.from_dls(synth_dls, 4), loss_func=MSELossFlat())
    plain = learn.validate()[0]
    learn.add_cb(L2Penalty(10.))
    assert learn.validate()[0] == pytest.approx(plain)

def test_predict_ratings_on_fastai_collab_dataloaders(ratings):
    "fastai's own `CollabDataLoaders` (TabularPandas): same values as `get_preds`"
    from fastai.collab import CollabDataLoaders
    dls = CollabDataLoaders.from_df(ratings[['user','item','rating']].iloc[:5000], bs=512, seed=0)
    df = ratings[['user','item']].iloc[5000:5020]
    for use_nn in (False, True):
        learn = collab_learner(dls, n_factors=4, y_range=(0, 5.5), use_nn=use_nn)
        dl = dls.test_dl(df)
        with learn.no_bar(): expected = learn.get_preds(dl=dl)[0].flatten().numpy()
        np.testing.assert_allclose(learn.predict_ratings(df), expected, rtol=1e-5, atol=1e-6)
