"""The Python client installs offline, as a user would do it, into a plain venv of every
supported Python found on this machine (Debian's /usr/bin/python3, those on PATH, pyenv's
versions): from the wheel `make` builds and from the source directory with `pip install
--no-index ./python`, with setuptools removed from the venv to show nothing needs it. The
source tree is left exactly as it was (no build/, no *.egg-info). Also: the wheel's RECORD
and metadata, reproducibility, the sdist, and the TOML reader used where tomllib is missing.
"""
import base64
import csv
import hashlib
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import BUILD, REPO

PYTHON_DIR = REPO / "python"
WHEEL = Path(os.environ.get("HOTPATCH_WHEEL", ""))
BACKEND = PYTHON_DIR / "backend" / "hotpatch_backend.py"
VERSION = re.search(r'^__version__ = "([^"]+)"', (PYTHON_DIR / "hotpatch" / "__init__.py")
                    .read_text(), re.M).group(1)


def load_backend():
    spec = importlib.util.spec_from_file_location("hotpatch_backend_under_test", BACKEND)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def interpreters():
    """Every distinct Python 3 found: Debian's, PATH's, pyenv's; as (path, (major, minor))."""
    candidates = ["/usr/bin/python3"]
    for name in ["python3"] + [f"python3.{n}" for n in range(8, 16)]:
        found = shutil.which(name)
        if found:
            candidates.append(found)
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates += sorted(str(p) for p in pyenv.glob("3.*/bin/python3"))
    seen, result = set(), []
    for path in candidates:
        r = subprocess.run([path, "-c", "import sys; print(sys.prefix, *sys.version_info[:2])"],
                           capture_output=True, text=True)
        if r.returncode != 0 or r.stdout in seen:     # a pyenv shim of another version
            continue
        seen.add(r.stdout)
        prefix, major, minor = r.stdout.split()
        result.append((path, (int(major), int(minor))))
    return result


def required_minimum():
    text = (PYTHON_DIR / "pyproject.toml").read_text()
    major, minor = re.search(r'requires-python = ">=(\d+)\.(\d+)"', text).groups()
    return int(major), int(minor)


SUPPORTED = [(p, v) for p, v in interpreters() if v >= required_minimum()]
TOO_OLD = [(p, v) for p, v in interpreters() if v < required_minimum() and v >= (3, 6)]


def run(*args, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_INDEX_URL")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env,
                          timeout=300, **kw)


def tree(path):
    """Every file and directory under path, but Python's own bytecode caches."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if "__pycache__" not in p.parts)


def plain_venv(python, where):
    """A venv without the system's packages, and without setuptools even if it came with one."""
    r = run(python, "-m", "venv", where)
    assert r.returncode == 0, r.stderr
    run(where / "bin" / "python", "-m", "pip", "uninstall", "-y", "setuptools")
    r = run(where / "bin" / "python", "-c", "import setuptools")
    assert r.returncode != 0, "setuptools is still importable in the venv"
    return where / "bin"


def check_installed(bin_dir, server, cwd):
    r = run(bin_dir / "hotpatch", "-p", server.pid, "var", "get", "age")
    assert (r.returncode, r.stdout, r.stderr) == (0, "10\n", "")
    r = run(bin_dir / "python", "-c", "import hotpatch, sys; c = hotpatch.Client(int(sys.argv[1]));"
            "print(c.var_get('user_name'), hotpatch.__version__, hotpatch.__file__)", server.pid,
            cwd=cwd)
    assert r.returncode == 0, r.stderr
    name, version, path = r.stdout.split()
    assert (name, version) == ("myname", VERSION)
    assert path.startswith(str(bin_dir.parent)), path


@pytest.mark.parametrize("python,version", SUPPORTED, ids=[f"{v[0]}.{v[1]}:{p}" for p, v in SUPPORTED])
def test_wheel_and_source_install_offline_into_a_plain_venv(python, version, tmp_path, server):
    bin_dir = plain_venv(python, tmp_path / "venv")
    pip = [bin_dir / "python", "-m", "pip"]

    r = run(*pip, "install", "--no-index", WHEEL)
    assert r.returncode == 0, r.stdout + r.stderr
    check_installed(bin_dir, server, tmp_path)
    r = run(*pip, "uninstall", "-y", "hotpatch")
    assert r.returncode == 0 and not (bin_dir / "hotpatch").exists(), r.stderr

    source = tmp_path / "python"
    shutil.copytree(PYTHON_DIR, source, ignore=shutil.ignore_patterns("__pycache__"))
    before = tree(source)
    r = run(*pip, "install", "--no-index", source)
    assert r.returncode == 0, r.stdout + r.stderr
    assert tree(source) == before, "pip install ./python changed the source directory"
    check_installed(bin_dir, server, tmp_path)


def test_pip_install_leaves_the_real_tree_alone(tmp_path, server):
    """The issue's command, on the checked-out python/ itself."""
    bin_dir = plain_venv("/usr/bin/python3", tmp_path / "venv")
    before = tree(PYTHON_DIR)
    r = run(bin_dir / "python", "-m", "pip", "install", "--no-index", "./python", cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert tree(PYTHON_DIR) == before
    assert not (PYTHON_DIR / "build").exists()
    check_installed(bin_dir, server, tmp_path)
    # An editable install points at the tree, and leaves it alone too.
    r = run(bin_dir / "python", "-m", "pip", "install", "--no-index", "-e", "./python", cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run(bin_dir / "python", "-c", "import hotpatch; print(hotpatch.__file__)", cwd=tmp_path)
    assert r.stdout.strip() == str(PYTHON_DIR / "hotpatch" / "__init__.py")
    assert tree(PYTHON_DIR) == before


@pytest.mark.skipif(not TOO_OLD, reason="no Python older than requires-python on this machine")
def test_an_unsupported_python_is_refused_by_name(tmp_path):
    python, version = TOO_OLD[-1]
    r = run(python, "-m", "venv", tmp_path / "venv")
    assert r.returncode == 0, r.stderr
    r = run(tmp_path / "venv" / "bin" / "python", "-m", "pip", "install", "--no-index", WHEEL)
    assert r.returncode != 0 and "requires a different Python" in r.stdout + r.stderr


def test_the_wheel_is_pure_python_and_its_record_is_right():
    assert WHEEL.name == f"hotpatch-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(WHEEL) as zf:
        names = zf.namelist()
        info = f"hotpatch-{VERSION}.dist-info"
        assert all(n.startswith(("hotpatch/", info + "/")) for n in names), names
        assert {"hotpatch/__init__.py", "hotpatch/cli.py", "hotpatch/py.typed"} <= set(names)
        wheel = zf.read(f"{info}/WHEEL").decode()
        assert "Root-Is-Purelib: true" in wheel and "Tag: py3-none-any" in wheel
        meta = zf.read(f"{info}/METADATA").decode()
        assert f"\nVersion: {VERSION}\n" in meta and "\nRequires-Python: >=3.10\n" in meta
        assert "console_scripts" in zf.read(f"{info}/entry_points.txt").decode()
        rows = list(csv.reader(io.StringIO(zf.read(f"{info}/RECORD").decode())))
        assert sorted(r[0] for r in rows) == sorted(names)
        for path, digest, size in rows:
            if path.endswith("RECORD"):
                continue
            data = zf.read(path)
            want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert (digest, int(size)) == (f"sha256={want}", len(data)), path


def test_the_build_is_reproducible_and_current(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    for out in ("a", "b"):
        r = subprocess.run([sys.executable, "-B", BACKEND, "wheel", tmp_path / out],
                           capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
    a, b = (tmp_path / d / WHEEL.name for d in ("a", "b"))
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() == WHEEL.read_bytes(), "build/python's wheel is older than the source"


def test_the_sdist_installs_too(tmp_path, server):
    r = subprocess.run([sys.executable, "-B", BACKEND, "sdist", tmp_path], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    sdist = Path(r.stdout.strip())
    bin_dir = plain_venv("/usr/bin/python3", tmp_path / "venv")
    r = run(bin_dir / "python", "-m", "pip", "install", "--no-index", sdist)
    assert r.returncode == 0, r.stdout + r.stderr
    check_installed(bin_dir, server, tmp_path)


def test_the_toml_reader_for_python_3_10_reads_pyproject_as_tomllib_does():
    tomllib = pytest.importorskip("tomllib")
    backend = load_backend()
    text = (PYTHON_DIR / "pyproject.toml").read_text()
    assert backend.read_simple_toml(text) == tomllib.loads(text)
    with pytest.raises(ValueError):
        backend.read_simple_toml('[project]\nauthors = [{name = "x"}]\n')
