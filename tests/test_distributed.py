"""Issue 6: data-parallel training on PyTorch's engine: 2 gloo processes on CPU under `torchrun`, every rating once
per epoch, the same model on every rank, the single-process result, and clear errors instead of hangs."""
import os, subprocess, sys, time
from pathlib import Path
import numpy as np, torch, pytest
from collab_ext.core import CollabDataError

# collab_ext.distributed needs `accelerate` (the dev extra installs it): under CI=true its absence fails, elsewhere it skips
if os.environ.get('CI', '').lower() not in ('1', 'true', 'yes'): pytest.importorskip('accelerate', reason='pip install "collab_ext[distributed]"')
from collab_ext.distributed import *

WORKER = Path(__file__).parent/'ddp_worker.py'
EPOCHS,BS = 2,512                                  # per process: the global batch is 2 × 512
OTHERS = 'nn,ce,tabular'                           # collab_ext's other learners, one epoch each on 20k ratings

@pytest.fixture(scope='module')
def ddp(tmp_path_factory, ml100k_path):
    "Train 2 epochs on ML-100k with 2 gloo processes; each rank's saved results, and the output folder"
    out = tmp_path_factory.mktemp('ddp')
    launch_local(WORKER, '--out', out, '--epochs', EPOCHS, '--bs', BS, '--timeout', 120, '--others', OTHERS, nprocs=2, timeout=600)
    return [torch.load(out/f'rank{r}.pt', weights_only=False) for r in range(2)], out

def test_parameters_identical_across_ranks(ddp):
    (r0,r1),_ = ddp
    test = [(k, torch.equal(v, r1['params'][k])) for k,v in r0['params'].items()]
    assert len(test) == 4 and all(ok for _,ok in test), test
    assert r0['world_size'] == r1['world_size'] == 2

def test_each_rating_once_per_epoch(ddp):
    (r0,r1),_ = ddp
    train = r0['train_x']
    assert len(train) == 80_000
    key = lambda x: np.sort(x[:,0].numpy().astype(np.int64)*10_000 + x[:,1].numpy())
    assert len(r0['rows']) == len(r1['rows']) == EPOCHS
    for e in range(EPOCHS):
        a,b = r0['rows'][e],r1['rows'][e]
        assert abs(len(a)-len(b)) <= 1                             # a shard each, of (nearly) equal size
        np.testing.assert_array_equal(key(torch.cat([a,b])), key(train))   # together: every row exactly once
        assert len(np.intersect1d(key(a), key(b))) == 0

def test_gathered_predictions(ddp):
    (r0,r1),_ = ddp
    for r in (r0,r1):
        assert r['preds'].shape == (20_000,) and r['odd_preds'].shape == (1001,)   # 1001 rows: shards of 501 and 500
        torch.testing.assert_close(r['preds'], r['local_preds'])                 # gathered in the dataset's order
        torch.testing.assert_close(r['odd_preds'], r['local_preds'][:1001])
    assert torch.equal(r0['preds'], r1['preds'])

@pytest.mark.parametrize('name', OTHERS.split(','))
def test_other_learners(ddp, name):
    "collab_learner(use_nn=True), collab_ce_learner and tabular_collab_learner: same parameters, rows once, predictions gathered"
    (r0,r1),_ = ddp
    a,b = r0['others'][name],r1['others'][name]
    assert all(torch.equal(v, b['params'][k]) for k,v in a['params'].items())
    key = lambda x: np.sort(x[:,0].numpy().astype(np.int64)*10_000 + x[:,1].numpy())
    np.testing.assert_array_equal(key(torch.cat([a['rows'], b['rows']])), key(a['train_x']))
    assert a['n_preds'] == b['n_preds'] == a['n_valid'] == 4000

def test_export_from_rank0_only(ddp):
    _,out = ddp
    assert (out/'export_from_rank0.pkl').exists() and not (out/'export_from_rank1.pkl').exists()

def test_rmse_matches_single_process(ddp):
    "One process with the global batch (1024) and the same seed ends within 0.01 RMSE"
    (r0,_),_ = ddp
    sys.path.insert(0, str(Path(__file__).parents[1]/'examples'))
    from ddp_train import get_args, main
    _,preds,targs = main(get_args(['--epochs', str(EPOCHS), '--bs', str(2*BS)]))
    rmse = lambda p,t: float(((p.flatten()-t.flatten())**2).mean().sqrt())
    single,multi = rmse(preds, targs),rmse(r0['preds'], r0['targs'])
    assert single < 1.0 and abs(single - multi) < 0.01, (single, multi)

def test_failing_rank_is_named(tmp_path, ml100k_path):
    with pytest.raises(CollabDistributedError, match='injected failure on rank 1 at step 3'):
        launch_local(WORKER, '--out', tmp_path, '--epochs', 1, '--misbehave', '1:3:fail', '--timeout', 60, nprocs=2, timeout=300)

def test_stalled_rank_times_out(tmp_path, ml100k_path):
    "Rank 1 stops answering: rank 0 fails after its timeout with an error that says so, instead of waiting forever"
    t = time.time()
    with pytest.raises(CollabDistributedError, match=r'(?s)rank 0 of 2: a collective failed.*Timed out.*timeout=15'):
        launch_local(WORKER, '--out', tmp_path, '--epochs', 1, '--misbehave', '1:3:stall', '--timeout', 15, nprocs=2, timeout=300)
    assert time.time() - t < 300

@pytest.mark.parametrize('n,W,bs,drop_last', [(80_000,2,512,True), (20_000,2,512,False), (1001,3,64,False), (99_999,7,100,True)])
def test_shards_cover_the_epoch(n, W, bs, drop_last):
    b = shard_bounds(n, W, bs, drop_last)
    sizes = np.diff(b, axis=1)
    assert b[0,0] == 0 and b[-1,-1] == n and (b[1:,0] == b[:-1,-1]).all()
    assert (sizes >= 1).all() and (sizes.max(1) - sizes.min(1) <= 1).all()
    assert len(b) == (n//(bs*W) if drop_last else -(-n//(bs*W)) - (0 < n%(bs*W) < W))

def test_world_size_not_dividing_the_data():
    with pytest.raises(CollabDataError, match=r'1001 rows do not divide among 2 ranks \(1 left over\)'):
        shard_bounds(1001, 2, 64, uneven='error')
    with pytest.raises(CollabDataError, match='3 row\\(s\\) cannot be shared by 4 ranks'):
        shard_bounds(3, 4, 64)
    test = shard_bounds(1001, 2, 64)                       # the default spreads the extra row: documented behaviour
    assert np.diff(test[-1]).tolist() == [53, 52]           # 1001 = 7 global batches of 128 + 105

def test_distrib_ctx_sets_the_timeout_of_an_existing_group():
    "`CollabDistributedTrainer(timeout=...)` when the process group exists already (not made by `init_distrib`): collectives get that timeout"
    code = ("import datetime, torch, torch.distributed as dist; from collab_ext.distributed import CollabDistributedTrainer, free_port; "
            "dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{free_port()}', rank=0, world_size=1, timeout=datetime.timedelta(seconds=300)); "
            "CollabDistributedTrainer(timeout=42); "
            "t = dist.distributed_c10d._get_default_group()._get_backend(torch.device('cpu')).options._timeout; "
            "dist.destroy_process_group(); assert t == datetime.timedelta(seconds=42), t")
    subprocess.run([sys.executable, '-c', code], check=True, timeout=120)

def test_trainer_signature_shows_accelerator_kwargs():
    import inspect
    ps = inspect.signature(CollabDistributedTrainer.__init__).parameters
    assert {'sync_bn','uneven','timeout','cpu','kwargs_handlers'} <= set(ps) and 'kwargs' not in ps

def test_fastai_is_not_patched():
    "Importing collab_ext.distributed leaves fastai's DistributedTrainer as fastai wrote it (issue 12)"
    import inspect
    from fastai.distributed import DistributedTrainer
    for name in ('__init__', 'before_fit', '_wrap_dl'):
        assert getattr(DistributedTrainer, name).__module__ == 'fastai.distributed', name
    assert 'timeout' not in inspect.signature(DistributedTrainer.__init__).parameters
    assert issubclass(CollabDistributedTrainer, DistributedTrainer)

def test_accelerate_only_when_asked_and_named_when_missing():
    "`import collab_ext` (and its whole API) loads neither accelerate nor fastai.distributed; without accelerate the error names it"
    code = ("import sys; import collab_ext; from collab_ext.all import *; import collab_ext.cli; "
            "assert not {'accelerate', 'fastai.distributed', 'collab_ext.distributed'} & set(sys.modules), sys.modules.keys()")
    subprocess.run([sys.executable, '-c', code], check=True, timeout=300)
    code = ("import sys; sys.modules['accelerate'] = None\n"
            "try: import collab_ext.distributed\n"
            "except ModuleNotFoundError as e: print(e); assert e.name == 'accelerate'\n"
            "else: raise SystemExit('imported without accelerate')")
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines() == ["distributed training needs the `accelerate` package (fastai's DistributedTrainer is built on it): "
                                               'pip install accelerate   (or: pip install "collab_ext[distributed]")']

def test_moved_names_warn():
    import collab_ext.synth, collab_ext.core
    with pytest.warns(DeprecationWarning, match='import it from `collab_ext.synth`'):
        from collab_ext.distributed import synth_ratings
    assert synth_ratings is collab_ext.synth.synth_ratings
    with pytest.warns(DeprecationWarning, match='collab_ext.core'):
        from collab_ext.distributed import peak_memory
    assert peak_memory is collab_ext.core.peak_memory
