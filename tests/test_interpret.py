"CollabInterpretation values against direct computations (collab_ext.interpret)"
import warnings
import numpy as np, pandas as pd, pytest, torch
import torch.nn.functional as F
from fastai.learner import Learner
from fastai.losses import MSELossFlat
from fastai.callback.schedule import *
from fastai.collab import collab_learner
from collab_ext.core import CollabWarning, CollabDataError
from collab_ext.data.split import RandomRatingSplitter
from collab_ext.data.loaders import FastCollabDataLoaders
from collab_ext.models import *
from collab_ext.learner import *
from collab_ext.interpret import *

@pytest.fixture(scope='module')
def dls(ratings):
    return FastCollabDataLoaders.from_df(ratings[['user','item','rating','title']], splitter=RandomRatingSplitter(0.2, 42),
                                         bs=4096, seed=42, unseen='keep')

@pytest.fixture(scope='module')
def learn(dls):
    l = Learner(dls, DotProductBias.from_dls(dls, 16), loss_func=MSELossFlat())
    with l.no_bar(), l.no_logging(): l.fit_one_cycle(2, 3e-2, wd=1.0)
    return l

@pytest.fixture(scope='module')
def interp(learn): return CollabInterpretation.from_learner(learn)

@pytest.fixture(scope='module')
def train(ratings, dls): return ratings.iloc[dls.splits[0]]

def test_top_biases_are_argsort(interp, learn, dls):
    order = [c for c in torch.argsort(learn.model.item_bias.detach()).tolist() if c != 0]
    assert interp.lowest_biases(10).index.tolist() == order[:10]
    assert interp.highest_biases(10).index.tolist() == order[::-1][:10]
    low = interp.lowest_biases(3)
    assert low.item.tolist() == [dls.classes['item'][c] for c in order[:3]]
    np.testing.assert_allclose(low.bias.to_numpy(), learn.model.item_bias.detach().numpy()[order[:3]])

def test_item_table_stats(interp, train):
    t = interp.item_table().set_index('item')
    g = train.groupby('item').rating
    np.testing.assert_allclose(t.loc[g.mean().index, 'mean_rating'].to_numpy(), g.mean().to_numpy(), rtol=1e-5)
    assert (t.loc[g.size().index, 'count'].to_numpy() == g.size().to_numpy()).all()
    assert t.loc[1, 'title'] == 'Toy Story (1995)'

def test_min_count_filters(interp):
    assert (interp.highest_biases(20, min_count=100)['count'] >= 100).all()

def test_bias_vs_mean(interp):
    t = interp.bias_vs_mean(min_count=30).sort_index()     # ranks were taken in code order (ties broken by it)
    assert (t['count'] >= 30).all()
    assert (t.bias_rank.to_numpy() == t.bias.rank(ascending=False, method='first').astype(int).to_numpy()).all()
    assert (t.mean_rank.to_numpy() == t.mean_rating.rank(ascending=False, method='first').astype(int).to_numpy()).all()
    assert (t.rank_shift == t.mean_rank - t.bias_rank).all()
    rho = np.corrcoef(t.bias_rank, t.mean_rank)[0,1]
    assert t.attrs['spearman'] == pytest.approx(rho)
    a = interp.rank_agreement(n=10, min_count=30)
    assert a['top_n_overlap'] == len(set(t.nsmallest(10, 'bias_rank').index) & set(t.nsmallest(10, 'mean_rank').index))

def test_most_similar_is_brute_force_cosine(interp, learn):
    fi = learn.model.item_factors.detach()
    for item in (1, 50, 'Fargo (1996)'):
        c = interp.item_code(item)
        sims = F.cosine_similarity(fi[c][None], fi, dim=1)
        sims[0] = sims[c] = -2
        top = torch.argsort(sims, descending=True)[:7]
        res = interp.most_similar(item, 7)
        assert res.index.tolist() == top.tolist()
        np.testing.assert_allclose(res.similarity.to_numpy(), sims[top].numpy(), rtol=1e-5)

def test_user_nearest_items(interp, learn, dls):
    uf,fi = learn.model.user_factors.detach(),learn.model.item_factors.detach()
    sims = F.cosine_similarity(uf[dls.classes['user'].o2i[13]][None], fi, dim=1)
    sims[0] = -2
    assert interp.user_nearest_items(13, 5).index.tolist() == torch.argsort(sims, descending=True)[:5].tolist()
    seen = set(dls.seen_items(13))
    assert not seen & set(interp.user_nearest_items(13, 20, exclude_seen=True).item)

def test_pca_matches_svd(interp, learn):
    p = interp.item_pca(n_items=300, k=3)
    assert len(p) == 300 and p['count'].is_monotonic_decreasing
    x = learn.model.item_factors.detach()[torch.as_tensor(p.index.to_numpy())]
    x = x - x.mean(0)
    vt = torch.linalg.svd(x, full_matrices=False)[2]
    for j in range(3): np.testing.assert_allclose(p[f'pc{j}'].to_numpy(), (x @ vt[j]).numpy(), rtol=1e-4, atol=1e-5)

def test_bad_input(interp):
    with pytest.raises(KeyError, match=r'Fargo \(1996\)'): interp.most_similar('Fargo (1969)')
    with pytest.raises(KeyError, match='not in the training vocab'): interp.most_similar(123456)
    with pytest.raises(KeyError, match='user'): interp.user_nearest_items('nobody')
    with pytest.warns(CollabWarning, match='9999'): interp.most_similar(1, 9999)

def test_fastai_models(dls):
    l = collab_learner(dls, n_factors=8, y_range=(0, 5.5))
    i = CollabInterpretation(l)
    order = [c for c in torch.argsort(l.model.i_bias.weight.detach()[:,0]).tolist() if c]
    assert i.lowest_biases(4).index.tolist() == order[:4]
    nn_i = CollabInterpretation(collab_learner(dls, use_nn=True, layers=[10], y_range=(0, 5.5)))
    with pytest.raises(TypeError, match='no item bias'): nn_i.bias_vs_mean()
    assert len(nn_i.most_similar(1, 4)) == 4
    with pytest.raises(CollabDataError, match='differ in size'): nn_i.user_nearest_items(1)
