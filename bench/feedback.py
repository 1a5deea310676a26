"""Feedback-loop acceptance experiment (issue 4): retrain a fastai collab learner on its own recommendations.

ML-100k oracle world (dot-bias fit on all ratings); learner starts from the time-ordered first 80%;
enthusiasts = the 5% of users with the highest Animation/Children's share, 5x activity; 10 rounds;
top-10 slates; acceptance exp(-0.1 rank) x [true rating >= 3.5]; warm retrain (1 epoch) each round;
arms greedy, epsilon (0.1), random, ideal; 3 seeds.

    python bench/feedback.py            # table, claims, plot (nbs/images/feedback_arms.png)
    python bench/feedback.py --json     # ... and, as the last line, {arm: {metric: [value per round]}}
"""
import argparse, json, sys, time, warnings
import numpy as np, pandas as pd, torch
torch.set_num_threads(1)   # 2 shared cores: one thread is many times faster than two under load
from fastai.collab import collab_learner
from harness import *
from collab_ext.core import CollabWarning
from collab_ext.data.loaders import FastCollabDataLoaders
from collab_ext.data.split import TimeSplitter
from collab_ext.feedback import *

METRICS = ['arp','aplt','gini','data_gini','coverage','homogenization','share_enthusiast','utility']
ARMS = dict(greedy=GreedyPolicy(), epsilon=EpsilonGreedyPolicy(0.1), random=RandomPolicy(), ideal=IdealPolicy())
LOOP = dict(n_rounds=10, k=10, epochs_per_round=1, lr=5e-3, choice=RankDiscountChoice(0.1, 3.5), warm=True)

def setup():
    ml = ml100k()
    fans = genre_fans(ml.ratings, ml.items, ['Animation', "Children's"], frac=0.05)
    world = FeedbackWorld.from_movielens(ml, groups=[UserGroup('enthusiast', fans, activity=5.)], oracle=True,
                                         visit_rate=0.5, max_visits=10, n_factors=32, epochs=20, wd=2e-5, seed=0)
    world.true_matrix()
    ratings = ml.ratings[['user','item','rating','timestamp']]
    def make_learner(seed):
        dls = FastCollabDataLoaders.from_df(ratings, splitter=TimeSplitter(valid_pct=0.2), bs=1024, seed=seed, unseen='keep')
        torch.manual_seed(seed)
        learn = collab_learner(dls, n_factors=32, y_range=(0.5, 5.5), wd=0.1)
        quiet_fit(learn, 5, 5e-3, one_cycle=False)
        return learn
    return ml, world, make_learner

def check_claims(res):
    "The issue's claims 1-3 on the seed means and in every seed"
    out = []
    def grow(df, m): return df[df['round']==df['round'].max()][m].to_numpy() - df[df['round']==0][m].to_numpy()
    def last(df, m): return df[df['round']==df['round'].max()][m].to_numpy()
    A = {a: res[res.arm==a].sort_values(['seed','round']) for a in res.arm.unique()}
    hg, hr, he = (grow(A[a], 'homogenization') for a in ('greedy','random','epsilon'))
    ug, ue = (A[a].groupby('seed').utility.mean().to_numpy() for a in ('greedy','epsilon'))
    checks = [
      ('1a greedy homogenization growth >= 4x random', hg >= 4*hr, f"greedy {hg.mean():+.4f} ({hg.mean()/A['greedy'][A['greedy']['round']==0].homogenization.mean():+.0%} of its round-0 level), random {hr.mean():+.4f}"
       + (" -- passes because random's homogenisation falls" if hr.mean() < 0 else "")),
      ('1b greedy cumulative exposure gini > random (round 10)', last(A['greedy'],'gini') > last(A['random'],'gini'),
       f"{last(A['greedy'],'gini').mean():.3f} vs {last(A['random'],'gini').mean():.3f}"),
      ('1c greedy training-data gini > random (round 10)', last(A['greedy'],'data_gini') > last(A['random'],'data_gini'),
       f"{last(A['greedy'],'data_gini').mean():.3f} vs {last(A['random'],'data_gini').mean():.3f}"),
      ('2 enthusiast share grows under greedy, more than random', (grow(A['greedy'],'share_enthusiast') > 0) & (grow(A['greedy'],'share_enthusiast') > grow(A['random'],'share_enthusiast')),
       f"greedy {grow(A['greedy'],'share_enthusiast').mean():+.4f}, random {grow(A['random'],'share_enthusiast').mean():+.4f}"),
      ('3a epsilon cuts homogenization growth >= 30%', he <= 0.7*hg, f"epsilon {he.mean():+.4f} vs greedy {hg.mean():+.4f} (cut {1-he.mean()/hg.mean():.0%})"),
      ('3b epsilon raises cumulative coverage (round 10)', last(A['epsilon'],'coverage') > last(A['greedy'],'coverage'),
       f"{last(A['epsilon'],'coverage').mean():.3f} vs {last(A['greedy'],'coverage').mean():.3f}"),
      ('3c epsilon loses <= 5% of greedy utility (mean over rounds)', ue >= 0.95*ug, f"loss {1-ue.mean()/ug.mean():.1%}"),
    ]
    for name, ok, txt in checks: out.append((name, bool(np.all(ok)), txt, f"{int(np.sum(ok))}/{len(np.atleast_1d(ok))} seeds"))
    return out

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--json', action='store_true'); p.add_argument('--seeds', type=int, default=3)
    p.add_argument('--plot', default='nbs/images/feedback_arms.png'); p.add_argument('--no-variant', action='store_true')
    args = p.parse_args()
    warnings.filterwarnings('ignore', category=CollabWarning)
    t0 = time.time()
    ml, world, make_learner = setup()
    t_world = time.time() - t0
    seeds = list(range(args.seeds))
    res = run_arms(make_learner, world, ARMS, seeds=seeds, progress=False, skip_shown=True, **LOOP)
    t_main = time.time() - t0
    # claim 4: the same seed reproduces identical numbers
    again = run_feedback(make_learner(0), world, ARMS['greedy'], seed=0, quiet=True, skip_shown=True, **LOOP)
    same = again[res.columns.drop(['arm','seed','homogenization_rel'])] \
             .equals(res[(res.arm=='greedy')&(res.seed==0)][res.columns.drop(['arm','seed','homogenization_rel'])].reset_index(drop=True))
    pd.set_option('display.width', 200)
    print(f"world: oracle dot-bias (32 factors) on all {len(ml.ratings):,} ML-100k ratings, noise sd {world.truth.noise:.3f}; "
          f"{len(world.group_pos['enthusiast'])} enthusiasts; built in {t_world:.1f}s")
    cols = ['arp','aplt','gini','coverage','homogenization','data_gini','share_enthusiast','utility','regret','n_train']
    g = res.groupby(['arm','round'], sort=False)[cols]
    tab = g.mean().loc[(slice(None), [0, 5, 10]), :]
    print("\nseed means (round 0, 5, 10):"); print(tab.round(4).to_string())
    sd = g.std().loc[(slice(None), [10]), :]
    print("\nseed std at round 10:"); print(sd.round(4).to_string())
    print("\nhomogenization relative to ideal (round 10):", {a: round(float(v), 3) for a, v in res[res['round']==10].groupby('arm', sort=False).homogenization_rel.mean().items()})
    print("\nclaims:")
    for name, ok, txt, n in check_claims(res): print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {txt} ({n})")
    print(f"  [{'PASS' if same else 'FAIL'}] 4 same seed -> identical metrics (greedy, seed 0 rerun)")
    print(f"  [{'PASS' if t_main < 600 else 'FAIL'}] 4 main experiment wall time {t_main:.0f}s (< 600s), {len(seeds)} seeds x {len(ARMS)} arms")
    if not args.no_variant:
        t1 = time.time()
        var = run_arms(make_learner, world, dict(greedy=ARMS['greedy'], random=ARMS['random']), seeds=seeds, progress=False, skip_shown=False, **LOOP)
        v = var.groupby(['arm','round'], sort=False)[['homogenization','gini','data_gini','share_enthusiast','arp']].mean().loc[(slice(None), [0, 10]), :]
        print(f"\nvariant: declined items offered again (skip_shown=False, the callback's default), greedy vs random ({time.time()-t1:.0f}s):"); print(v.round(4).to_string())
        gv = {a: var[(var.arm==a)&(var['round']==10)].sort_values('seed').share_enthusiast.to_numpy() - var[(var.arm==a)&(var['round']==0)].sort_values('seed').share_enthusiast.to_numpy() for a in ('greedy','random')}
        ok = (gv['greedy'] > 0) & (gv['greedy'] > gv['random'])
        print(f"  [{'PASS' if ok.all() else 'FAIL'}] 2 with skip_shown=False: enthusiast share greedy {gv['greedy'].mean():+.4f}, random {gv['random'].mean():+.4f} ({ok.sum()}/{len(ok)} seeds)")
        t1 = time.time()
        ips = run_arms(make_learner, world, dict(epsilon_ips=ARMS['epsilon']), seeds=seeds, progress=False, skip_shown=True, ips_clip=10., **LOOP)
        both = pd.concat([res, ips])
        cols = ['arp','aplt','gini','coverage','homogenization','data_gini','share_enthusiast','utility']
        v = both[both['round']==10].groupby('arm', sort=False)[cols].mean()
        print(f"\nmitigation: epsilon-greedy with inverse-propensity weighted retraining (weights clipped at 10), round 10 ({time.time()-t1:.0f}s):")
        print(v.round(4).to_string())
    if args.plot:
        import matplotlib; matplotlib.use('Agg')
        fig = plot_feedback(res, ['arp','aplt','gini','coverage','homogenization','data_gini','share_enthusiast','utility'],
                            title='ML-100k feedback loop: 10 rounds, 3 seeds (line: mean, band: min-max)')
        fig.savefig(args.plot, dpi=80); print(f"\nplot: {args.plot}")
    print(f"total wall time {time.time()-t0:.0f}s")
    if args.json: print(json.dumps(arm_curves(res, METRICS)))

if __name__ == '__main__': main()
