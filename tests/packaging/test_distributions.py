"""pylime everywhere: the distributions `python -m build` makes install and run as documented.

With lime hidden from pkg-config the build gives an sdist and a pure ``py3-none-any`` wheel;
installed into a fresh virtual environment, that wheel runs the README's example and the
interop matrix on the pure-Python reference and says what is missing for the binding. Where
lime is found, the same sdist builds the platform wheel with the binding in it.
"""

from __future__ import annotations

import email.parser
import json
import os
import pathlib
import re
import subprocess
import sys
import venv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

import pylime
from tests.conftest import requires_lime

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
VERSION = pylime.__version__


@dataclass(frozen=True)
class Env:
    """A fresh virtual environment with pylime installed from a wheel."""

    bin: pathlib.Path
    workdir: pathlib.Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run a program of the environment in its own empty working directory."""
        return subprocess.run([str(self.bin / args[0]), *args[1:]], cwd=self.workdir,
                              env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=False)


def _clean_env(no_lime: pathlib.Path) -> dict[str, str]:
    """The user's environment without this checkout on the path, lime hidden from pkg-config."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYLIME_", "PYTHON", "VIRTUAL_ENV"))}
    env["PKG_CONFIG_LIBDIR"] = env["PKG_CONFIG_PATH"] = str(no_lime)
    return env


def _run(args: list[str], env: dict[str, str], cwd: pathlib.Path,
         timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _fresh_env(path: pathlib.Path, wheel: pathlib.Path, env: dict[str, str]) -> Env:
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    _run([str(path / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], env, path)
    workdir = path / "work"
    workdir.mkdir()
    return Env(path / "bin", workdir, env)


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[pathlib.Path, ...]]:
    """sdist and pure wheel built with lime hidden; the hidden-lime environment."""
    top = tmp_path_factory.mktemp("dists")
    no_lime = top / "no-pkg-config"
    no_lime.mkdir()
    out = top / "dist"
    env = _clean_env(no_lime)
    done = _run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], env, top)
    assert "pkg-config finds no lime" in done.stdout + done.stderr
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    yield sdist, wheel, top, no_lime


@pytest.fixture(scope="module")
def pure(dists: tuple[pathlib.Path, ...]) -> Env:
    """The pure wheel installed in a fresh venv where pkg-config finds no lime."""
    _sdist, wheel, top, no_lime = dists
    return _fresh_env(top / "venv-pure", wheel, _clean_env(no_lime))


def test_the_build_gives_an_sdist_and_a_pure_wheel_with_its_metadata(dists):
    """`python -m build` without lime: pylime-V.tar.gz and pylime-V-py3-none-any.whl, no C."""
    sdist, wheel, _top, _ = dists
    assert sdist.name == f"pylime-{VERSION}.tar.gz"
    assert wheel.name == f"pylime-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        metadata = email.parser.Parser().parsestr(
            whl.read(f"pylime-{VERSION}.dist-info/METADATA").decode())
        wheel_info = whl.read(f"pylime-{VERSION}.dist-info/WHEEL").decode()
    assert not [n for n in names if n.endswith((".so", ".pyd", ".c"))]
    assert "pylime/py.typed" in names and f"pylime-{VERSION}.dist-info/licenses/LICENSE" in names
    assert "Root-Is-Purelib: true" in wheel_info
    assert metadata["License-Expression"] == "GPL-3.0-or-later"
    assert metadata["Requires-Python"] == ">=3.11"
    classifiers = metadata.get_all("Classifier")
    assert "Typing :: Typed" in classifiers and "Topic :: Security :: Cryptography" in classifiers
    assert "lime" in metadata["Summary"]


def test_the_pure_wheel_says_which_backends_it_has(pure):
    """`pylime --version` there: the version, no binding (with what to install), the reference."""
    done = pure.run("pylime", "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"pylime {VERSION} ")
    assert "backend lime: not available" in done.stdout and "liblime-dev" in done.stdout
    assert "backend reference: available" in done.stdout
    assert "default backend: reference" in done.stdout


def test_the_readme_example_runs_on_the_reference_from_the_pure_wheel(pure):
    """The README's ten lines, unchanged, print what they say on a machine without liblime."""
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.DOTALL).group(1)
    done = pure.run("python", "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "UNKNOWN b'Hello Bob'"


def test_manager_without_the_binding_raises_a_typed_error_naming_what_to_install(pure):
    """pylime.Manager(...) there raises BackendUnavailableError (an ImportError, a LimeError)
    naming the packages and pointing at the reference; import pylime itself works."""
    code = (
        "import pylime\n"
        "from pylime import *  # the stand-ins keep star imports working\n"
        "from pylime.keyserver import KeyServer\n"
        "try:\n"
        "    pylime.Manager('x.sqlite3', transport=KeyServer())\n"
        "except pylime.BackendUnavailableError as exc:\n"
        "    assert isinstance(exc, ImportError) and isinstance(exc, pylime.LimeError)\n"
        "    print(exc)\n"
        "else:\n"
        "    raise SystemExit('pylime.Manager worked without the binding')\n"
        "try:\n"
        "    from pylime.manager import Manager\n"
        "except pylime.BackendUnavailableError:\n"
        "    print('import refused')\n"
    )
    done = pure.run("python", "-c", code)
    assert done.returncode == 0, done.stderr
    assert "liblime-dev" in done.stdout and 'backend="reference"' in done.stdout
    assert "import refused" in done.stdout


def test_interop_runs_reference_to_reference_and_says_liblime_is_absent(pure):
    """`pylime interop --json` there: green (exit 0) on the reference alone, liblime named absent."""
    done = pure.run("pylime", "interop", "--json", timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    data = json.loads(done.stdout)
    assert data["ok"] is True and data["passed"] == data["total"] > 20
    assert data["backends"] == ["reference"] and data["lime"] is None
    assert any("liblime is absent" in note for note in data["notes"])
    assert {r["curve"] for r in data["results"]} == {"c25519", "c448", "c25519k512",
                                                     "c25519mlk512", "c448mlk1024"}
    assert {r["backends"] for r in data["results"] if r["scenario"] == "one-to-one"} == \
        {"reference→reference"}


@requires_lime
def test_the_sdist_builds_the_platform_wheel_with_the_binding_where_lime_is_found(dists):
    """The same sdist, where pkg-config finds lime 5.1.x: a platform wheel carrying pylime._lime."""
    sdist, _wheel, top, _ = dists
    out = top / "platform"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYLIME_", "PYTHON"))}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(sdist)],
         env, top)
    (wheel,) = out.glob("*.whl")
    assert re.fullmatch(rf"pylime-{re.escape(VERSION)}-cp3\d+-cp3\d+-linux_\w+\.whl", wheel.name)
    with zipfile.ZipFile(wheel) as whl:
        assert [n for n in whl.namelist() if re.fullmatch(r"pylime/_lime\..*so", n)]
    installed = _fresh_env(top / "venv-platform", wheel, env)
    done = installed.run("pylime", "--version")
    assert done.returncode == 0, done.stderr
    assert re.search(r"backend lime: available, liblime 5\.1\.\d+ loaded from /\S+liblime",
                     done.stdout)
    assert "default backend: lime" in done.stdout
