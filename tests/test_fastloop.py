"`collab_ext.fastloop`: the lean loop trains bit for bit like fastai's own on the real ML-100k, for every learner kind."
import os, subprocess, sys, warnings
from contextlib import nullcontext
import numpy as np, pytest, torch
from fastai.collab import CollabDataLoaders, collab_learner
from fastai.callback.core import Callback
from fastai.losses import MSELossFlat, CrossEntropyLossFlat
from fastai.torch_core import TensorBase, TensorCategory
import collab_ext.fastloop as fastloop
from collab_ext.fastloop import lean_loop, stock_loop, lean_patches
from collab_ext.core import CollabWarning
from collab_ext.data.loaders import FastCollabDataLoaders
from collab_ext.ce.all import CollabCEDataLoaders, collab_ce_learner, ce_metrics

@pytest.fixture(scope='module')
def small(ratings):
    "The ratings of ML-100k's first 250 users (about 26k rows)"
    return ratings.loc[ratings.user <= 250, ['user','item','rating','timestamp','title']].reset_index(drop=True)

def fit_both(make_learner, fit=lambda l: l.fit_one_cycle(2, 1e-2, wd=0.1)):
    "The same learner trained from the same seed with fastai's loop and with the lean loop"
    res = []
    for ctx in (stock_loop, nullcontext):
        with ctx():
            assert all(lean_patches().values()) == (ctx is nullcontext)
            torch.manual_seed(0); np.random.seed(0)
            learn = make_learner()
            with learn.no_bar(), learn.no_logging(): fit(learn)
            res.append(learn)
    return res

def assert_same_training(a, b):
    pa,pb = list(a.model.parameters()), list(b.model.parameters())
    assert len(pa) == len(pb) and all(torch.equal(x, y) for x,y in zip(pa, pb))
    for k in ('losses', 'values', 'lrs'): assert getattr(a.recorder, k) == getattr(b.recorder, k), k
    assert a.recorder.__dict__.get('hps') == b.recorder.__dict__.get('hps')
    sa,sb = a.opt.state_dict()['state'], b.opt.state_dict()['state']
    assert len(sa) == len(sb) and all(x.keys() == y.keys() for x,y in zip(sa, sb))
    for x,y in zip(sa, sb):
        for k in x: assert torch.equal(x[k], y[k]) if isinstance(x[k], torch.Tensor) else x[k] == y[k], k

def test_every_patch_installed_by_import():
    assert lean_patches() and all(lean_patches().values()), lean_patches()

def test_fast_loaders_train_identically(small):
    a,b = fit_both(lambda: collab_learner(FastCollabDataLoaders.from_df(small, bs=256, seed=0, unseen='keep'),
                                          n_factors=16, y_range=(0, 5.5)))
    assert_same_training(a, b)
    assert a.recorder.values[-1][0] < 1.0     # it learned: validation MSE well under the ratings' variance

def test_stock_fastai_loaders_train_identically(small):
    "Stock `CollabDataLoaders` (TabWeightedDL draws with numpy's global RNG, reseeded per run) under both loops"
    mk = lambda: collab_learner(CollabDataLoaders.from_df(small[['user','item','rating']], bs=256, seed=0),
                                n_factors=16, y_range=(0, 5.5))
    assert_same_training(*fit_both(mk))

def test_ce_learner_with_metrics_identical(small):
    mk = lambda: collab_ce_learner(CollabCEDataLoaders.from_df(small, bs=256, seed=0, unseen='keep'), n_factors=8,
                                   metrics=ce_metrics())
    a,b = fit_both(mk, lambda l: l.fit_one_cycle(1, 3e-2, wd=0.1))
    assert_same_training(a, b)
    assert len(a.recorder.values[-1]) == 2 + len(ce_metrics())     # train loss, valid loss, every metric compared

def test_tabular_learner_identical(ml100k):
    "Metadata model: BatchNorm, dropout, separate no-wd parameter groups, `fit` without a schedule too"
    from collab_ext.tabular import TabularCollabDataLoaders, tabular_collab_learner, movielens_tables
    users,items = movielens_tables(ml100k)
    r = ml100k.ratings.loc[ml100k.ratings.user <= 120, ['user','item','rating','timestamp']]
    def mk():
        "Fresh loaders each time: a loader's shuffling generator advances with every epoch it serves"
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', CollabWarning)
            dls = TabularCollabDataLoaders.from_dfs(r, users, items, date_col='timestamp', cat_names=['gender','occupation'],
                                                    cont_names=['age','year'], bs=256, seed=0, unseen='keep')
        return tabular_collab_learner(dls, n_factors=8, layers=(16,))
    assert_same_training(*fit_both(mk))
    assert_same_training(*fit_both(mk, lambda l: l.fit(1, 1e-3, wd=0.01)))

def test_get_preds_with_loss_identical(small):
    dls = FastCollabDataLoaders.from_df(small, bs=256, seed=0, unseen='keep')
    torch.manual_seed(0); learn = collab_learner(dls, n_factors=8, y_range=(0, 5.5))
    with learn.no_bar():
        with stock_loop(): p0,t0,l0 = learn.get_preds(with_loss=True)
        p1,t1,l1 = learn.get_preds(with_loss=True)
    assert torch.equal(p0, p1) and torch.equal(t0, t1) and torch.equal(l0, l1) and len(l1) == len(dls.valid_ds)
    assert isinstance(l0, TensorBase) and type(l1) is torch.Tensor     # the one documented difference: the loss's type

def test_loss_types_and_values():
    "Plain tensors stay plain; fastai's typed tensors still become `TensorBase`; the values never change"
    p,t = torch.randn(10, 1), torch.randn(10, 1)
    lean = MSELossFlat()(p, t)
    with stock_loop(): stock = MSELossFlat()(p, t)
    assert type(lean) is torch.Tensor and isinstance(stock, TensorBase) and torch.equal(lean, stock.as_subclass(torch.Tensor))
    logits,cls = torch.randn(6, 5), TensorCategory(torch.tensor([0, 1, 2, 3, 4, 0]))
    assert isinstance(CrossEntropyLossFlat()(logits, cls), TensorBase)
    with stock_loop(): ref = CrossEntropyLossFlat()(logits, cls)
    assert torch.equal(CrossEntropyLossFlat()(logits, cls), ref)

def test_event_added_to_class_after_first_fit_still_runs(small):
    "No stale cache: an event patched onto a callback class after a fit is called in the next fit"
    class Counter(Callback): pass
    dls = FastCollabDataLoaders.from_df(small, bs=1024, seed=0, unseen='keep')
    learn = collab_learner(dls, n_factors=4, y_range=(0, 5.5), cbs=Counter())
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    Counter.after_batch = lambda self: setattr(self, 'n', getattr(self, 'n', 0) + 1)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    assert learn.counter.n == len(dls.train) + len(dls.valid)

def test_lean_loop_off_and_back_on():
    originals = {k: v for k,v in fastloop._STOCK.items()}
    try:
        assert not any(lean_loop(False).values())
        assert all(getattr(*k) is v for k,v in originals.items())
    finally: lean_loop(True)
    assert all(lean_patches().values())
    with stock_loop():
        with stock_loop(): pass
        assert not any(lean_patches().values())     # nested blocks restore what the outer one set
    assert all(lean_patches().values())

def test_changed_fastai_function_is_left_alone(monkeypatch):
    "A fastai whose function differs from the mirrored source keeps its own version, with a warning naming it"
    key = next(k for k in fastloop._PATCHES if k[1] == 'step')
    monkeypatch.setitem(fastloop._PATCHES, key, (fastloop._PATCHES[key][0], '00000000'))
    try:
        with stock_loop():
            with pytest.warns(CollabWarning, match=r'Optimizer\.step differ'): res = lean_loop(True)
            assert res['Optimizer.step'] is False and sum(res.values()) == len(res) - 1
    finally:
        monkeypatch.undo(); lean_loop(True)
    assert all(lean_patches().values())

def test_env_var_keeps_fastai_loop():
    code = "import collab_ext; from collab_ext.fastloop import lean_patches; print(sorted(set(lean_patches().values())))"
    out = lambda env: subprocess.run([sys.executable, '-c', code], env={**os.environ, **env}, capture_output=True,
                                     text=True, check=True).stdout.strip()
    assert out({'COLLAB_EXT_LEAN_LOOP': '0'}) == '[False]'
    assert out({'COLLAB_EXT_LEAN_LOOP': '1'}) == '[True]'

@pytest.mark.parametrize('how', ['flat_cos', 'sgdr', 'lr_find', 'callbacks'])
def test_fastai_schedules_and_callbacks_identical(small, how, tmp_path):
    "fastai's other schedules, the LR finder, and tracker callbacks behave the same under both loops"
    from fastai.callback.tracker import EarlyStoppingCallback, SaveModelCallback
    from fastai.metrics import rmse
    mk = lambda: collab_learner(FastCollabDataLoaders.from_df(small, bs=512, seed=0, unseen='keep'), n_factors=8,
                                y_range=(0, 5.5), metrics=rmse, path=tmp_path)
    fits = dict(flat_cos=lambda l: l.fit_flat_cos(2, 1e-2), sgdr=lambda l: l.fit_sgdr(2, 1, 1e-2),
                lr_find=lambda l: setattr(l, 'sugg', l.lr_find(num_it=40, show_plot=False)),
                callbacks=lambda l: l.fit(3, 1e-2, cbs=[SaveModelCallback(monitor='valid_loss', fname='best'),
                                                          EarlyStoppingCallback(monitor='valid_loss', patience=1)]))
    a,b = fit_both(mk, fits[how])
    if how == 'lr_find':
        assert a.sugg == b.sugg and a.recorder.losses == b.recorder.losses and a.recorder.lrs == b.recorder.lrs
    else: assert_same_training(a, b)


@pytest.mark.parametrize('how', ['one_cycle_pct0', 'one_cycle_pct1', 'flat_cos_pct0'])
def test_integer_phase_boundaries_identical(small, how):
    "pct_start=0 or 1 gives integer `pcts` to combine_scheds: the schedule must still move as fastai's does"
    mk = lambda: collab_learner(FastCollabDataLoaders.from_df(small, bs=1024, seed=0, unseen='keep'), n_factors=8, y_range=(0, 5.5))
    fits = dict(one_cycle_pct0=lambda l: l.fit_one_cycle(1, 1e-2, pct_start=0), one_cycle_pct1=lambda l: l.fit_one_cycle(1, 1e-2, pct_start=1),
                flat_cos_pct0=lambda l: l.fit_flat_cos(1, 1e-2, pct_start=0))
    a,b = fit_both(mk, fits[how])
    assert_same_training(a, b)
    assert len(set(b.recorder.lrs)) > 5                  # the learning rate really was scheduled

def test_combine_scheds_any_position_type():
    "Integer pcts, float64 and float32 tensor positions, floats: the same values as fastai's own"
    import fastai.callback.schedule as S
    stock = fastloop._STOCK[S, 'combine_scheds']
    for pcts in ([0, 1], [1, 0], [0.25, 0.75], [0.1, 0.2, 0.7]):
        scheds = [S.SchedCos(0.1*i + 0.05, 0.4 + i) for i in range(len(pcts))]
        f, g = stock(pcts, scheds), fastloop._lean_combine_scheds(pcts, scheds)
        pos = [0.0, 1e-9, 0.1, 1/3, 0.25, 0.5, 0.7, 0.75, 0.999999, 1.0]
        for p in pos + [torch.tensor(p, dtype=torch.float64) for p in pos] + [torch.tensor(p) for p in pos]:
            x, y = f(p), g(p)
            assert x == y or (np.isnan(x) and np.isnan(y)), (pcts, p)
    with pytest.raises(RuntimeError): g(-0.5)          # fastai's own error for a position before the start

def test_delegated_events_called_as_fastai_does(small):
    "A callback delegating to another object, and an attribute found through Learner -> model, are called as by fastai"
    class Inner:
        n = 0
        def after_batch(self): Inner.n += 1
    class Proxy(Callback):
        _default = 'inner'
        def __init__(self): self.inner = Inner()
    class Plain(Callback): pass
    def fit(l):
        Inner.n, hits = 0, [0]
        l.model.after_batch = lambda: hits.__setitem__(0, hits[0] + 1)   # fastai calls this once per delegating callback
        l.fit(1, 1e-3)
        l.counts = (Inner.n, hits[0])
    mk = lambda: collab_learner(FastCollabDataLoaders.from_df(small, bs=1024, seed=0, unseen='keep'), n_factors=4,
                                y_range=(0, 5.5), cbs=[Proxy(), Plain()])
    a,b = fit_both(mk, fit)
    n = len(a.dls.train) + len(a.dls.valid)
    assert a.counts == b.counts and a.counts[0] == n and a.counts[1] > n
    assert_same_training(a, b)

def test_event_lists_and_optimizer_subclasses(small):
    "`learn([...])` dispatches every event; an Optimizer subclass's own `all_params` is honoured"
    from fastai.optimizer import Optimizer, weight_decay, average_grad, average_sqr_grad, step_stat, adam_step
    class SkipFirstGroupParam(Optimizer):
        def all_params(self, n=slice(None), with_grad=False):
            res = super().all_params(n, with_grad)
            return res[1:] if with_grad else res
    opt = lambda params, lr, **kw: SkipFirstGroupParam(params, [weight_decay, average_grad, average_sqr_grad, step_stat, adam_step],
                                                       lr=lr, mom=0.9, sqr_mom=0.99, eps=1e-5, wd=0.01)
    mk = lambda: collab_learner(FastCollabDataLoaders.from_df(small, bs=1024, seed=0, unseen='keep'), n_factors=4,
                                y_range=(0, 5.5), opt_func=opt)
    a,b = fit_both(mk, lambda l: l.fit(1, 1e-2))
    assert_same_training(a, b)
    first = next(b.model.parameters())
    torch.manual_seed(0)
    assert torch.equal(first, next(mk().model.parameters()))   # the skipped parameter was never updated
    seen = []
    class Log(Callback):
        def before_fit(self): seen.append('before_fit')
        def after_fit(self): seen.append('after_fit')
    b.add_cb(Log()); b(['before_fit', 'after_fit'])
    assert seen == ['before_fit', 'after_fit']
