"Trusted exports (issue 15): no rows in the file, atomic writes (real SIGKILL), a failed export leaves the learner whole, a clear error without collab_ext, the pickle-free format and the CLI that uses it."
import json, os, signal, subprocess, sys, time, pickle
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from fastai.learner import Learner, load_learner
from fastai.losses import MSELossFlat
from fastai.collab import collab_learner
from collab_ext.core import CollabDataError
from collab_ext.models import DotProductBias, CollabNN
from collab_ext.ce.data import CollabCEDataLoaders
from collab_ext.ce.learner import collab_ce_learner
from collab_ext.export import atomic_path, load_collab, register_collab_model
import collab_ext.export  # noqa: F401  (Learner.export_safe, Learner.save_collab)

HIDE_COLLAB_EXT = ("import sys, os\n"
    "sys.meta_path = [f for f in sys.meta_path if '__editable__' not in getattr(f, '__module__', '')]\n"
    "sys.path = [p for p in sys.path if p not in ('', '.') and not os.path.isdir(os.path.join(p, 'collab_ext'))]\n")

def _va(ratings, dls, n=2000): return ratings.iloc[dls.splits[1][:n]][['user','item']]

def _storage(t): return 0 if t is None else t.untyped_storage().nbytes()

# ---------------------------------------------------------------- what the file holds
@pytest.mark.parametrize('how', ['export', 'export_safe'])
def test_export_holds_no_rows(tmp_path, ml_dot_learn, ratings, how):
    learn = ml_dot_learn
    getattr(learn, how)(tmp_path/'m.pkl')
    back = load_learner(tmp_path/'m.pkl')
    for ds in (back.dls.train_ds, back.dls.valid_ds):
        assert len(ds) == 0 and _storage(ds.x) == 0 and _storage(ds.y) == 0     # fresh tensors, not views of the training rows
    params = sum(p.numel()*4 for p in learn.model.parameters())
    seen = len(learn.dls.train_ds)*4                                            # one int32 item code per training rating
    assert (tmp_path/'m.pkl').stat().st_size < params + seen + 250_000         # + vocab, titles, pickled learner
    va = _va(ratings, learn.dls)
    np.testing.assert_allclose(back.predict_ratings(va, unknown='na'), learn.predict_ratings(va, unknown='na'), rtol=1e-6)
    assert set(back.dls.seen_items(196)) == set(learn.dls.seen_items(196))
    assert len(learn.dls.train_ds) == 80_000                                    # the live learner kept its data
    back.export_safe(tmp_path/'again.pkl')                                      # a loaded learner exports again
    np.testing.assert_array_equal(load_learner(tmp_path/'again.pkl').predict_ratings(va, unknown='na'), back.predict_ratings(va, unknown='na'))

def test_ce_export_keeps_seen_index(tmp_path, ratings):
    dls = CollabCEDataLoaders.from_df(ratings[['user','item','rating']].iloc[:5000], seed=1, unseen='keep')
    learn = collab_ce_learner(dls, n_factors=4)
    learn.export_safe(tmp_path/'ce.pkl')
    back = load_learner(tmp_path/'ce.pkl')
    assert _storage(back.dls.train_ds.x) == 0 and set(back.dls.seen_items(1)) == set(dls.seen_items(1))

# ---------------------------------------------------------------- atomic writes
def test_atomic_path_keeps_old_file_on_error(tmp_path):
    (tmp_path/'m.pkl').write_bytes(b'old')
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path/'m.pkl') as t:
            t.write_bytes(b'partial'); raise RuntimeError('boom')
    assert (tmp_path/'m.pkl').read_bytes() == b'old' and [p.name for p in tmp_path.iterdir()] == ['m.pkl']
    with pytest.raises(CollabDataError, match='does not exist'):
        with atomic_path(tmp_path/'nope'/'m.pkl'): pass

KILL_CHILD = '''
import sys, torch
from torch import nn
from fastai.learner import Learner
from fastai.losses import MSELossFlat
import collab_ext.export
from collab_ext.synth import synth_movielens
from collab_ext.data.loaders import FastCollabDataLoaders
r = synth_movielens(n_users=50, n_items=40, n_ratings=500, seed=0).ratings
dls = FastCollabDataLoaders.from_df(r[['user','item','rating']], seed=0, unseen='keep')
learn = Learner(dls, nn.Sequential(nn.Embedding(400_000, 64)), loss_func=MSELossFlat())   # ~100 MB of weights: a slow write
print('ready', flush=True)
while True: getattr(learn, sys.argv[2])(sys.argv[1])
'''

def _kill_mid_write(path, method):
    "Start a process exporting a ~100 MB learner to `path` in a loop; SIGKILL it while a write is in progress"
    p = subprocess.Popen([sys.executable, '-c', KILL_CHILD, str(path), method], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == 'ready'
    old_size = path.stat().st_size
    deadline = time.time() + 120
    while time.time() < deadline:                      # wait until a write has started and part of it is on disk
        tmps = list(path.parent.glob(f'.{path.name}.*.tmp'))
        cur = tmps[0] if tmps else path
        try: size = cur.stat().st_size
        except FileNotFoundError: continue
        if (tmps or size != old_size) and 0 < size < 90_000_000: break
        time.sleep(0.001)
    os.kill(p.pid, signal.SIGKILL); p.wait()

def test_kill_during_export_safe_leaves_old_model(tmp_path, ml_dot_learn, ratings):
    path = tmp_path/'model.pkl'
    ml_dot_learn.export_safe(path)
    old = path.read_bytes()
    _kill_mid_write(path, 'export_safe')
    assert path.read_bytes() == old                     # the previous model, whole
    back = load_learner(path)
    va = _va(ratings, ml_dot_learn.dls, 200)
    np.testing.assert_allclose(back.predict_ratings(va, unknown='na'), ml_dot_learn.predict_ratings(va, unknown='na'), rtol=1e-6)

def test_kill_during_fastai_export_truncates(tmp_path, ml_dot_learn):
    "The failure export_safe prevents: fastai's export writes in place, so a kill leaves a truncated file"
    path = tmp_path/'model.pkl'
    ml_dot_learn.export(path)
    _kill_mid_write(path, 'export')
    with pytest.raises(Exception): load_learner(path)

def test_failed_export_leaves_learner_usable(tmp_path, ml_dls):
    learn = Learner(ml_dls, DotProductBias.from_dls(ml_dls, 4), loss_func=MSELossFlat())
    learn.create_opt()
    opt = learn.opt
    with pytest.raises(CollabDataError, match='does not exist'): learn.export_safe(tmp_path/'missing'/'m.pkl')
    assert len(learn.dls.train_ds) == 80_000 and learn.opt is opt
    class Boom:                                         # a failure while pickling, after the learner was emptied
        def __reduce__(self): raise RuntimeError('cannot pickle')
    learn.boom = Boom()
    with pytest.raises(RuntimeError): learn.export_safe(tmp_path/'m.pkl')
    assert len(learn.dls.train_ds) == 80_000 and learn.opt is opt and not (tmp_path/'m.pkl').exists()
    assert list(tmp_path.iterdir()) == []               # no temporary left
    del learn.boom
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)

# ---------------------------------------------------------------- without collab_ext
@pytest.mark.parametrize('how', ['export', 'export_safe'])
def test_missing_collab_ext_is_named(tmp_path, ml_dot_learn, how):
    getattr(ml_dot_learn, how)(tmp_path/'m.pkl')
    code = HIDE_COLLAB_EXT + f"from fastai.learner import load_learner\ntry: load_learner({str(tmp_path/'m.pkl')!r})\nexcept Exception as e: print(type(e).__name__, e)"
    out = subprocess.run([sys.executable, '-W', 'ignore', '-c', code], capture_output=True, text=True, cwd=tmp_path).stdout
    assert 'AttributeError' in out and 'saved by collab_ext' in out and 'pip install collab_ext' in out, out
    assert 'UnboundLocalError' not in out

def test_lean_learner_export_safe_names_collab_ext(tmp_path, ml_dls):
    "A learner whose own class is collab_ext's (LeanLearner): the check runs before that class is imported"
    from collab_ext.fastloop import fast_collab_learner
    fast_collab_learner(ml_dls, n_factors=4).export_safe(tmp_path/'lean.pkl')
    code = HIDE_COLLAB_EXT + f"from fastai.learner import load_learner\ntry: load_learner({str(tmp_path/'lean.pkl')!r})\nexcept Exception as e: print(type(e).__name__, e)"
    out = subprocess.run([sys.executable, '-W', 'ignore', '-c', code], capture_output=True, text=True, cwd=tmp_path).stdout
    assert 'pip install collab_ext' in out and 'UnboundLocalError' not in out, out

@pytest.mark.parametrize('how', ['export', 'export_safe'])
def test_fastai_learner_exports_still_load(tmp_path, how):
    "A stock fastai collab learner exported with collab_ext imported (fastai's export or export_safe) loads in a process without collab_ext"
    from fastai.collab import CollabDataLoaders
    df = pd.DataFrame({'user': np.arange(300) % 20, 'item': np.arange(300) % 17, 'rating': (np.arange(300) % 5 + 1).astype(float)})
    dls = CollabDataLoaders.from_df(df, bs=64, seed=0)
    learn = collab_learner(dls, n_factors=4, y_range=(0, 5.5))
    learn.path = tmp_path
    getattr(learn, how)('f.pkl')
    code = HIDE_COLLAB_EXT + f"from fastai.learner import load_learner\nl = load_learner({str(tmp_path/'f.pkl')!r})\nprint(type(l.model).__name__)"
    res = subprocess.run([sys.executable, '-W', 'ignore', '-c', code], capture_output=True, text=True, cwd=tmp_path)
    assert res.stdout.strip() == 'EmbeddingDotBias', res.stderr[-2000:]

# ---------------------------------------------------------------- the pickle-free format
def _learners(dls_mse, dls_ce):
    yield 'DotProductBias', Learner(dls_mse, DotProductBias.from_dls(dls_mse, 8), loss_func=MSELossFlat())
    yield 'CollabNN', Learner(dls_mse, CollabNN.from_dls(dls_mse), loss_func=MSELossFlat())
    yield 'EmbeddingDotBias', collab_learner(dls_mse, n_factors=8, y_range=(0, 5.5))
    yield 'EmbeddingNN', collab_learner(dls_mse, use_nn=True, layers=[16, 8], y_range=(0, 5.5))
    yield 'CollabCEDot', collab_ce_learner(dls_ce, n_factors=4)
    yield 'CollabOrdinal', collab_ce_learner(dls_ce, n_factors=4, loss='ordinal')
    yield 'CollabCENN', collab_ce_learner(dls_ce, use_nn=True)
    yield 'CollabOrdinal', collab_ce_learner(dls_ce, use_nn=True, loss='ordinal')   # around a CollabCENN scorer

def test_save_collab_round_trip(tmp_path, ratings):
    sub = ratings[['user','item','rating','title']].iloc[:8000]
    dls = collab_ext.data.loaders.FastCollabDataLoaders.from_df(sub, seed=3, bs=512, unseen='keep')
    dls_ce = CollabCEDataLoaders.from_df(sub, seed=3, bs=512, unseen='keep')
    va = sub.iloc[dls.splits[1]][['user','item']]
    for k,(name,learn) in enumerate(_learners(dls, dls_ce)):
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
        d = tmp_path/f'{k}'; d.mkdir()
        learn.save_collab(d)
        assert sorted(p.name for p in d.iterdir()) == ['model.json', 'weights.pt'], name
        torch.load(d/'weights.pt', weights_only=True)                          # tensors only
        meta = json.loads((d/'model.json').read_text())
        assert meta['model']['class'] == name
        served = load_collab(d)
        np.testing.assert_allclose(served.predict_ratings(va, unknown='na'), learn.predict_ratings(va, unknown='na'), rtol=1e-5, atol=1e-6, err_msg=name)
        pd.testing.assert_frame_equal(served.recommend(1, n=5), learn.recommend(1, n=5), check_exact=False, rtol=1e-5)

def test_save_collab_without_seen_index(tmp_path, ml_dot_learn):
    ml_dot_learn.save_collab(tmp_path, seen=False)
    assert set(torch.load(tmp_path/'weights.pt', weights_only=True)) == {f'model.{k}' for k in ml_dot_learn.model.state_dict()}
    assert len(load_collab(tmp_path).dls.seen_items(196)) == 0

def test_load_collab_runs_no_code(tmp_path, ml_dot_learn):
    ml_dot_learn.save_collab(tmp_path)
    meta = json.loads((tmp_path/'model.json').read_text())
    meta['model']['class'] = 'posix.system'                                    # a file naming code: refused, nothing imported
    (tmp_path/'model.json').write_text(json.dumps(meta))
    with pytest.raises(CollabDataError, match="'posix.system', which is not registered"): load_collab(tmp_path)
    # a weights.pt that is a code-running pickle (with a matching hash) is refused by torch's weights_only loader
    class Evil:
        def __reduce__(self): return (os.system, ('echo pwned > ' + str(tmp_path/'pwned'),))
    torch.save({'model.x': Evil()}, tmp_path/'weights.pt')
    meta['model']['class'] = 'DotProductBias'
    meta['weights_sha256'] = collab_ext.export._sha256(tmp_path/'weights.pt')
    (tmp_path/'model.json').write_text(json.dumps(meta))
    with pytest.raises(pickle.UnpicklingError): load_collab(tmp_path)
    assert not (tmp_path/'pwned').exists()

def test_load_collab_bad_files(tmp_path, ml_dot_learn):
    with pytest.raises(CollabDataError, match='no model.json'): load_collab(tmp_path)
    ml_dot_learn.save_collab(tmp_path)
    w = tmp_path/'weights.pt'
    w.write_bytes(w.read_bytes()[:1000])
    with pytest.raises(CollabDataError, match='SHA-256'): load_collab(tmp_path)
    (tmp_path/'model.json').write_text('{"format": "something else"}')
    with pytest.raises(CollabDataError, match='not a collab_ext model'): load_collab(tmp_path)
    with pytest.raises(CollabDataError, match='no such folder'): ml_dot_learn.save_collab(tmp_path/'missing')

def test_unregistered_model_refused(tmp_path, ml_dls):
    from collab_ext.models import DotProduct
    class MyDot(DotProduct): pass
    learn = Learner(ml_dls, MyDot(*[len(v) for v in ml_dls.classes.values()], 4), loss_func=MSELossFlat())
    with pytest.raises(CollabDataError, match='register_collab_model'): learn.save_collab(tmp_path)
    assert list(tmp_path.iterdir()) == []

# ---------------------------------------------------------------- the command line
def run(*args, **kw):
    return subprocess.run([sys.executable, '-W', 'ignore', '-c', 'from collab_ext.cli import main; main()', *args], capture_output=True, text=True, **kw)

def test_cli_recommend_is_pickle_free(tmp_path):
    res = run('train', '--data', 'synthetic', '--epochs', '1', '--out', str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ['model.json', 'model.pkl', 'weights.pt']
    rec = run('recommend', '--model', str(tmp_path), '--user', '1', '-n', '3')
    assert rec.returncode == 0, rec.stderr
    assert len(rec.stdout.strip().splitlines()) == 4
    via_pkl = run('recommend', '--model', str(tmp_path/'model.pkl'), '--user', '1', '-n', '3')    # pickle-free siblings used
    assert via_pkl.stdout == rec.stdout and 'insecure pickle' not in via_pkl.stderr
    lone = tmp_path/'lone'; lone.mkdir(); (tmp_path/'model.pkl').rename(lone/'model.pkl')
    res = run('recommend', '--model', str(lone/'model.pkl'), '--user', '1', '-n', '3')
    assert res.returncode != 0 and '--trust-pickle' in res.stderr
    res = run('recommend', '--model', str(lone/'model.pkl'), '--user', '1', '-n', '3', '--trust-pickle')
    assert res.returncode == 0 and res.stdout == rec.stdout, res.stderr
    for bad in ('0', '-2'):
        res = run('recommend', '--model', str(tmp_path), '--user', '1', '-n', bad)
        assert res.returncode != 0 and 'at least 1' in res.stderr
    assert run('recommend', '--model', str(tmp_path), '--user', '1', '-n', '2.5').returncode != 0

def test_guarded_loaders_still_copy_and_pickle(ml_dls):
    "The collab_ext-named check in the pickle changes nothing else: copy, deepcopy and a pickle round trip give the same loaders"
    import copy
    for f in (copy.copy, copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))):
        c = f(ml_dls)
        assert type(c) is type(ml_dls) and len(c.train_ds) == 80_000 and list(c.classes) == ['user', 'item']
    assert copy.copy(ml_dls).train_ds is ml_dls.train_ds

def test_save_collab_is_deterministic(tmp_path, ml_dot_learn):
    "save → load → save gives byte-identical files (no temp-file names or timestamps inside)"
    a,b = tmp_path/'a',tmp_path/'b'; a.mkdir(); b.mkdir()
    ml_dot_learn.save_collab(a)
    load_collab(a).save_collab(b)
    for f in ('weights.pt', 'model.json'): assert (a/f).read_bytes() == (b/f).read_bytes(), f
