"Feedback-loop simulation: metric definitions, data growth, retraining, determinism, bad input (small synthetic world)."
import warnings
import numpy as np, pandas as pd, pytest, torch
from fastai.collab import collab_learner
from collab_ext.core import CollabDataError, CollabWarning
from collab_ext.synth import synth_movielens, SynthWorld
from collab_ext.data.loaders import FastCollabDataLoaders
from collab_ext.data.split import TimeSplitter
from collab_ext.feedback import *
from collab_ext.metrics.beyond import *

def setup(seed=0, n_known=140, visit_rate=0.5):
    ml = synth_movielens(150, 120, 3000, seed=7)
    world = FeedbackWorld.from_movielens(ml, groups=[UserGroup('fans', ml.world.user_ids[:10], 5.)], visit_rate=visit_rate)
    r = ml.ratings[ml.ratings.user <= n_known][['user','item','rating','timestamp']]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', CollabWarning)
        dls = FastCollabDataLoaders.from_df(r, splitter=TimeSplitter(valid_pct=0.2), bs=256, seed=seed, unseen='keep')
    torch.manual_seed(seed)
    learn = collab_learner(dls, n_factors=8, y_range=(0.5, 5.5))
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 5e-3)
    return world, learn

# --- metric definitions on hand-made cases
def test_gini_coverage():
    assert gini([2, 2, 2, 2]) == 0
    assert gini([0, 0, 0, 5]) == pytest.approx(0.75)
    assert gini([1, 2, 3, 4]) == pytest.approx(0.25)
    assert coverage([0, 1, 0, 3]) == 0.5

def test_homogenization_jaccard():
    c = np.array([[1, 1, 0], [0, 1, 1], [0, 0, 0], [1, 1, 0]], bool)
    assert homogenization(c) == pytest.approx((1/3 + 1 + 1/3)/3)   # the empty user is left out
    assert homogenization(np.eye(4, dtype=bool)) == 0

def test_popularity_metrics():
    pop0 = np.array([9, 3, 1, 0, 0])
    head = head_items(pop0, 0.2)
    assert head.tolist() == [True, False, False, False, False]
    assert arp([[0, 1], [3, -1]], pop0) == pytest.approx((6 + 0)/2)
    assert aplt([[0, 1], [3, -1]], head) == pytest.approx((0.5 + 1)/2)
    assert list_utility([[1]], np.array([[1., 4.]])) == 4
    assert group_share([0, 0, 1, 3], [0]) == 0.5
    assert snips_mean([1., 0.], [1., 0.25]) == pytest.approx(0.2)

def test_policies_and_choice():
    sc = np.array([[5., 4, 3, 2, 1]]); seen = np.array([[0, 1, 0, 0, 0]], bool)
    assert GreedyPolicy()(sc, seen, 3, None)[0].tolist() == [[0, 2, 3]]
    items, prop = EpsilonGreedyPolicy(1.)(sc, seen, 2, np.random.default_rng(0))
    assert set(items[0]) == {3, 4} and np.allclose(prop, 1.)       # 2 slots, 2 non-top unseen items
    items, prop = RandomPolicy()(sc, seen, 2, np.random.default_rng(0))
    assert not seen[0, items[0]].any() and np.allclose(prop, 0.5)
    c = RankDiscountChoice(0.1, 3.5)
    assert np.allclose(c.prob(np.array([[4., 3.4, 5.]]), np.arange(3)[None]), [[1, 0, np.exp(-0.2)]])

# --- the loop
def test_data_grows_and_learner_retrains():
    world, learn = setup()
    n0 = len(learn.dls.train_ds)
    w0 = learn.model.i_weight.weight.detach().clone()
    df = run_feedback(learn, world, GreedyPolicy(), n_rounds=3, k=5, seed=1, lr=5e-3, quiet=True)
    log = learn.feedback_cb.interactions
    added = int(log[log['round'] < 3].accepted.sum())
    assert added > 0 and len(learn.dls.train_ds) == n0 + added
    assert df.n_train.tolist() == [n0 + int(x) for x in log.groupby('round').accepted.sum().cumsum().shift(fill_value=0)[:4]]
    assert (learn.model.i_weight.weight[:len(w0)] - w0).abs().max() > 1e-3
    # users 141-150 were unknown to the learner: vocab and embeddings grew, codes of known ids kept
    assert len(learn.dls.train_ds.classes['user']) == world.n_users + 1 == learn.model.u_weight.weight.shape[0]
    new = log[log.user > 140]
    assert len(new) > 0
    assert (log.propensity == 1).all() and log['rank'].between(0, 4).all()
    assert list(df['round']) == [0, 1, 2, 3]
    assert not (df[['arp','gini','coverage','homogenization','utility','rmse_fans']].isna().any().any())

def test_cold_retrain_and_logit_choice():
    world, learn = setup()
    w0 = {n: p.detach().clone() for n, p in learn.model.named_parameters()}
    # lr=1e-7: one epoch after the last restart leaves the weights where the restart put them
    df = run_feedback(learn, world, EpsilonGreedyPolicy(0.2), choice=LogitChoice(), n_rounds=2, k=5, warm=False, lr=1e-7, quiet=True)
    log = learn.feedback_cb.interactions
    assert (log.groupby(['round','user','page']).accepted.sum() <= 1).all()
    assert len(df) == 3
    # fastai's own EmbeddingDotBias was re-initialised: every weight redrawn from N(0, 0.01), none left as trained
    for n, p in learn.model.named_parameters():
        old, new = w0[n], p.detach()
        assert (new[:len(old)] - old).abs().mean() > 0.005 and abs(float(new.std()) - 0.01) < 0.002, (n, float(new.std()))

def test_ideal_has_no_regret_and_random_spreads_exposure():
    world, learn = setup()
    res = run_arms(lambda s: setup(s)[1], world, dict(greedy=GreedyPolicy(), random=RandomPolicy(), ideal=IdealPolicy()),
                   seeds=(0,), n_rounds=2, k=5, lr=5e-3, progress=False)
    ideal = res[res.arm=='ideal']
    assert np.allclose(ideal.regret, 0)
    for (s, rd), g in res[res.arm=='greedy'].groupby(['seed', 'round']):     # greedy's homogenization over ideal's, same seed and round
        h_ideal = res[(res.arm=='ideal') & (res.seed==s) & (res['round']==rd)].homogenization.item()
        assert g.homogenization_rel.item() == pytest.approx(g.homogenization.item() / h_ideal)
    last = res[res['round']==2].set_index('arm')
    assert last.loc['random', 'gini'] < last.loc['greedy', 'gini']
    assert last.loc['random', 'coverage'] >= last.loc['greedy', 'coverage']
    curves = arm_curves(res, ['gini', 'utility'])
    assert set(curves) == {'greedy', 'random', 'ideal'} and len(curves['greedy']['gini']) == 3

def test_same_seed_same_metrics():
    def run(seed):
        world, learn = setup()
        return run_feedback(learn, world, EpsilonGreedyPolicy(0.1), n_rounds=2, k=5, seed=seed, lr=5e-3, quiet=True)
    dfs = [run(3) for _ in range(2)]
    pd.testing.assert_frame_equal(dfs[0], dfs[1])
    other = run(4)
    assert not other.equals(dfs[0])

# --- bad input
def test_bad_input():
    world, learn = setup()
    with pytest.raises(CollabDataError, match='k=121'): FeedbackLoopCallback(world, k=121)
    with pytest.raises(CollabDataError, match='no users'): FeedbackWorld(world.truth, groups=[UserGroup('empty', [])])
    with pytest.raises(CollabDataError, match='not in the world'): FeedbackWorld(world.truth, groups=[UserGroup('x', [9999])])
    with pytest.raises(CollabDataError, match='zero activity'): FeedbackWorld(world.truth, activity=np.zeros(world.n_users))
    with pytest.raises(CollabDataError, match='never saw'): run_feedback(learn, world, n_rounds=1, new_ids='error', quiet=True)
    t = world.truth
    small = FeedbackWorld(SynthWorld(t.user_factors[:100], t.item_factors, t.user_bias[:100], t.item_bias))
    with pytest.raises(CollabDataError, match='the world does not'): run_feedback(learn, small, n_rounds=1, quiet=True)

def test_zero_activity_users_never_shown():
    world, learn = setup()
    act = world.activity.copy(); act[20:40] = 0
    w = FeedbackWorld(world.truth, act, visit_rate=1.)
    run_feedback(learn, w, RandomPolicy(), n_rounds=2, k=5, quiet=True)
    log = learn.feedback_cb.interactions
    assert len(log) > 0 and not log.user.isin(w.user_ids[20:40]).any()

# --- real data
def test_oracle_and_fans_on_ml100k(ml100k):
    fans = genre_fans(ml100k.ratings, ml100k.items, ['Animation', "Children's"], frac=0.05)
    assert len(fans) == 47
    r = ml100k.ratings
    share = r.item.isin(ml100k.items.item[(ml100k.items.Animation + ml100k.items["Children's"]) > 0])
    by_user = share.groupby(r.user).mean()
    assert by_user[fans].min() >= by_user.drop(fans).max()
    o = fit_oracle(r, n_factors=8, epochs=2, seed=0)
    assert (len(o.user_ids), len(o.item_ids)) == (943, 1682)
    pred = o.expected(pd.Index(o.user_ids).get_indexer(r.user), pd.Index(o.item_ids).get_indexer(r.item))
    assert np.corrcoef(pred, r.rating)[0, 1] > 0.5

def test_skip_shown_and_ips_weights():
    world, learn = setup()
    run_feedback(learn, world, EpsilonGreedyPolicy(0.3), n_rounds=3, k=5, skip_shown=True, ips_clip=4., quiet=True)
    cb = learn.feedback_cb
    log = cb.interactions
    assert not log.duplicated(['user', 'item']).any()          # nothing shown twice to the same user
    acc = log[log.accepted & (log['round'] < 3)]
    n0 = len(cb.weights) - len(acc)
    assert len(cb.weights) == len(learn.dls.train_ds)
    assert np.allclose(cb.weights[n0:].numpy(), np.minimum(1/acc.propensity.to_numpy(), 4.))
    assert (cb.weights[:n0] == 1).all() and cb.weights.max() == 4.

# --- review fixes (issue 4 review)
def _shown_freq(policy, n_items=120, n_seen=20, n=30, n_shown=10, reps=4000, seed=0):
    "Empirical P(shown) per item over `reps` draws for one user, and the logged propensity of each shown item"
    sc = np.linspace(1, 0, n_items)[None].repeat(reps, 0)
    seen = np.zeros((reps, n_items), bool); seen[:, :n_seen] = True
    items, prop = policy(sc, seen, n, np.random.default_rng(seed), n_shown=n_shown)
    it, pr = items[:, :n_shown], prop[:, :n_shown]
    cnt = np.bincount(it[it >= 0], minlength=n_items)
    logged = np.bincount(it[it >= 0], weights=pr[it >= 0], minlength=n_items)/np.maximum(cnt, 1)
    return cnt/reps, logged

@pytest.mark.parametrize('policy', [RandomPolicy(), EpsilonGreedyPolicy(0.1), EpsilonGreedyPolicy(0.5), GreedyPolicy()])
def test_logged_propensity_is_empirical_shown_frequency(policy):
    # k=10, max_visits=3: a list of 30 is filled, a one-visit user sees 10 of their 100 unseen items
    freq, logged = _shown_freq(policy)
    on = freq > 0
    assert np.allclose(logged[on], freq[on], atol=0.02)
    if isinstance(policy, RandomPolicy): assert np.allclose(logged[20:], 0.1) and abs(freq[20:].mean() - 0.1) < 0.005

def test_loop_logs_propensity_of_shown_slots():
    "Random policy at round 0: sum of 1/propensity over a user's shown items = their unseen items (Horvitz-Thompson count)"
    world, learn = setup()
    ds0 = learn.dls.train_ds
    n_seen = pd.Series(ds0.classes['user'].items)[ds0.x[:, 0].numpy()].value_counts()
    run_feedback(learn, world, RandomPolicy(), n_rounds=1, k=5, quiet=True)
    r0 = learn.feedback_cb.interactions.query('round == 0')
    ht = r0.groupby('user').propensity.agg(lambda p: (1/p).sum())
    n_unseen = world.n_items - n_seen.reindex(ht.index, fill_value=0)
    assert np.allclose(ht.to_numpy(), n_unseen.to_numpy())
    assert world.max_visits > 1 and (r0.groupby('user').size() <= 5*world.max_visits).all()

def test_stock_collab_dataloaders_refused():
    from fastai.collab import CollabDataLoaders
    world, _ = setup()
    r = synth_movielens(150, 120, 3000, seed=7).ratings[['user', 'item', 'rating']]
    learn = collab_learner(CollabDataLoaders.from_df(r, bs=256), n_factors=4)
    with pytest.raises(CollabDataError, match=r'FastCollabDataLoaders\.from_df'): run_feedback(learn, world, n_rounds=1, quiet=True)

@pytest.mark.parametrize('model_cls', ['DotProductBias', 'DotProduct'])
def test_collab_ext_models_grow_and_reinit(model_cls):
    from fastai.learner import Learner
    from fastai.losses import MSELossFlat
    import collab_ext.models as M
    from collab_ext.models import model_factors
    from collab_ext.core import torch_gen
    world, l = setup()
    learn = Learner(l.dls, getattr(M, model_cls).from_dls(l.dls, n_factors=8, y_range=(0.5, 5.5)), loss_func=MSELossFlat())
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-2)
    n0 = len(learn.dls.train_ds)
    df = run_feedback(learn, world, GreedyPolicy(), n_rounds=2, k=5, lr=1e-2, warm=False, quiet=True)
    f = {n: None if t is None else t.clone() for n, t in model_factors(learn.model).items()}
    assert f['user_factors'].shape[0] == world.n_users + 1                  # new users grew rows
    if model_cls == 'DotProductBias': assert f['user_bias'].shape == (world.n_users + 1,)
    assert len(learn.dls.train_ds) > n0 and df.n_train.is_monotonic_increasing
    cb = learn.feedback_cb; cb.learn, cb.gen = learn, torch_gen(0)
    cb._reinit()
    g = model_factors(learn.model)
    for n in ('user_factors', 'item_factors', 'user_bias', 'item_bias'):
        if f[n] is None: continue
        assert not torch.allclose(g[n], f[n]) and abs(float(g[n].std()) - 0.01) < 0.002

def test_unresettable_model_refused_before_training():
    from fastai.learner import Learner
    from fastai.losses import MSELossFlat
    from collab_ext.models import DotProductBias
    class WithScale(DotProductBias):
        def __init__(self, *a, **k): super().__init__(*a, **k); self.scale = torch.nn.Parameter(torch.ones(1))
    world, l = setup()
    learn = Learner(l.dls, WithScale.from_dls(l.dls, n_factors=4), loss_func=MSELossFlat())
    with pytest.raises(CollabDataError, match='scale'): run_feedback(learn, world, n_rounds=1, warm=False, quiet=True)
    assert not hasattr(learn, 'feedback_cb')

def test_measuring_keeps_training_mode():
    world, learn = setup()
    run_feedback(learn, world, n_rounds=1, k=5, quiet=True)
    cb = learn.feedback_cb; cb.learn = learn
    learn.model.train(); cb._measure_data({})
    assert learn.model.training
    learn.model.eval(); cb._measure_data({})
    assert not learn.model.training

def test_true_matrix_is_the_world_everywhere():
    world, _ = setup()
    t = world.true_matrix()
    lo, hi = world.lo_hi
    slow = np.stack([np.clip(world.truth.expected(np.full(world.n_items, u), np.arange(world.n_items)), lo, hi) for u in range(world.n_users)])
    assert t.shape == (150, 120) and np.allclose(t, slow, atol=1e-4)
