"""Torch threads for the `collab_ext train` defaults (issue 11): seconds of the fast recipe's fit (ML-100k benchmark split,
bs=1024, 8 epochs of fit_one_cycle(3e-2, wd=1.0), 50 factors) with 1 and 2 torch threads, each fit in a fresh process,
the thread counts interleaved so both see the same machine load.

    python bench/threads.py --reps 3 --threads 1,2      # $COLLAB_EXT_DATA must hold ml-100k
"""
import argparse, os, subprocess, sys, statistics

CHILD = r"""
import sys, time, io, contextlib, torch
torch.set_num_threads(int(sys.argv[1]))
from collab_ext.core import local_ml100k
from collab_ext.cli import load_ratings, train_learner, RECIPE
r,_ = load_ratings('file', local_ml100k()/'u.data')
t = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()): learn = train_learner(r, bar=False, **{k:v for k,v in RECIPE.items()})
print(f"{time.perf_counter()-t:.2f} {float(learn.recorder.values[-1][2]):.4f} {torch.get_num_threads()}")
"""

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--reps', type=int, default=3)
    p.add_argument('--threads', default='1,2')
    a = p.parse_args()
    ts = [int(t) for t in a.threads.split(',')]
    env = {k:v for k,v in os.environ.items() if k not in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS')}
    res = {t: [] for t in ts}
    print(f"cores: {os.cpu_count()}, load average before: {os.getloadavg()}")
    for rep in range(a.reps):
        for t in ts:
            out = subprocess.run([sys.executable, '-c', CHILD, str(t)], capture_output=True, text=True, env=env, check=True).stdout.split()
            res[t].append(float(out[0]))
            print(f"rep {rep}: {t} thread(s): fit {out[0]} s, valid RMSE {out[1]} (torch threads {out[2]})", flush=True)
    for t in ts: print(f"{t} thread(s): median {statistics.median(res[t]):.2f} s, range {min(res[t]):.2f}-{max(res[t]):.2f} s over {a.reps} fits")
    print(f"load average after: {os.getloadavg()}")

if __name__ == '__main__': main()
