"""Render the docs notebooks to HTML without Quarto (not installable here), count what each page shows, take screenshots.

    python tools/render_docs.py [--execute] [--shots index 05_data.loaders ...] [--out _html]

`--execute` runs every notebook first and stores it with its outputs (as fastai's are stored), then `nbdev-clean` tidies
the metadata; the docs site (Quarto, in the deploy workflow) shows these stored outputs. Without it the stored outputs
are rendered as they are. Pages go to `_html/` (ignored by git); `--shots` takes full-page PNGs with headless Chromium."""
import argparse, os, re, shutil, subprocess, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
nbs = root/'nbs'

def doc_notebooks() -> list:
    "Every docs page: the notebooks under nbs/, in reading order"
    return sorted(p for p in nbs.rglob('*.ipynb') if '.ipynb_checkpoints' not in p.parts and not p.name.startswith('_'))

_skip = re.compile(r'^\s*#\s*\|\s*(eval:\s*false|notest|slow)\b', re.M)

def execute(nb: Path, timeout: int = 900):
    "Run `nb` in its own folder, as `nbdev-test` would (cells flagged `eval: false`/`notest`/`slow` are not run), and store it with its outputs"
    import nbformat
    from nbclient import NotebookClient
    book = nbformat.read(nb, as_version=4)
    held = {i: c.source for i,c in enumerate(book.cells) if c.cell_type == 'code' and _skip.search(c.source)}
    for i in held: book.cells[i].source = ''
    NotebookClient(book, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(nb.parent)}}).execute()
    for i,src in held.items(): book.cells[i].source,book.cells[i].outputs = src,[]
    nbformat.write(book, nb)

_directive = re.compile(r'^\s*#\s*\|\s*(.*)$')

def as_page(book):
    "What nbdev's docs keep of a notebook: no `#| hide` cells, no directives, `show_doc` and `echo: false` inputs hidden"
    cells = []
    for c in book.cells:
        lines = c.source.splitlines()
        flags = ' '.join(m.group(1) for l in lines if (m := _directive.match(l)))
        if c.cell_type == 'code':
            if re.search(r'\bhide\b|default_exp', flags): continue
            c.source = '\n'.join(l for l in lines if not _directive.match(l)).strip()
            if 'echo: false' in flags or c.source.startswith('show_doc('): c.metadata.setdefault('tags', []).append('remove_input')
            if not c.source and not c.get('outputs'): continue
        cells.append(c)
    book.cells = cells
    return book

def to_html(nb: Path) -> str:
    "The page a reader sees for `nb` (stored outputs, no execution)"
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor
    exp = HTMLExporter(template_name='lab')
    exp.register_preprocessor(TagRemovePreprocessor(remove_input_tags={'remove_input'}, enabled=True), enabled=True)
    exp.exclude_input_prompt = exp.exclude_output_prompt = True
    body, _ = exp.from_notebook_node(as_page(nbformat.read(nb, as_version=4)))
    return body

def page_counts(html: str) -> dict:
    "What a rendered page shows: images (plots), tables and outputs, counted in the page body"
    body = html.split('<body', 1)[-1]
    return dict(images=len(re.findall(r'<img\b', body)) + len(re.findall(r'<svg\b', body)),
                tables=len(re.findall(r'<table\b', body)), outputs=len(re.findall(r'class="jp-OutputArea-child\b', body)))

def chromium() -> str|None:
    "The headless Chromium binary, if installed (Debian package `chromium`)"
    return shutil.which('chromium') or shutil.which('chromium-browser')

def screenshot(html_path: Path, png: Path, width=1280, height=2400):
    "Full-width PNG of a rendered page, as a reader's browser shows it"
    subprocess.run([chromium(), '--headless=new', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
                    f'--window-size={width},{height}', f'--screenshot={png}', html_path.as_uri()],
                   check=True, capture_output=True, timeout=120)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--execute', action='store_true', help='run every notebook and store its outputs first')
    p.add_argument('--only', nargs='*', default=None, help='notebook stems to handle (default: all)')
    p.add_argument('--shots', nargs='*', default=[], help='notebook stems to screenshot')
    p.add_argument('--out', default=str(root/'_html'))
    a = p.parse_args()
    out = Path(a.out); out.mkdir(exist_ok=True)
    books = [b for b in doc_notebooks() if a.only is None or b.stem in a.only]
    for nb in books:
        if a.execute: execute(nb); print('executed', nb.relative_to(root), flush=True)
        html = to_html(nb)
        (out/f'{nb.stem}.html').write_text(html)
        print(f'{str(nb.relative_to(nbs)):45s}', page_counts(html), flush=True)
    if a.execute and a.only is None: subprocess.run(['nbdev-clean'], cwd=root, check=True)   # with --only, run nbdev-clean yourself
    for s in a.shots:
        screenshot(out/f'{s}.html', out/f'{s}.png'); print('screenshot', out/f'{s}.png')

if __name__ == '__main__': main()
