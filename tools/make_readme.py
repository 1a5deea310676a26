"""Write README.md from nbs/index.ipynb without Quarto (nbdev-readme needs Quarto, which is not installable here).

Markdown cells are copied as they are; visible code cells become ```python blocks; `#| hide` cells are left out.
The docs workflow still renders the site from the notebooks with Quarto."""
import json, re
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def render() -> str:
    "The README text made from nbs/index.ipynb"
    nb = json.loads((root/'nbs'/'index.ipynb').read_text())
    out = []
    for c in nb['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'markdown': out.append(src)
        elif c['cell_type'] == 'code' and not re.match(r'\s*#\|\s*hide', src):
            lines = [l for l in src.splitlines() if not l.startswith('#|')]
            out.append('```python\n' + '\n'.join(lines) + '\n```')
    return ('<!-- generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file -->\n\n'
            + '\n\n'.join(out) + '\n')

if __name__ == '__main__':
    (root/'README.md').write_text(render())
    print('README.md written')
