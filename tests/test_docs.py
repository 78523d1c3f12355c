"""The documentation builds without warnings, and every code example in it runs.

``sphinx-build -W`` also executes the gallery (``docs/examples/plot_*.py``); the
``.. code-block:: python`` examples of the pages are executed here, page by page, and a
page whose example prints ``False`` (the pages print ``True`` for what they claim) fails.
The ``>>>`` examples of the docstrings (shown in the API reference) run as doctests.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib
import importlib.util
import io
import os
import pkgutil
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.rst")
               if not {"_build", "generated", "auto_examples", "_templates"} & set(p.parts))


def python_examples(page: Path) -> list[str]:
    """The bodies of a page's ``.. code-block:: python`` directives, dedented."""
    blocks = []
    lines = page.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() != ".. code-block:: python":
            continue
        indent = len(line) - len(line.lstrip())
        body = []
        for following in lines[i + 1:]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            body.append(following)
        text = "\n".join(body).strip("\n")
        strip = min(len(x) - len(x.lstrip()) for x in text.splitlines() if x.strip())
        # leading blank lines keep tracebacks pointing at the page's own line numbers
        blocks.append("\n" * (i + 1) + "\n".join(x[strip:] for x in text.splitlines()))
    return blocks


def test_pages_have_examples():
    with_examples = [p.name for p in PAGES if python_examples(p)]
    assert len(with_examples) >= 8, with_examples


@pytest.mark.parametrize("page", [p for p in PAGES if python_examples(p)],
                         ids=lambda p: str(p.relative_to(DOCS)))
def test_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for block in python_examples(page):
            exec(compile(block, str(page), "exec"), namespace)
    printed = out.getvalue()
    assert printed.strip(), "the examples print what they show"
    assert not re.search(r"\bFalse\b", printed), printed


def test_sphinx_build_without_warnings(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "MPLBACKEND": "Agg"})
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    html = tmp_path / "html"
    assert (html / "generated" / "sknitro.NitroMLPClassifier.html").exists()
    gallery_images = list((html / "_images").glob("sphx_glr_plot_*.png"))
    assert len(gallery_images) >= 3, gallery_images


def docstring_modules() -> list[str]:
    """sknitro's modules whose docstrings hold ``>>>`` examples (shown in the API reference)."""
    import sknitro

    names = ["sknitro"] + [m.name for m in pkgutil.walk_packages(sknitro.__path__, "sknitro.")]
    sources = {n: Path(importlib.util.find_spec(n).origin) for n in names}
    return sorted(n for n, path in sources.items() if path.suffix == ".py" and ">>>" in path.read_text())


@pytest.mark.parametrize("name", docstring_modules())
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0, result
