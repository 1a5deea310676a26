"Ranking metrics, the catalog scoring protocol, RankingMetrics and the per-user splitters, on the real ML-100k."
import math, warnings
import numpy as np, pandas as pd, pytest, torch, scipy.sparse as sp
from fastai.collab import collab_learner
from fastai.learner import Learner
from fastai.losses import MSELossFlat
from fastai.metrics import rmse
from collab_ext.core import CollabDataError, CollabWarning
from collab_ext.data.split import RandomRatingSplitter, StratifiedSplitter, ChronoSplitter, LeaveOneOutSplitter
from collab_ext.data.loaders import FastCollabDataLoaders
from collab_ext.models import DotProduct, DotProductBias
import collab_ext.learner  # noqa: F401  (adds predict_ratings, known_items)
from collab_ext.metrics.ranking import *
from collab_ext.metrics.beyond import gini, coverage, arp, novelty, catalog_coverage, exposure_gini

# ---------------------------------------------------------------- an independent, loop-based reference
def ref_metrics(lists, truth_sets, k, gains=None):
    "Per-user metrics from plain Python loops over the lists (written from the textbook definitions, not from the code under test)"
    out = {n: [] for n in ('precision','recall','ndcg','map','map_msr','hit_rate','mrr','ndcg_graded')}
    for u,(lst,rel) in enumerate(zip(lists, truth_sets)):
        if not rel: continue
        lst = [int(i) for i in lst[:k]]
        hits,ap,dcg,dcg_g,first = 0,0.,0.,0.,0.
        for j,i in enumerate(lst, 1):
            if i in rel:
                hits += 1
                ap += hits/j
                dcg += 1/math.log2(j+1)
                if gains is not None: dcg_g += gains[u][i]/math.log2(j+1)
                if not first: first = 1/j
        idcg = sum(1/math.log2(j+1) for j in range(1, min(len(rel), k)+1))
        out['precision'].append(hits/k); out['recall'].append(hits/len(rel)); out['ndcg'].append(dcg/idcg)
        out['map'].append(ap/min(len(rel), k)); out['map_msr'].append(ap/len(rel))
        out['hit_rate'].append(float(hits > 0)); out['mrr'].append(first)
        if gains is not None:
            best = sorted(gains[u].values(), reverse=True)[:k]
            out['ndcg_graded'].append(dcg_g/sum(g/math.log2(j+1) for j,g in enumerate(best, 1)))
    return {n: float(np.mean(v)) for n,v in out.items() if v}

@pytest.fixture(scope='module')
def split(ml_dls):
    "Training mask, truth (all validation rows) and ratings of the benchmark split, in vocab codes"
    seen = seen_matrix(ml_dls)
    truth,info = holdout_truth(ml_dls)
    graded,_ = holdout_truth(ml_dls, graded=True)
    return seen,truth,graded,info

def _sets(truth):
    return [set(truth.indices[truth.indptr[u]:truth.indptr[u+1]].tolist()) for u in range(truth.shape[0])]

def test_against_loop_reference(ml_dot_learn, ml_dls, split):
    seen,truth,graded,_ = split
    n_u,n_i = seen.shape
    scores = catalog_scores(ml_dot_learn, torch.arange(n_u))
    top = topk_items(scores, 20, seen=seen, catalog=np.arange(1, n_i))
    # the lists: no training item, no '#na#', sorted by score
    for u in (1, 100, 942):
        assert not set(top[u].tolist()) & set(seen.indices[seen.indptr[u]:seen.indptr[u+1]].tolist())
        assert 0 not in top[u].tolist()
        assert (np.diff(scores[u, top[u]].numpy()) <= 0).all()
    gains = [dict(zip(graded.indices[graded.indptr[u]:graded.indptr[u+1]].tolist(),
                      graded.data[graded.indptr[u]:graded.indptr[u+1]].tolist())) for u in range(n_u)]
    for k in (1, 5, 10, 20):
        ref = ref_metrics(top.tolist(), _sets(truth), k, gains)
        pu = per_user_metrics(top, truth, k)
        for n in ('precision','recall','ndcg','map','map_msr','hit_rate','mrr'):
            v = pu[n]
            assert float(v[~v.isnan()].mean()) == pytest.approx(ref[n], rel=1e-9, abs=1e-12), (n, k)
        assert ndcg_at_k(top, graded, k, graded=True) == pytest.approx(ref['ndcg_graded'], rel=1e-9)
    assert precision_at_k(top, truth, 10) == pytest.approx(ref_metrics(top.tolist(), _sets(truth), 10)['precision'])

def test_against_cornac(ml_dot_learn, split):
    cornac = pytest.importorskip('cornac')
    from cornac.metrics import NDCG, Precision, Recall, HitRatio, MRR, MAP
    seen,truth,_,_ = split
    n_u,n_i = seen.shape
    scores = catalog_scores(ml_dot_learn, torch.arange(n_u))
    top = topk_items(scores, 10, seen=seen, catalog=np.arange(1, n_i))
    sets = _sets(truth)
    users = [u for u in range(n_u) if sets[u]]
    k = 10
    for ours,theirs in ((ndcg_at_k, NDCG(k)), (precision_at_k, Precision(k)), (recall_at_k, Recall(k)), (hit_rate_at_k, HitRatio(k))):
        ref = np.mean([theirs.compute(gt_pos=np.array(sorted(sets[u])), pd_rank=top[u].numpy()) for u in users])
        assert ours(top, truth, k) == pytest.approx(ref, rel=1e-9), theirs.name
    # cornac's MRR raises on a list without a hit: compare on the users with one
    pu = per_user_metrics(top, truth, k)['mrr']
    hit = [u for u in users if sets[u] & set(top[u].tolist())]
    ref = np.mean([MRR().compute(gt_pos=np.array(sorted(sets[u])), pd_rank=top[u].numpy()) for u in hit])
    assert float(pu[hit].mean()) == pytest.approx(ref, rel=1e-9)
    # cornac's MAP ranks the whole catalog: our MAP@k with k = the whole list is the same quantity (untied scores,
    # users whose held-out items all have a training row, since cornac averages over the items it could rank)
    u = [uu for uu in users if max(sets[uu]) < n_i][:100]
    g = torch.Generator().manual_seed(0)
    s = torch.stack([torch.randperm(n_i, generator=g).float() for _ in u])
    for j,uu in enumerate(u):
        cand = np.setdiff1d(np.arange(1, n_i), seen.indices[seen.indptr[uu]:seen.indptr[uu+1]])
        ref = MAP().compute(item_indices=cand, pd_scores=s[j, cand].numpy(), gt_pos=np.array(sorted(sets[uu])))
        full = topk_items(s[[j]], len(cand), seen=seen[[uu]], catalog=np.arange(1, n_i))     # the whole unseen catalog, ranked
        ours = per_user_metrics(full, truth[[uu]][:, :n_i], len(cand))['map'].item()
        assert ours == pytest.approx(ref, rel=1e-9)

def test_report_counts_and_speed_path(ml_dls, split):
    seen,truth,_,info = split
    n_u,n_i = seen.shape
    scores = torch.randn(n_u, n_i, generator=torch.Generator().manual_seed(0))
    rep = ranking_report(scores, truth, k=10, seen=seen, catalog=np.arange(1, n_i), users=np.arange(1, n_u))
    c = rep.counts
    # 943 users, 2 with no row in the random 20% validation: left out and counted
    assert c['n_users'] + c['n_users_no_truth'] == 943 and c['n_users_no_truth'] == 2
    assert c['n_truth'] == 20_000                      # every validation row kept
    assert info['n_rows_unknown_item'] == 34 and c['n_truth_unseen_items'] == 34   # items with no training row: kept, counted
    assert c['n_truth_in_seen'] == 0
    assert truth.shape == (n_u, n_i + 34)
    assert set(rep) == {'precision','recall','ndcg','map','map_msr','hit_rate','mrr','coverage','gini','novelty','avg_pop'}
    # random lists: precision near the base rate, coverage near total
    assert rep['precision'] < 0.05 and rep['coverage'] > 0.95
    pop = np.diff(seen.tocsc().indptr)
    top = topk_items(scores, 10, seen=seen, catalog=np.arange(1, n_i), rows=np.arange(1, n_u))
    evaluated = top[np.diff(truth.indptr)[1:] > 0]
    assert rep['avg_pop'] == pytest.approx(arp(evaluated.numpy(), pop))
    assert rep['coverage'] == pytest.approx(coverage(np.bincount(evaluated.flatten(), minlength=n_i)[1:]))
    assert rep['gini'] == pytest.approx(gini(np.bincount(evaluated.flatten(), minlength=n_i)[1:]))
    assert rep['novelty'] == pytest.approx(novelty(evaluated.numpy(), pop, 943))
    # per-user table
    pu = ranking_report(scores, truth, k=10, seen=seen, catalog=np.arange(1, n_i), users=np.arange(1, n_u), per_user=True).per_user
    assert len(pu) == 941 and pu.ndcg.mean() == pytest.approx(rep['ndcg'])

def test_popularity_ranker_protocol(ml_dls, split):
    "A model that only defines `score_items` (the protocol) is ranked through it, in fit tables and validate()"
    seen,truth,_,_ = split
    pop = torch.tensor(np.diff(seen.tocsc().indptr), dtype=torch.float32)
    class Popularity(torch.nn.Module):
        def __init__(self): super().__init__(); self.w = torch.nn.Parameter(torch.zeros(1))
        def forward(self, x): return pop[x[:,1]] + self.w
        def score_items(self, u): return pop[None].expand(len(u), -1) + self.w
    learn = Learner(ml_dls, Popularity(), loss_func=MSELossFlat(), metrics=RankingMetrics(10, ('ndcg','precision')))
    res = learn.validate()
    rep = ranking_report(pop[None].expand(seen.shape[0], -1), truth, 10, seen=seen,
                         catalog=np.arange(1, seen.shape[1]), users=np.arange(1, seen.shape[0]))
    assert res[1] == pytest.approx(rep['ndcg']) and res[2] == pytest.approx(rep['precision'])
    assert 0.05 < res[1] < 0.3          # most-popular lists: far above random, far below the trained models of the issue
    assert learn.metrics[0].name == 'ndcg@10'

def _fast_vs_pairs(learn, users=torch.arange(1, 60)):
    a = catalog_scores(learn, users)
    b = catalog_scores(learn, users, fast=False)
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    return a

def test_catalog_scores_every_model(ml_dls):
    torch.manual_seed(0)
    n_u,n_i = (len(ml_dls.classes[n]) for n in ('user','item'))
    for model in (DotProductBias(n_u, n_i, 8), DotProduct(n_u, n_i, 8, y_range=(0, 5.5))):
        for p in model.parameters(): torch.nn.init.normal_(p, 0, 0.3)
        _fast_vs_pairs(Learner(ml_dls, model, loss_func=MSELossFlat()))
    learn = collab_learner(ml_dls, n_factors=8, y_range=(0, 5.5))
    for p in learn.model.parameters(): torch.nn.init.normal_(p, 0, 0.3)
    s = _fast_vs_pairs(learn)
    frame = pd.DataFrame({'user': [ml_dls.classes['user'][5]]*4, 'item': ml_dls.known_items()[:4]})
    assert np.allclose(s[4, ml_dls.classes['item'].map_objs(frame.item)].numpy(), learn.predict_ratings(frame), atol=1e-4)
    nn_learn = collab_learner(ml_dls, use_nn=True, layers=[16], y_range=(0, 5.5))     # no fast path: pairs through forward
    s = catalog_scores(nn_learn, torch.arange(1, 4))
    assert s.shape == (3, n_i) and np.allclose(s[0, ml_dls.classes['item'].map_objs(frame.item)].numpy(),
                                               nn_learn.predict_ratings(frame.assign(user=ml_dls.classes['user'][1])), atol=1e-4)

@pytest.fixture(scope='module')
def ce_dls(ratings):
    from collab_ext.ce.data import CollabCEDataLoaders
    return CollabCEDataLoaders.from_df(ratings[['user','item','rating']], splitter=RandomRatingSplitter(0.2, 42), bs=4096, seed=42, unseen='keep')

@pytest.mark.parametrize('loss', ['ce', 'ordinal'])
def test_ce_and_ordinal_rank_by_expected_rating(ce_dls, loss):
    from collab_ext.ce.learner import collab_ce_learner
    torch.manual_seed(0)
    rm = RankingMetrics(10, ('ndcg','recall'))
    learn = collab_ce_learner(ce_dls, n_factors=8, loss=loss, metrics=rm)
    for p in learn.model.parameters(): torch.nn.init.normal_(p, 0, 0.3)
    users = torch.arange(1, 40)
    s = _fast_vs_pairs(learn, users)           # expected_items: the pairs through forward and the loss's activation
    assert torch.allclose(catalog_outputs(learn, users), catalog_outputs(learn, users, fast=False), atol=1e-4)   # score_items
    if loss == 'ce':          # an activation expected_items does not know: score_items + that activation, the same numbers
        assert torch.allclose(s, catalog_scores(learn, users, activation=torch.nn.Softmax(-1)), atol=1e-4)
    frame = pd.DataFrame({'user': [ce_dls.classes['user'][1]]*5, 'item': ce_dls.known_items()[:5]})
    assert np.allclose(s[0, ce_dls.classes['item'].map_objs(frame.item)].numpy(), learn.predict_ratings(frame), atol=1e-4)
    assert ((s[:, 1:] >= 1) & (s[:, 1:] <= 5)).all()          # expected ratings over the levels
    res = learn.validate()
    assert 0 <= res[-2] <= 1 and rm.report.counts['n_users'] == 941
    with learn.no_bar(): learn.fit(1, 1e-2)                             # the lean loop's epoch table has them too
    assert list(learn.recorder.metric_names)[-3:-1] == ['ndcg@10', 'recall@10']
    assert learn.recorder.values[-1][-2] == pytest.approx(rm.report['ndcg'])

def test_ranking_metrics_in_fit_table(ml_dls):
    torch.manual_seed(42)
    rm = RankingMetrics(10)
    learn = collab_learner(ml_dls, n_factors=50, y_range=(0, 5.5), metrics=[rmse, *rm])
    with learn.no_bar(): learn.fit_one_cycle(2, 3e-2, wd=1.0)
    names = list(learn.recorder.metric_names)
    assert names[4:8] == ['ndcg@10', 'precision@10', 'recall@10', 'map@10']
    vals = learn.recorder.values
    assert len(vals) == 2 and all(0 < v[3] < 1 for v in vals)      # train loss, valid loss, rmse, ndcg@10, ...
    res = learn.validate()
    assert res[2] == pytest.approx(vals[-1][3]) and res[2] == pytest.approx(rm.report['ndcg'])
    assert rm.report.counts['n_users'] == 941

def test_threshold_and_bad_input(ml_dls, split):
    seen,truth,_,_ = split
    liked,info = holdout_truth(ml_dls, threshold=4)
    assert liked.nnz == 20_000 - info['n_rows_below_threshold'] and info['n_rows_below_threshold'] > 5000
    with pytest.raises(CollabDataError, match='threshold=6 leaves no relevant row'): holdout_truth(ml_dls, threshold=6)
    n_u,n_i = seen.shape
    scores = torch.zeros(n_u, n_i)
    with pytest.raises(CollabDataError, match='k=0'): ranking_report(scores, truth, 0, seen=seen)
    with pytest.raises(CollabDataError, match='larger than the catalog'): ranking_report(scores, truth, n_i, seen=seen, catalog=np.arange(1, n_i))
    with pytest.raises(CollabDataError, match='no held-out item'): ranking_report(scores, sp.csr_matrix(truth.shape), 10)
    with pytest.raises(CollabDataError, match='NaN'): topk_items(torch.full((2, 5), math.nan), 2)
    with pytest.raises(CollabDataError, match='unknown metrics'): RankingMetrics(10, ('ndcg', 'auc'))
    with pytest.raises(CollabDataError, match='k=-1'): RankingMetrics(-1)
    with pytest.raises(CollabDataError, match='exactly one of scores and top'): ranking_report(truth=truth)
    with pytest.raises(CollabDataError, match='top has shape'): list_gains(torch.zeros(3, 2, dtype=torch.long), truth)
    with pytest.raises(CollabDataError, match='negative'): as_csr(-truth)

# ---------------------------------------------------------------- splitters
def ms_stratified(df, ratio, seed):
    "Microsoft Recommenders' python_stratified_split (current `_do_stratification`), rewritten with pandas from its algorithm"
    d = df[['user']].copy()
    np.random.seed(seed)
    d['random'] = np.random.rand(len(d))
    d = d.sort_values(['user', 'random'])
    g = d.groupby('user')
    d['count'] = g['user'].transform('count')
    d['rank'] = g.cumcount() + 1
    return np.sort(d.index[d['rank'] <= round(ratio*d['count'])].to_numpy())

def test_stratified_matches_microsoft_recommenders(ratings):
    df = ratings.reset_index(drop=True)
    for valid_pct,seed in ((0.25, 42), (0.2, 7)):
        tr,va = StratifiedSplitter(valid_pct, seed)(df)
        np.testing.assert_array_equal(tr, ms_stratified(df, 1 - valid_pct, seed))
        assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(df)
    tr,va = StratifiedSplitter(0.25, 42)(df)
    assert len(tr) == 74_992 and len(va) == 25_008       # each user keeps round(75%) of their rows (halves to even)
    assert df.user.iloc[tr].nunique() == df.user.iloc[va].nunique() == 943

def test_chrono_matches_microsoft_recommenders(ratings):
    df = ratings.reset_index(drop=True)
    d = df[['user','timestamp']].sort_values(['user','timestamp'], kind='stable')
    g = d.groupby('user')
    keep = g.cumcount() + 1 <= round(0.75*g['user'].transform('count'))
    np.testing.assert_array_equal(ChronoSplitter(0.25)(df)[0], np.sort(d.index[keep].to_numpy()))

def test_splitters_in_dataloaders_and_leave_one_out(ratings):
    df = ratings[['user','item','rating','timestamp']]
    dls = FastCollabDataLoaders.from_df(df, splitter=StratifiedSplitter(0.25, 42), bs=4096, seed=42, unseen='keep')
    assert len(dls.valid_ds) == len(StratifiedSplitter(0.25, 42)(df)[1])
    truth,info = holdout_truth(dls)
    assert (np.diff(truth.indptr)[1:] > 0).all()         # every user has held-out rows
    with warnings.catch_warnings():
        warnings.simplefilter('error', CollabWarning)    # ML-100k users all have >= 20 rows: nothing to warn about
        tr,va = LeaveOneOutSplitter()(df)
    assert len(va) == 943
    dls = FastCollabDataLoaders.from_df(df, splitter=LeaveOneOutSplitter(), bs=4096, seed=42, unseen='keep')
    assert len(dls.valid_ds) == 943

def test_splitters_count_users_with_too_few_rows(ratings):
    df = ratings[['user','item','rating','timestamp']].copy()
    lone = df[df.user.isin([1, 2, 3])].groupby('user').head(1)          # three users left with a single row
    df = pd.concat([df[~df.user.isin([1, 2, 3])], lone], ignore_index=True)
    for spl,msg in ((StratifiedSplitter(0.25), '3 of 943 users have too few rows to hold one out'),
                    (ChronoSplitter(0.25), '3 of 943 users have too few rows to hold one out'),
                    (StratifiedSplitter(0.75), '3 of 943 users have too few rows to keep one in training'),
                    (LeaveOneOutSplitter(), '3 of 943 users have a single row')):
        with pytest.warns(CollabWarning, match=msg): tr,va = spl(df)
        assert len(tr) + len(va) == len(df)
    with pytest.raises(CollabDataError, match='valid_pct=0'): StratifiedSplitter(0)(df)
    with pytest.raises(CollabDataError, match="timestamp"): ChronoSplitter(time_name='timestamp')(df[['user','item','rating']])

def test_fastai_collab_dataloaders(ratings):
    "fastai's own CollabDataLoaders (TabularPandas datasets): the same seen/truth and RankingMetrics"
    from fastai.collab import CollabDataLoaders
    df = ratings[['user','item','rating']]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        dls = CollabDataLoaders.from_df(df, bs=4096, valid_pct=0.2, seed=42)
    seen,(truth,info) = seen_matrix(dls),holdout_truth(dls)
    assert seen.nnz == len(dls.train_ds) and truth.nnz == len(dls.valid_ds)
    assert not truth[:, :seen.shape[1]].multiply(seen).nnz                      # held-out pairs are not training pairs
    torch.manual_seed(0)
    rm = RankingMetrics(5, ('ndcg','hit_rate'))
    learn = collab_learner(dls, n_factors=8, y_range=(0, 5.5), metrics=rm)
    res = learn.validate()
    ref = ranking_report(lambda r: catalog_scores(learn, r, fast=False), truth, 5, seen=seen, catalog=np.arange(1, seen.shape[1]),
                         users=np.arange(1, seen.shape[0]), n_items=seen.shape[1], metrics=('ndcg','hit_rate'))
    assert res[1] == pytest.approx(ref['ndcg'], abs=1e-6) and res[2] == pytest.approx(ref['hit_rate'])

def test_ranking_metrics_pickle_without_data(ml_dot_learn):
    "An exported learner carries its RankingMetrics' settings, not the cached truth, training matrix or learner"
    import pickle
    rm = RankingMetrics(5, ('ndcg',))
    ml_dot_learn.metrics = rm
    try:
        ml_dot_learn.validate()
        assert rm.run._truth is not None and rm.report is not None
        back = pickle.loads(pickle.dumps(rm))
        assert back.run._truth is None and back.run.learn is None and back.report is None
        assert back[0].name == 'ndcg@5' and back[0].run is back.run
    finally: ml_dot_learn.metrics = []
