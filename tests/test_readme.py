"README.md, nbs/index.ipynb and .ci/run agree on the two fresh-machine commands; the public API imports."
import json, re, subprocess, sys
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

def test_ci_runs_the_readme_test_command():
    readme = (ROOT/'README.md').read_text()
    test_cmd = sh_blocks(readme)[1].split('&&')[-2:]
    ci = (ROOT/'.ci'/'run').read_text()
    assert 'pip install -q torch==2.13.0' in ci
    assert '&&'.join(test_cmd).strip() in ci

def test_star_import_gives_the_api():
    code = ("from collab_ext import *; import fastai.collab as fc; "
            "names = ['load_movielens','FastCollabDataLoaders','crosstab','ratings_matrix','RandomRatingSplitter','TimeSplitter',"
            "'LastNSplitter','ColdUserSplitter','ColdItemSplitter','unseen_report','synth_movielens','collab_learner','CollabDataLoaders',"
            "'EmbeddingDotBias','Learner','rmse']; missing=[n for n in names if n not in globals()]; assert not missing, missing; "
            "import sys; assert 'torchvision' not in sys.modules")
    subprocess.run([sys.executable, '-c', code], check=True)
