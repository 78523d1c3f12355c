"""The README's Python examples run as written and print what they say."""

import contextlib
import io
import re
import warnings
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)
    printed = out.getvalue().split("\n")
    assert float(printed[0]) > 0.95 and printed[1] == "int32"
    assert namespace["clf"].decision_function(namespace["X_test"][:2]).dtype.name == "int8"
    assert float(printed[-2]) > 0.95  # the CNN's test accuracy
