"The docs pages show their outputs: every notebook is stored executed, and rendered (nbconvert, as a reader sees it) it shows its tables and plots."
import importlib.util, json, pytest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location('render_docs', ROOT/'tools'/'render_docs.py')
render_docs = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(render_docs)
pytest.importorskip('nbconvert')

PAGES = render_docs.doc_notebooks()
# pages whose point is a plot or a table: (min images, min tables)
SHOWS = {'index': (0, 1), '03_data.core': (0, 1), '05_data.loaders': (0, 1), '07_data.implicit': (0, 1), '22_ce.learner': (1, 1),
         '30_learner': (1, 1), '31_interpret': (2, 1), '44_tabular.coldstart': (1, 1), '53_feedback.arms': (1, 1),
         '71_ranking.learner': (0, 1), 'ch08_data': (0, 1), 'ch08_models': (1, 1), 'ch08_interpret': (2, 1),
         'ratings_as_classes': (1, 1), 'ratings_to_rankings': (1, 1)}
# API pages whose code cells are definitions and plain asserts: on the site their docs are the `show_doc` blocks nbdev adds
# to every exported name at build time, so their stored notebooks have no outputs of their own to show
API_ONLY = {'15_metrics.rating', '16_metrics.level', '21_ce.models', '40_tabular.core', '51_feedback.policy', 'contributing'}

def _code_outputs(nb):
    cells = json.loads(nb.read_text())['cells']
    return sum(len(c.get('outputs', [])) for c in cells if c['cell_type'] == 'code')

def test_pages_found():
    names = {p.stem for p in PAGES}
    assert len(PAGES) >= 40 and 'index' in names
    assert set(SHOWS) | API_ONLY <= names, (set(SHOWS) | API_ONLY) - names
    assert sum(_code_outputs(p) > 0 for p in PAGES) >= len(PAGES) - len(API_ONLY)

@pytest.mark.parametrize('nb', PAGES, ids=lambda p: p.stem)
def test_page_shows_outputs(nb):
    counts = render_docs.page_counts(render_docs.to_html(nb))
    if nb.stem not in API_ONLY:
        assert _code_outputs(nb) > 0, f"{nb.relative_to(ROOT)} is stored without outputs: run python tools/render_docs.py --execute"
        assert counts['outputs'] > 0, counts
    imgs, tables = SHOWS.get(nb.stem, (0, 0))
    assert counts['images'] >= imgs and counts['tables'] >= tables, (nb.stem, counts)

def test_directives_hidden():
    html = render_docs.to_html(ROOT/'nbs'/'10_models.ipynb')
    assert '#| export' not in html and 'default_exp' not in html
