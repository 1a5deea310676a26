"CollabInterpretation values against direct computations (collab_ext.interpret)"
import numpy as np, pytest, torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from fastai.callback.schedule import *
from fastai.collab import collab_learner
from collab_ext.core import CollabWarning, CollabDataError
from collab_ext.models import *
from collab_ext.learner import *
from collab_ext.interpret import *

@pytest.fixture(scope='module')
def dls(ml_dls): return ml_dls            # conftest's benchmark-split loaders

@pytest.fixture(scope='module')
def learn(ml_dot_learn): return ml_dot_learn

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
    assert t.attrs['spearman'] == pytest.approx(spearmanr(t.bias, t.mean_rating).statistic, abs=1e-3)   # ties: first vs average ranks
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

def test_pca_properties(interp, learn):
    "Principal components: centred, uncorrelated, of decreasing variance = the covariance's top eigenvalues; pc0 on its top eigenvector"
    p = interp.item_pca(n_items=300, k=3)
    assert len(p) == 300 and p['count'].is_monotonic_decreasing
    pcs = p[['pc0','pc1','pc2']].to_numpy(np.float64)
    np.testing.assert_allclose(pcs.mean(0), 0, atol=1e-5)
    cov = np.cov(pcs, rowvar=False)
    np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0, atol=1e-5 * cov[0,0])
    assert cov[0,0] >= cov[1,1] >= cov[2,2] > 0
    f = learn.model.item_factors.detach().numpy().astype(np.float64)[p.index.to_numpy()]
    evals,evecs = np.linalg.eigh(np.cov(f, rowvar=False))
    np.testing.assert_allclose(np.diag(cov), evals[::-1][:3], rtol=1e-4)
    pc0 = (f - f.mean(0)) @ evecs[:,-1]
    np.testing.assert_allclose(np.abs(p.pc0.to_numpy()), np.abs(pc0), rtol=1e-3, atol=1e-5)
    assert np.sign(p.pc0.to_numpy() @ pc0) * p.pc0.to_numpy() == pytest.approx(pc0, rel=1e-3, abs=1e-5)

def test_bad_input(interp):
    with pytest.raises(KeyError, match=r'Fargo \(1996\)'): interp.most_similar('Fargo (1969)')
    with pytest.raises(KeyError, match='not in the training vocab'): interp.most_similar(123456)
    with pytest.raises(KeyError, match='user'): interp.user_nearest_items('nobody')
    with pytest.raises(KeyError, match='user'): interp.user_code('#na#')
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

@pytest.fixture(scope='module')
def ce_learners():
    "Small untrained `collab_ce_learner`s (CE dot, ordinal dot) on synthetic 1-5 star data"
    from collab_ext.synth import synth_movielens
    from collab_ext.ce.data import CollabCEDataLoaders
    from collab_ext.ce.learner import collab_ce_learner
    small = synth_movielens(n_users=60, n_items=80, n_ratings=2000, seed=3).ratings[['user','item','rating']]
    dls = CollabCEDataLoaders.from_df(small, bs=256, seed=0, unseen='keep')
    torch.manual_seed(0)
    return [collab_ce_learner(dls, n_factors=6, loss=loss) for loss in ('ce', 'ordinal')]

def test_ce_models_factors(ce_learners):
    "The ce models' factors and biases are their `DotScore`'s"
    for l in ce_learners:
        i,s = CollabInterpretation(l),getattr(l.model, 'scorer', getattr(l.model, 'score', None))
        torch.testing.assert_close(i.parts['item_factors'], s.i_weight.weight.detach())
        torch.testing.assert_close(i.parts['user_factors'], s.u_weight.weight.detach())
        torch.testing.assert_close(i.parts['item_bias'], s.i_bias.weight.detach()[:,0])

def test_ce_models_interpret(ce_learners):
    "Biases and nearest items of ce models; item stats in stars (needs `train_codes` on `CollabCEDataLoaders`)"
    for l in ce_learners:
        i,s = CollabInterpretation(l),getattr(l.model, 'scorer', getattr(l.model, 'score', None))
        order = [c for c in torch.argsort(s.i_bias.weight.detach()[:,0]).tolist() if c]
        assert i.lowest_biases(4).index.tolist() == order[:4]
        fi = s.i_weight.weight.detach()
        sims = F.cosine_similarity(fi[1][None], fi, dim=1)
        sims[0] = sims[1] = -2
        assert i.most_similar(l.dls.classes['item'][1], 5).index.tolist() == torch.argsort(sims, descending=True)[:5].tolist()
        t = i.item_table()
        assert t['mean_rating'].dropna().between(1, 5).all() and t['count'].sum() == len(l.dls.train_ds)
