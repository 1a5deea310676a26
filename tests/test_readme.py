"README.md, nbs/index.ipynb and .ci/run agree on the two fresh-machine commands; the public API imports."
import json, os, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
import importlib.util
_spec = importlib.util.spec_from_file_location('make_readme', ROOT/'tools'/'make_readme.py')
make_readme = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(make_readme)

def sh_blocks(text):
    return re.findall(r"```sh\n(.*?)\n```", text, flags=re.S)

def test_readme_opens_with_two_commands_matching_index():
    readme = (ROOT/'README.md').read_text()
    blocks = sh_blocks(readme)
    assert len(blocks) >= 2
    install_run, install_test = blocks[:2]
    assert install_run.startswith('pip install torch==2.13.0') and install_run.endswith('collab_ext train')
    assert install_test.startswith('pip install torch==2.13.0') and 'nbdev-test' in install_test and 'pytest' in install_test
    idx = ''.join(''.join(c['source']) for c in json.loads((ROOT/'nbs'/'index.ipynb').read_text())['cells'])
    assert install_run in idx and install_test in idx
    # the README is what tools/make_readme.py makes of the index (rendered in memory: the checkout is left as it is)
    assert readme == make_readme.render(), "README.md is out of date: run python tools/make_readme.py"

def test_ci_runs_the_readme_commands_in_a_fresh_venv():
    "`.ci/run` makes its own virtual environment (no system site-packages), installs as README says, runs README's test steps"
    readme = (ROOT/'README.md').read_text()
    install_test = sh_blocks(readme)[1]
    steps = [s.strip() for s in install_test.split('&&')]
    ci = (ROOT/'.ci'/'run').read_text()
    lines = [re.sub(r'\s+#\s.*$', '', l).strip() for l in ci.splitlines() if l.strip() and not l.strip().startswith('#')]   # code, no comments
    assert any('-m venv' in l for l in lines) and '--system-site-packages' not in '\n'.join(lines)
    assert steps[0] == 'pip install torch==2.13.0 torchvision==0.28.0' and steps[1] == 'pip install -e ".[dev]"'
    assert 'python -m pip install -q torch==2.13.0 torchvision==0.28.0' in lines
    assert 'python -m pip install -q -e ".[dev]"' in lines
    assert steps[2:] == ['nbdev-test', 'pytest']
    assert 'nbdev-test; nb=$?' in lines and 'pytest; py=$?' in lines
    assert lines.index('nbdev-test; nb=$?') < lines.index('pytest; py=$?')
    wf = (ROOT/'.github'/'workflows'/'test.yaml').read_text()
    assert 'bash .ci/run' in wf and 'pip install' not in wf      # the workflow installs nothing itself

def test_star_import_gives_the_api():
    code = ("from collab_ext import *; import fastai.collab as fc; "
            "names = ['load_movielens','FastCollabDataLoaders','crosstab','ratings_matrix','RandomRatingSplitter','TimeSplitter',"
            "'LastNSplitter','ColdUserSplitter','ColdItemSplitter','unseen_report','synth_movielens','collab_learner','CollabDataLoaders',"
            "'EmbeddingDotBias','Learner','rmse']; missing=[n for n in names if n not in globals()]; assert not missing, missing; "
            "import sys; assert 'torchvision' not in sys.modules")
    subprocess.run([sys.executable, '-c', code], check=True)

def test_quick_start_runs_when_pasted(tmp_path, ml100k_path):
    "README's Quick start, its python blocks pasted in order into a fresh interpreter: imports included, nothing else needed"
    qs = (ROOT/'README.md').read_text().split('## Quick start')[1].split('\n## ')[0]
    code = '\n'.join(re.findall(r"```python\n(.*?)\n```", qs, flags=re.S))
    assert code.startswith('from collab_ext.all import *')
    env = {**os.environ, 'COLLAB_EXT_DATA': str(ml100k_path.parent)}
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]

def test_readme_links_docs_and_examples():
    readme = (ROOT/'README.md').read_text()
    assert 'https://collab-ext.github.io/collab_ext' in readme
    missing = [nb.stem for nb in (ROOT/'nbs'/'examples').glob('*.ipynb') if f'collab_ext/examples/{nb.stem}.html' not in readme]
    assert not missing, f"README does not link the example notebooks {missing}"
