"""hotpatch_backend — the build backend of the hotpatch Python package (PEP 517 and PEP 660).

Why not setuptools: installing offline must work in a plain venv of any Python the package
supports, and such a venv has no setuptools (Python 3.12 and later) or no `wheel` (pip then
stops with "invalid command 'bdist_wheel'"), and nothing can be fetched. The package is pure
Python with no dependencies, so making its wheel is a zip file of its modules and four small
metadata files; this module does exactly that with the standard library, and declares no build
requirements, so `pip install --no-index ./python` needs nothing but pip. It writes only into
the directory pip gives it: no build/ or *.egg-info is left in the source tree.

Metadata comes from pyproject.toml's [project] table; the version from hotpatch/__init__.py
(`__version__`, the one place it is written; the C client of the release reports the same).
Archives are reproducible: sorted entries, fixed permissions, and the time of
SOURCE_DATE_EPOCH (else 1980-01-01, the earliest a zip can hold).

Run directly for the build's wheel (`make` does this):
    python3 python/backend/hotpatch_backend.py wheel OUTPUT_DIR     prints the wheel's path
    python3 python/backend/hotpatch_backend.py sdist OUTPUT_DIR
"""
import base64
import gzip
import hashlib
import io
import os
import re
import sys
import tarfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent          # python/
PACKAGE = "hotpatch"
PACKAGE_FILES = ("*.py", "py.typed")


# ---- reading pyproject.toml -----------------------------------------------------------------

def load_toml(text):
    """pyproject.toml as a dict: tomllib on Python 3.11+, else read_simple_toml()."""
    try:
        import tomllib
    except ImportError:
        return read_simple_toml(text)
    return tomllib.loads(text)


def read_simple_toml(text):
    """The part of TOML this project's pyproject.toml uses, for Python 3.10 (no tomllib):
    [table] and [dotted.table] headers, and `key = value` where value is a "string", a number,
    true/false, or an array of strings that may span lines. Anything else is an error, so a
    pyproject.toml that outgrows this reader says so instead of being misread."""
    root, table = {}, None
    lines = iter(text.splitlines())
    for line in lines:
        line = strip_comment(line).strip()
        if not line:
            continue
        m = re.fullmatch(r"\[([A-Za-z0-9_.-]+)\]", line)
        if m:
            table = root
            for part in m.group(1).split("."):
                table = table.setdefault(part, {})
            continue
        key, sep, value = line.partition("=")
        if not sep or table is None:
            raise ValueError(f"pyproject.toml: cannot read {line!r}")
        if value.strip().startswith("[") and not value.strip().endswith("]"):
            for more in lines:
                value += " " + strip_comment(more).strip()
                if value.strip().endswith("]"):
                    break
        table[key.strip().strip('"')] = toml_value(value.strip())
    return root


def strip_comment(line):
    """The line without a # comment (a # inside a "string" is kept)."""
    in_string = False
    for i, ch in enumerate(line):
        if ch == '"':
            in_string = not in_string
        elif ch == "#" and not in_string:
            return line[:i]
    return line


def toml_value(text):
    if text.startswith("[") and text.endswith("]"):
        string = r'"(?:[^"\\]|\\.)*"'
        if re.sub(string, "", text[1:-1]).replace(",", "").strip():
            raise ValueError(f"pyproject.toml: only arrays of strings are supported: {text!r}")
        return [toml_value(item) for item in re.findall(string, text[1:-1])]
    if re.fullmatch(r'"(?:[^"\\]|\\.)*"', text):
        return text[1:-1].encode().decode("unicode_escape")
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    raise ValueError(f"pyproject.toml: unsupported value {text!r}")


def project():
    """The [project] table, with the version filled in from the package."""
    meta = dict(load_toml((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"])
    init = (ROOT / PACKAGE / "__init__.py").read_text(encoding="utf-8")
    meta["version"] = re.search(r'^__version__ = "([^"]+)"', init, re.M).group(1)
    return meta


# ---- what goes into the archives ------------------------------------------------------------

def package_files():
    """The package's files as (path in the archive, bytes), sorted."""
    found = set()
    for pattern in PACKAGE_FILES:
        found.update(p for p in (ROOT / PACKAGE).glob(pattern) if p.is_file())
    return [(f"{PACKAGE}/{p.name}", p.read_bytes()) for p in sorted(found)]


def metadata_text(meta):
    """The core metadata (METADATA in a wheel, PKG-INFO in an sdist), version 2.1."""
    lines = ["Metadata-Version: 2.1", f"Name: {meta['name']}", f"Version: {meta['version']}",
             f"Summary: {meta['description']}"]
    if meta.get("requires-python"):
        lines.append(f"Requires-Python: {meta['requires-python']}")
    lines += [f"Requires-Dist: {d}" for d in meta.get("dependencies", [])]
    lines += [f"Classifier: {c}" for c in meta.get("classifiers", [])]
    readme = meta.get("readme")
    if readme:
        lines.append("Description-Content-Type: text/markdown")
        return "\n".join(lines) + "\n\n" + (ROOT / readme).read_text(encoding="utf-8")
    return "\n".join(lines) + "\n"


def dist_info_files(meta):
    """The .dist-info files other than RECORD, as (name, bytes). (No top_level.txt: that is
    setuptools' own, and nothing reading a wheel needs it.)"""
    files = [("METADATA", metadata_text(meta).encode()),
             ("WHEEL", b"Wheel-Version: 1.0\nGenerator: hotpatch_backend\n"
                       b"Root-Is-Purelib: true\nTag: py3-none-any\n")]
    scripts = meta.get("scripts", {})
    if scripts:
        entries = "".join(f"{name} = {target}\n" for name, target in sorted(scripts.items()))
        files.append(("entry_points.txt", f"[console_scripts]\n{entries}".encode()))
    return files


def dist_name(meta):
    return f"{meta['name'].replace('-', '_')}-{meta['version']}"


def archive_epoch():
    """The time stamp of every archive entry (reproducible builds), in seconds."""
    return max(int(os.environ.get("SOURCE_DATE_EPOCH", "315532800")), 315532800)


def archive_time():
    return time.gmtime(archive_epoch())[:6]


def record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}\n"


def write_wheel(directory, entries, meta):
    """A wheel of `entries` (archive path, bytes) plus the dist-info; returns its file name."""
    info = f"{dist_name(meta)}.dist-info"
    entries = list(entries) + [(f"{info}/{n}", d) for n, d in dist_info_files(meta)]
    record = "".join(record_line(n, d) for n, d in entries) + f"{info}/RECORD,,\n"
    entries.append((f"{info}/RECORD", record.encode()))
    name = f"{dist_name(meta)}-py3-none-any.whl"
    with zipfile.ZipFile(Path(directory) / name, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in entries:
            entry = zipfile.ZipInfo(path, date_time=archive_time())
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(entry, data)
    return name


# ---- the PEP 517 / PEP 660 hooks ------------------------------------------------------------

def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    meta = project()
    info = Path(metadata_directory) / f"{dist_name(meta)}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    for name, data in dist_info_files(meta):
        (info / name).write_bytes(data)
    return info.name


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return write_wheel(wheel_directory, package_files(), project())


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    """A wheel holding only a .pth file that puts this source directory on sys.path."""
    pth = (f"{PACKAGE}_editable.pth", (str(ROOT) + "\n").encode())
    return write_wheel(wheel_directory, [pth], project())


def build_sdist(sdist_directory, config_settings=None):
    meta = project()
    base = dist_name(meta)
    files = [("pyproject.toml", (ROOT / "pyproject.toml").read_bytes()),
             ("PKG-INFO", metadata_text(meta).encode()),
             ("backend/hotpatch_backend.py", Path(__file__).read_bytes())]
    if meta.get("readme"):
        files.append((meta["readme"], (ROOT / meta["readme"]).read_bytes()))
    files += package_files()
    name = f"{base}.tar.gz"
    with open(Path(sdist_directory) / name, "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=archive_epoch()) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for path, data in sorted(files):
            entry = tarfile.TarInfo(f"{base}/{path}")
            entry.size, entry.mode, entry.mtime = len(data), 0o644, archive_epoch()
            tf.addfile(entry, io.BytesIO(data))
    return name


def main(argv):
    if len(argv) != 3 or argv[1] not in ("wheel", "sdist"):
        print("usage: hotpatch_backend.py wheel|sdist OUTPUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[2])
    out.mkdir(parents=True, exist_ok=True)
    name = (build_wheel if argv[1] == "wheel" else build_sdist)(str(out))
    print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
