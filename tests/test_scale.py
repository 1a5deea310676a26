"""Issue 6: the data path stays sparse and linear. Memory is measured with tracemalloc (every numpy/pandas/scipy
allocation at its full size), which is deterministic and an upper bound of the resident memory bench/scale.py reports."""
import tracemalloc, warnings
import numpy as np, pandas as pd, pytest
from collab_ext.synth import synth_ratings
from collab_ext.data.core import ratings_matrix, crosstab, clean_ratings
from collab_ext.data.split import RandomRatingSplitter, TimeSplitter, LastNSplitter, ColdUserSplitter

def traced_peak(f) -> int:
    "Peak bytes traced while `f()` runs (its result included)"
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore'); res = f()
        return tracemalloc.get_traced_memory()[1]
    finally: tracemalloc.stop()

def test_no_dense_users_by_items():
    "200,000 users × 150,000 items: a dense float32 matrix would need 120 GB; both functions stay under 50 MB"
    k = np.arange(300_000)
    df = pd.DataFrame({'user': k % 200_000, 'item': k % 150_000, 'rating': (k % 5 + 1).astype(np.float32)})
    rm = None
    def _rm():
        nonlocal rm; rm = ratings_matrix(df); return rm
    assert traced_peak(_rm) < 50e6
    assert rm.matrix.shape == (200_000, 150_000) and rm.matrix.nnz == 300_000
    assert rm.matrix[rm.user_index([7])[0], rm.item_index([7])[0]] == 3.0
    tab = []
    assert traced_peak(lambda: tab.append(crosstab(df, n_users=20, n_items=20))) < 50e6
    assert tab[0].shape == (20, 20)

@pytest.fixture(scope='module')
def synth():
    "1M ratings of ML-25M shape scaled down (20k users, 8k items), and its first 250k rows"
    df = synth_ratings(1_000_000, 20_000, 8_000, seed=0)
    return df.iloc[:250_000].copy(), df

OPS = {
    'ratings_matrix': (lambda d: ratings_matrix(d), 3),
    'crosstab': (lambda d: crosstab(d), 3),
    'RandomRatingSplitter': (lambda d: RandomRatingSplitter(0.2, 42)(d), 3),
    'TimeSplitter': (lambda d: TimeSplitter(valid_pct=0.2)(d), 4),
    'LastNSplitter': (lambda d: LastNSplitter(n=1)(d), 4),
    'ColdUserSplitter': (lambda d: ColdUserSplitter(0.2, 42)(d), 3),
    'clean_ratings': (lambda d: clean_ratings(d, 'user', 'item', 'rating'), 3),
}   # from_df builds torch tensors, which tracemalloc does not see: bench/scale.py measures it by resident memory
def _run(name, df):
    f,ncols = OPS[name]
    d = df[['user','item','rating','timestamp'][:ncols]]
    return traced_peak(lambda: f(d)), sum(d[c].to_numpy().nbytes for c in d)

@pytest.mark.parametrize('name', list(OPS))
def test_memory_grows_linearly(synth, name):
    "Four times the rows, about four times the peak memory"
    (small,_),(big,_) = _run(name, synth[0]),_run(name, synth[1])
    assert 3.3 < big/small < 4.7, big/small

@pytest.mark.parametrize('name,bound', [('crosstab', 3), ('RandomRatingSplitter', 3), ('TimeSplitter', 3), ('LastNSplitter', 3),
                                        ('ColdUserSplitter', 3), ('ratings_matrix', 3.6), ('clean_ratings', 3.6)])
def test_peak_within_bound_of_raw(synth, name, bound):
    "Peak traced memory over the raw rating columns (ratings_matrix's and clean_ratings' 3.5× here are 2.7× and 2.0× resident, bench/scale.py)"
    peak,raw = _run(name, synth[1])
    assert peak < bound*raw, peak/raw

def test_synth_ratings_shape():
    r = synth_ratings(300_000, 5_000, 2_000, seed=3)
    assert len(r) == 300_000 and not r.duplicated(['user','item']).any()
    assert r.user.nunique() == 5_000 and r.user.value_counts().min() >= 15     # about 20 each at least
    pop = r.item.value_counts()
    assert pop.iloc[0] > 20*pop.iloc[-1] and pop.iloc[0] > 5*pop.median()      # power-law popularity
    assert set(np.unique(r.rating)) <= set(np.arange(1, 11)/2)
