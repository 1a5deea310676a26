"""`collab_ext.fastloop`: importing collab_ext changes nothing in fastai, and the opt-in lean loop (`LeanLearner`,
`lean_adam`, plain losses) trains bit for bit like fastai's own on the real ML-100k, for every learner kind."""
import os, subprocess, sys, threading, warnings
from types import SimpleNamespace
import numpy as np, pytest, torch
from fastai.collab import CollabDataLoaders, collab_learner
from fastai.learner import Learner
from fastai.callback.core import Callback
from fastai.losses import MSELossFlat, CrossEntropyLossFlat
from fastai.optimizer import Optimizer, Adam
from fastai.torch_core import TensorBase, TensorCategory
import collab_ext
import collab_ext.fastloop as fastloop
from collab_ext.fastloop import (LeanLearner, LeanOptimizer, fast_collab_learner, lean_adam, PlainMSELossFlat,
                                 PlainCrossEntropyLossFlat, lean_loop, stock_loop, lean_active, install_lean_loop, lean_patches)
from collab_ext.core import CollabWarning
from collab_ext.data.loaders import FastCollabDataLoaders
from collab_ext.ce.all import CollabCEDataLoaders, collab_ce_learner, ce_metrics

# the seven fastai attributes collab_ext replaced at import until issue 12, and the ones `install_lean_loop` replaces
FASTAI_ATTRS = [('fastai.learner', 'Learner', '__call__'), ('fastai.learner', 'Learner', '_call_one'),
                ('fastai.callback.core', 'Callback', '__call__'), ('fastai.losses', 'BaseLoss', '_contiguous'),
                ('fastai.optimizer', 'Optimizer', 'step'), ('fastai.optimizer', 'Optimizer', 'zero_grad'),
                ('fastai.callback.schedule', None, 'combine_scheds'), ('fastai.callback.schedule', 'Learner', 'fit_one_cycle'),
                ('fastai.callback.schedule', 'Learner', 'fit_flat_cos'), ('fastai.callback.schedule', None, 'combined_cos')]

def _run(code, **env):
    res = subprocess.run([sys.executable, '-c', code], env={**os.environ, **env}, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout

@pytest.fixture(scope='module')
def small(ratings):
    "The ratings of ML-100k's first 250 users (about 26k rows)"
    return ratings.loc[ratings.user <= 250, ['user','item','rating','timestamp','title']].reset_index(drop=True)

def train(make_learner, fit=lambda l: l.fit_one_cycle(2, 1e-2, wd=0.1)):
    torch.manual_seed(0); np.random.seed(0)
    learn = make_learner()
    with learn.no_bar(), learn.no_logging(): fit(learn)
    return learn

def fit_both(make_lean, fit=lambda l: l.fit_one_cycle(2, 1e-2, wd=0.1), make_stock=None):
    "The same recipe trained from the same seed by fastai (`make_stock`, or `make_lean` within `stock_loop`) and lean"
    if make_stock is None:
        with stock_loop(): stock = train(make_lean, fit)
    else: stock = train(make_stock, fit)
    return stock, train(make_lean, fit)

def assert_same_training(a, b):
    pa,pb = list(a.model.parameters()), list(b.model.parameters())
    assert len(pa) == len(pb) and all(torch.equal(x, y) for x,y in zip(pa, pb))
    for k in ('losses', 'values', 'lrs'): assert getattr(a.recorder, k) == getattr(b.recorder, k), k
    assert a.recorder.__dict__.get('hps') == b.recorder.__dict__.get('hps')
    assert len(a.opt.state) == len(b.opt.state)
    sa,sb = a.opt.state_dict()['state'], b.opt.state_dict()['state']
    assert len(sa) == len(sb) and all(x.keys() == y.keys() for x,y in zip(sa, sb))
    for x,y in zip(sa, sb):
        for k in x: assert torch.equal(x[k], y[k]) if isinstance(x[k], torch.Tensor) else x[k] == y[k], k

# --- importing collab_ext changes nothing in fastai (issue 12) ---

def test_import_changes_nothing_in_fastai():
    "The same objects before and after importing collab_ext (and all of it), in a fresh process"
    code = f"""
import importlib, pkgutil, warnings, sys
attrs = {FASTAI_ATTRS!r}
def grab(): return [getattr(importlib.import_module(m) if c is None else getattr(importlib.import_module(m), c), a) for m,c,a in attrs]
def names(o): return {{k for k in vars(o)}}
import fastai.learner, fastai.callback.core, fastai.losses, fastai.optimizer, fastai.callback.schedule
from fastai.learner import Learner; from fastai.callback.core import Callback; from fastai.losses import BaseLoss
from fastai.optimizer import Optimizer
before, dicts = grab(), [names(c) for c in (Callback, BaseLoss, Optimizer)]
import collab_ext, collab_ext.all, collab_ext.fastloop
with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    for m in pkgutil.walk_packages(collab_ext.__path__, 'collab_ext.'):
        try: importlib.import_module(m.name)
        except Exception as e: print('not importable:', m.name, repr(e)[:80], file=sys.stderr)   # another module's problem, tested there
after = grab()
print(sum(x is y for x,y in zip(before, after)), len(before), dicts == [names(c) for c in (Callback, BaseLoss, Optimizer)])
"""
    assert _run(code).split() == [str(len(FASTAI_ATTRS)), str(len(FASTAI_ATTRS)), 'True']

def test_nothing_installed_here():
    assert lean_patches() and not any(lean_patches().values())

# --- the five behaviours issue 12 found changed by the old import-time patches; each is fastai's again ---

def test_callback_with_non_learner_learn_returns_none():
    "1: a callback whose `learn` is a SimpleNamespace returns None for events it lacks, as in fastai"
    class CB(Callback): pass
    cb = CB(); cb.learn = SimpleNamespace()
    assert cb('after_batch') is None and cb('before_fit') is None

def _prop_learner(base):
    class PropLearner(base):
        "A learner keeping its model behind a property"
        @property
        def model(self): return self._m
        @model.setter
        def model(self, m): self._m = m
    return PropLearner

@pytest.mark.parametrize('base', [Learner, LeanLearner])
def test_model_behind_property_gets_events(small, base):
    "2: a Learner subclass keeping `model` behind a property still has the model's event-named methods called"
    dls = FastCollabDataLoaders.from_df(small, bs=2048, seed=0, unseen='keep')
    def run():
        hits = []
        learn = _prop_learner(base)(dls, collab_learner(dls, n_factors=4, y_range=(0, 5.5)).model, loss_func=MSELossFlat())
        learn.model.after_batch = lambda: hits.append(1)     # fastai finds it through every callback lacking after_batch
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
        return len(hits)
    n = len(dls.train) + len(dls.valid)
    with stock_loop(): expected = run()
    assert expected >= n and run() == expected

def test_fastai_losses_keep_tensorbase():
    "3: fastai's BaseLoss on plain tensors returns TensorBase, as in fastai; the plain losses give the same values as Tensor"
    p,t = torch.randn(10, 1), torch.randn(10, 1)
    logits,cls = torch.randn(4, 3), torch.randint(0, 3, (4,))
    assert isinstance(CrossEntropyLossFlat()(logits, cls), TensorBase) and isinstance(MSELossFlat()(p, t), TensorBase)
    a,b = PlainMSELossFlat()(p, t), PlainCrossEntropyLossFlat()(logits, cls)
    assert type(a) is torch.Tensor and type(b) is torch.Tensor
    assert torch.equal(a, MSELossFlat()(p, t).as_subclass(torch.Tensor))
    assert torch.equal(b, CrossEntropyLossFlat()(logits, cls).as_subclass(torch.Tensor))
    assert isinstance(PlainCrossEntropyLossFlat()(logits, TensorCategory(cls)), TensorBase)   # typed tensors stay fastai's
    with stock_loop(): assert isinstance(PlainMSELossFlat()(p, t), TensorBase)

@pytest.mark.parametrize('opt_func', [Adam, lean_adam])
def test_optimizer_state_entries_for_gradless_params(opt_func):
    "4: step and zero_grad create `opt.state` entries for parameters without gradients, as fastai's do"
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(3)) for _ in range(3)]
    opt = opt_func(ps, lr=0.1)
    assert type(opt) is (Optimizer if opt_func is Adam else LeanOptimizer)
    ps[0].grad = torch.ones(3)
    opt.zero_grad(); assert set(opt.state) == set(ps)
    ps[0].grad = torch.ones(3)
    opt.step()
    assert set(opt.state) == set(ps) and opt.state[ps[1]] == {} and opt.state[ps[2]] == {}
    assert len(opt.state_dict()['state']) == 3

def test_stock_loop_in_overlapping_threads():
    "5: `stock_loop` blocks in two threads, overlapping and leaving out of order, switch only their own thread"
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}
    def a():
        with stock_loop():
            seen['a_in'] = lean_active(); a_in.set(); b_in.wait(5)
        seen['a_after'] = lean_active(); a_out.set()
    def b():
        a_in.wait(5)
        with stock_loop():
            b_in.set(); a_out.wait(5); seen['b_in'] = lean_active()
        seen['b_after'] = lean_active()
    ts = [threading.Thread(target=f) for f in (a, b)]
    for t in ts: t.start()
    a_in.wait(5); seen['main_during'] = lean_active()
    for t in ts: t.join()
    assert seen == dict(a_in=False, b_in=False, a_after=True, b_after=True, main_during=True)
    assert lean_active() and not any(lean_patches().values())

# --- the lean loop trains as fastai's does ---

def test_fast_collab_learner_trains_as_fastai_collab_learner(small):
    "fastai's own collab_learner (Learner, MSELossFlat, Adam) against fast_collab_learner, no switch involved"
    mk = lambda f: lambda: f(FastCollabDataLoaders.from_df(small, bs=256, seed=0, unseen='keep'), n_factors=16, y_range=(0, 5.5))
    a,b = fit_both(mk(fast_collab_learner), make_stock=mk(collab_learner))
    assert type(a) is Learner and type(b) is LeanLearner and type(b.opt) is LeanOptimizer
    assert_same_training(a, b)
    assert a.recorder.values[-1][1] < 0.8*small.rating.var()     # it learned: validation MSE (values: train, valid loss) well under the variance

def test_stock_fastai_loaders_train_identically(small):
    "Stock `CollabDataLoaders` (TabWeightedDL draws with numpy's global RNG, reseeded per run)"
    mk = lambda f: lambda: f(CollabDataLoaders.from_df(small[['user','item','rating']], bs=256, seed=0), n_factors=16, y_range=(0, 5.5))
    assert_same_training(*fit_both(mk(fast_collab_learner), make_stock=mk(collab_learner)))

def test_ce_learner_with_metrics_identical(small):
    mk = lambda: collab_ce_learner(CollabCEDataLoaders.from_df(small, bs=256, seed=0, unseen='keep'), n_factors=8,
                                   metrics=ce_metrics())
    a,b = fit_both(mk, lambda l: l.fit_one_cycle(1, 3e-2, wd=0.1))
    assert type(b) is LeanLearner and isinstance(b.loss_func, PlainCrossEntropyLossFlat)
    assert_same_training(a, b)
    assert len(a.recorder.values[-1]) == 2 + len(ce_metrics())     # train loss, valid loss, every metric compared

def test_tabular_learner_identical(ml100k):
    "Metadata model: BatchNorm, dropout, separate no-wd parameter groups, `fit` without a schedule too"
    from collab_ext.tabular.all import TabularCollabDataLoaders, tabular_collab_learner, movielens_tables
    users,items = movielens_tables(ml100k)
    r = ml100k.ratings.loc[ml100k.ratings.user <= 120, ['user','item','rating','timestamp']]
    def mk():
        "Fresh loaders each time: a loader's shuffling generator advances with every epoch it serves"
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', CollabWarning)
            dls = TabularCollabDataLoaders.from_dfs(r, users, items, date_col='timestamp', cat_names=['gender','occupation'],
                                                    cont_names=['age','year'], bs=256, seed=0, unseen='keep')
        return tabular_collab_learner(dls, n_factors=8, layers=(16,))
    a,b = fit_both(mk)
    assert type(b) is LeanLearner
    assert_same_training(a, b)
    assert_same_training(*fit_both(mk, lambda l: l.fit(1, 1e-3, wd=0.01)))

def test_get_preds_with_loss_identical(small):
    dls = FastCollabDataLoaders.from_df(small, bs=256, seed=0, unseen='keep')
    torch.manual_seed(0); learn = fast_collab_learner(dls, n_factors=8, y_range=(0, 5.5))
    with learn.no_bar():
        with stock_loop(): p0,t0,l0 = learn.get_preds(with_loss=True)
        p1,t1,l1 = learn.get_preds(with_loss=True)
    assert torch.equal(p0, p1) and torch.equal(t0, t1) and torch.equal(l0, l1) and len(l1) == len(dls.valid_ds)
    assert isinstance(l0, TensorBase) and type(l1) is torch.Tensor     # the one documented difference: the loss's type

def test_event_added_to_class_after_first_fit_still_runs(small):
    "No stale dispatch: an event patched onto a callback class after a fit is called in the next fit"
    class Counter(Callback): pass
    dls = FastCollabDataLoaders.from_df(small, bs=1024, seed=0, unseen='keep')
    learn = fast_collab_learner(dls, n_factors=4, y_range=(0, 5.5), cbs=Counter())
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    Counter.after_batch = lambda self: setattr(self, 'n', getattr(self, 'n', 0) + 1)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    assert learn.counter.n == len(dls.train) + len(dls.valid)

def test_trained_lean_learner_is_freed(small):
    "The dispatch plans live on the learner, not in a module-level cache: a trained LeanLearner is freed as fastai's is; a copy starts planless"
    import gc, weakref, copy
    learn = fast_collab_learner(FastCollabDataLoaders.from_df(small, bs=1024, seed=0, unseen='keep'), n_factors=4, y_range=(0, 5.5))
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    assert learn._lean_phase.plans and copy.deepcopy(learn)._lean_phase.plans == {}
    ref = weakref.ref(learn)
    del learn; gc.collect()
    assert ref() is None

def test_callback_added_during_fit_and_instance_events(small):
    "A callback added by another mid-fit, and an event set on an instance mid-fit, are called from then on as in fastai"
    class Adder(Callback):
        def after_batch(self):
            if self.iter == 2 and self.training and not hasattr(self.learn, 'late'): self.learn.add_cb(Late())
            if self.iter == 3 and self.training: self.learn.late.after_loss = lambda: self.learn.late.__dict__.setdefault('hits', []).append(1)
    class Late(Callback):
        def after_batch(self): self.n = getattr(self, 'n', 0) + 1
    def fit(l):
        l.fit(1, 1e-3)
        l.counts = (l.late.n, len(l.late.hits))
    mk = lambda: fast_collab_learner(FastCollabDataLoaders.from_df(small, bs=1024, seed=0, unseen='keep'), n_factors=4,
                                     y_range=(0, 5.5), cbs=Adder())
    a,b = fit_both(mk, fit)
    assert a.counts == b.counts and a.counts[0] > 0 and a.counts[1] > 0

def test_install_lean_loop_is_explicit_and_undone(small):
    "`install_lean_loop` puts the lean pieces on fastai's classes, trains fastai's collab_learner the same, and undoes itself"
    import fastai.learner, fastai.optimizer, fastai.losses
    fastai_fns = {k: v for k,v in fastloop._FASTAI.items()}
    mk = lambda: collab_learner(FastCollabDataLoaders.from_df(small, bs=512, seed=0, unseen='keep'), n_factors=8, y_range=(0, 5.5))
    stock = train(mk)
    try:
        assert all(install_lean_loop().values())
        assert fastai.learner.Learner._call_one is fastloop._lean_call_one
        lean = train(mk)
        assert type(lean.loss_func(torch.randn(4, 1), torch.randn(4, 1))) is torch.Tensor
        with stock_loop(): assert isinstance(lean.loss_func(torch.randn(4, 1), torch.randn(4, 1)), TensorBase)
    finally: install_lean_loop(False)
    assert not any(lean_patches().values()) and all(fastloop._fastai_attr(*k) is v and getattr(*k) is v
                                                     for k,v in fastai_fns.items() if k in fastloop._INSTALL)
    assert_same_training(stock, lean)
    assert isinstance(MSELossFlat()(torch.randn(4, 1), torch.randn(4, 1)), TensorBase)

def test_changed_fastai_function_is_left_alone(monkeypatch):
    "A fastai whose function differs from the mirrored source runs its own code for that piece, with a warning naming it"
    monkeypatch.setitem(fastloop._MIRRORS, 'optimizer', {**fastloop._MIRRORS['optimizer'], (Optimizer, 'step'): '00000000'})
    monkeypatch.setattr(fastloop, '_FRESH', {})
    with pytest.warns(CollabWarning, match=r'Optimizer\.step differ'): assert not fastloop._lean('optimizer')
    assert fastloop._lean('dispatch') and fastloop._lean('loss') and fastloop._lean('schedule')
    ps = [torch.nn.Parameter(torch.ones(2))]; ps[0].grad = torch.ones(2)
    opt = lean_adam(ps, lr=0.1); opt.step()
    assert set(opt.state) == set(ps)

def test_env_var_and_scoped_switch():
    code = "import collab_ext; from collab_ext.fastloop import lean_active, lean_loop; a = lean_active()\nwith lean_loop(): print(a, lean_active())"
    assert _run(code, COLLAB_EXT_LEAN_LOOP='0').split() == ['False', 'True']
    assert _run(code, COLLAB_EXT_LEAN_LOOP='1').split() == ['True', 'True']
    with stock_loop():
        assert not lean_active()
        with lean_loop(): assert lean_active()
        assert not lean_active()
    assert lean_active()

@pytest.mark.parametrize('how', ['flat_cos', 'sgdr', 'lr_find', 'callbacks'])
def test_fastai_schedules_and_callbacks_identical(small, how, tmp_path):
    "fastai's other schedules, the LR finder, and tracker callbacks behave the same"
    from fastai.callback.tracker import EarlyStoppingCallback, SaveModelCallback
    from fastai.metrics import rmse
    mk = lambda f: lambda: f(FastCollabDataLoaders.from_df(small, bs=512, seed=0, unseen='keep'), n_factors=8,
                             y_range=(0, 5.5), metrics=rmse, path=tmp_path)
    fits = dict(flat_cos=lambda l: l.fit_flat_cos(2, 1e-2), sgdr=lambda l: l.fit_sgdr(2, 1, 1e-2),
                lr_find=lambda l: setattr(l, 'sugg', l.lr_find(num_it=40, show_plot=False)),
                callbacks=lambda l: l.fit(3, 1e-2, cbs=[SaveModelCallback(monitor='valid_loss', fname='best'),
                                                          EarlyStoppingCallback(monitor='valid_loss', patience=1)]))
    a,b = fit_both(mk(fast_collab_learner), fits[how], make_stock=mk(collab_learner))
    if how == 'lr_find':
        assert a.sugg == b.sugg and a.recorder.losses == b.recorder.losses and a.recorder.lrs == b.recorder.lrs
    else: assert_same_training(a, b)

@pytest.mark.parametrize('how', ['one_cycle_pct0', 'one_cycle_pct1', 'flat_cos_pct0'])
def test_integer_phase_boundaries_identical(small, how):
    "pct_start=0 or 1 gives integer `pcts` to combine_scheds: the schedule must still move as fastai's does"
    mk = lambda f: lambda: f(FastCollabDataLoaders.from_df(small, bs=1024, seed=0, unseen='keep'), n_factors=8, y_range=(0, 5.5))
    fits = dict(one_cycle_pct0=lambda l: l.fit_one_cycle(1, 1e-2, pct_start=0), one_cycle_pct1=lambda l: l.fit_one_cycle(1, 1e-2, pct_start=1),
                flat_cos_pct0=lambda l: l.fit_flat_cos(1, 1e-2, pct_start=0))
    a,b = fit_both(mk(fast_collab_learner), fits[how], make_stock=mk(collab_learner))
    assert_same_training(a, b)
    assert len(set(b.recorder.lrs)) > 5                  # the learning rate really was scheduled

def test_combine_scheds_any_position_type():
    "Integer pcts, float64 and float32 tensor positions, floats: the same values as fastai's own"
    import fastai.callback.schedule as S
    for pcts in ([0, 1], [1, 0], [0.25, 0.75], [0.1, 0.2, 0.7]):
        scheds = [S.SchedCos(0.1*i + 0.05, 0.4 + i) for i in range(len(pcts))]
        f, g = S.combine_scheds(pcts, scheds), fastloop.lean_combine_scheds(pcts, scheds)
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
    mk = lambda f: lambda: f(FastCollabDataLoaders.from_df(small, bs=1024, seed=0, unseen='keep'), n_factors=4,
                             y_range=(0, 5.5), cbs=[Proxy(), Plain()])
    a,b = fit_both(mk(fast_collab_learner), fit, make_stock=mk(collab_learner))
    n = len(a.dls.train) + len(a.dls.valid)
    assert a.counts == b.counts and a.counts[0] == n and a.counts[1] > n
    assert_same_training(a, b)

def test_event_lists_and_optimizer_subclasses(small):
    "`learn([...])` dispatches every event; an Optimizer subclass's own `all_params` is honoured, even installed globally"
    from fastai.optimizer import weight_decay, average_grad, average_sqr_grad, step_stat, adam_step
    class SkipFirstGroupParam(Optimizer):
        def all_params(self, n=slice(None), with_grad=False):
            res = super().all_params(n, with_grad)
            return res[1:] if with_grad else res
    opt = lambda params, lr, **kw: SkipFirstGroupParam(params, [weight_decay, average_grad, average_sqr_grad, step_stat, adam_step],
                                                       lr=lr, mom=0.9, sqr_mom=0.99, eps=1e-5, wd=0.01)
    mk = lambda f: lambda: f(FastCollabDataLoaders.from_df(small, bs=1024, seed=0, unseen='keep'), n_factors=4,
                             y_range=(0, 5.5), opt_func=opt)
    stock = train(mk(collab_learner), lambda l: l.fit(1, 1e-2))
    try:
        install_lean_loop()
        b = train(mk(collab_learner), lambda l: l.fit(1, 1e-2))
    finally: install_lean_loop(False)
    assert_same_training(stock, b)
    first = next(b.model.parameters())
    torch.manual_seed(0)
    assert torch.equal(first, next(mk(collab_learner)().model.parameters()))   # the skipped parameter was never updated
    seen = []
    class Log(Callback):
        def before_fit(self): seen.append('before_fit')
        def after_fit(self): seen.append('after_fit')
    lean = train(mk(fast_collab_learner), lambda l: None)
    lean.add_cb(Log()); lean(['before_fit', 'after_fit'])
    assert seen == ['before_fit', 'after_fit']
