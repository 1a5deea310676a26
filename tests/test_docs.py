"The docs pages show their outputs: every notebook is stored executed, and rendered (nbconvert, as a reader sees it) it shows its tables and plots."
import importlib.util, json, pytest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location('render_docs', ROOT/'tools'/'render_docs.py')
render_docs = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(render_docs)
pytest.importorskip('nbconvert')

PAGES = render_docs.doc_notebooks()
# pages whose point is a plot or a table: (min images, min tables)
SHOWS = {'index': (0, 1), '03_data.core': (0, 1), '05_data.loaders': (0, 1), '22_ce.learner': (1, 1), '31_interpret': (2, 1),
         '44_tabular.coldstart': (1, 1), '53_feedback.arms': (1, 1), 'ch08_interpret': (2, 1), 'ratings_as_classes': (1, 1),
         'ratings_to_rankings': (2, 1), '17_metrics.ranking': (0, 1)}

def _code_outputs(nb):
    cells = json.loads(nb.read_text())['cells']
    return sum(len(c.get('outputs', [])) for c in cells if c['cell_type'] == 'code')

def test_pages_found():
    names = {p.stem for p in PAGES}
    assert len(PAGES) >= 30 and 'index' in names
    assert set(SHOWS) <= names, set(SHOWS) - names

@pytest.mark.parametrize('nb', PAGES, ids=lambda p: p.stem)
def test_page_shows_outputs(nb):
    assert _code_outputs(nb) > 0, f"{nb.relative_to(ROOT)} is stored without outputs: run python tools/render_docs.py --execute"
    counts = render_docs.page_counts(render_docs.to_html(nb))
    assert counts['outputs'] > 0, counts
    imgs, tables = SHOWS.get(nb.stem, (0, 0))
    assert counts['images'] >= imgs and counts['tables'] >= tables, (nb.stem, counts)

def test_directives_hidden():
    html = render_docs.to_html(ROOT/'nbs'/'10_models.ipynb')
    assert '#| export' not in html and 'default_exp' not in html
