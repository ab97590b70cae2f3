"""The README's ten-line example works as printed."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs_and_prints_what_it_says(tmp_path):
    """The first Python block of the README runs and prints its commented output (on the
    binding where it is built; tests/packaging runs it where it is not)."""
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.DOTALL).group(1)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "UNKNOWN b'Hello Bob'"
