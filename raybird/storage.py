"""Where recordings come from and where tables go: local paths, globs, tar/zip archives,
``s3://`` prefixes and manifest files, all through fsspec (s3fs for S3).

Discovery only lists names (cheap, on the driver); reading happens in Ray tasks. A source
inside an archive is written ``archive.tar::member.wav``.
"""
from __future__ import annotations

import glob
import hashlib
import os
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Iterator

import fsspec

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip")
MANIFEST_SUFFIXES = (".manifest", ".lst", ".list")
# Files next to recordings that are labels or notes, never recordings themselves.
SIDE_SUFFIXES = (".txt", ".csv", ".json", ".xml", ".npz", ".png", ".jpg", ".jpeg", ".md",
                 ".pdf", ".parquet", ".yaml", ".yml", ".log", ".html")
MEMBER_SEP = "::"
MAX_MEMBER_BYTES = 4 * 1024**3  # a member declaring more than this is refused, not read


@dataclass
class Unit:
    """A piece of input handled by one task: a single file, or a whole archive."""

    uri: str
    kind: str  # "file" | "archive"
    side_files: list[str] = field(default_factory=list)  # candidate label files next to it


def storage_options() -> dict:
    """fsspec options for S3, from the environment (endpoint for S3-compatible stores)."""
    endpoint = os.environ.get("RAYBIRD_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
    return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}


def filesystem(uri: str):
    """``(fsspec filesystem, path)`` for a URI or local path."""
    if uri.startswith("s3://"):
        fs = fsspec.filesystem("s3", **storage_options())
        return fs, uri[len("s3://"):]
    return fsspec.filesystem("file"), os.path.abspath(uri)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if base.startswith("s3://") else os.path.join(base, *parts)


def arrow_filesystem(uri: str):
    """``(pyarrow filesystem, path)`` for Ray Data readers and writers."""
    import pyarrow.fs as pafs
    fs, path = filesystem(uri)
    if uri.startswith("s3://"):
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path
    return pafs.LocalFileSystem(), path


def recording_id(source: str) -> str:
    """Stable id of a recording: hash of its source URI (including the archive member)."""
    return hashlib.sha1(source.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def suffix(name: str) -> str:
    low = name.lower()
    for s in ARCHIVE_SUFFIXES:
        if low.endswith(s):
            return s
    return PurePosixPath(low).suffix


def is_hidden(name: str) -> bool:
    return PurePosixPath(name).name.startswith(".")


def is_side_file(name: str) -> bool:
    return suffix(name) in SIDE_SUFFIXES


def is_bsd_derived(name: str) -> bool:
    """BirdSoundsDenoising's ``Denoised_audios/`` are outputs of its masks, not recordings."""
    return PurePosixPath(name.replace(os.sep, "/")).parent.name == "Denoised_audios"


def _expand(uri: str) -> list[str]:
    """All file URIs under one input (folder walk, glob, prefix, or the file itself)."""
    fs, path = filesystem(uri)
    scheme = "s3://" if uri.startswith("s3://") else ""
    if any(c in uri for c in "*?["):
        if scheme:
            return sorted(scheme + p for p in fs.glob(path) if fs.isfile(p))
        return sorted(os.path.abspath(p) for p in glob.glob(uri, recursive=True) if os.path.isfile(p))
    if scheme:
        if fs.isfile(path):
            return [uri]
        return sorted(scheme + p for p in fs.find(path))
    if os.path.isdir(path):
        out = []
        for root, dirs, files in os.walk(path, followlinks=False):  # no symlink loops
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            out += [os.path.join(root, f) for f in sorted(files)]
        return out
    if os.path.lexists(path):
        return [path]
    raise FileNotFoundError(f"input not found: {uri}")


def read_manifest(uri: str) -> list[str]:
    """One URI per line; blank lines and ``#`` comments ignored; relative paths are taken
    relative to the manifest's folder."""
    fs, path = filesystem(uri)
    base = uri.rsplit("/", 1)[0] if uri.startswith("s3://") else os.path.dirname(path)
    out = []
    with fs.open(path, "rt") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line if line.startswith("s3://") or os.path.isabs(line) else join(base, line))
    return out


def discover(inputs: list[str]) -> list[Unit]:
    """Expand inputs into units. Side files (labels) are attached to the recordings of the same
    folder; hidden files are skipped. Every other file becomes a unit: if it is not audio, the
    task that reads it reports so in the errors table."""
    files: list[str] = []
    for item in inputs:
        if suffix(item) in MANIFEST_SUFFIXES:
            for entry in read_manifest(item):
                files += _expand(entry)
        else:
            files += _expand(item)
    seen, units = set(), []
    side_by_dir: dict[str, list[str]] = {}
    for f in files:
        if is_side_file(f):
            side_by_dir.setdefault(f.rsplit("/", 1)[0], []).append(f)
    for f in files:
        if f in seen or is_hidden(f) or is_side_file(f) or is_bsd_derived(f):
            continue
        seen.add(f)
        kind = "archive" if suffix(f) in ARCHIVE_SUFFIXES else "file"
        units.append(Unit(f, kind))
    for u in units:  # labels may sit in the recording's folder or a sibling folder (pykanto, BSD)
        folder = u.uri.rsplit("/", 1)[0]
        parent = folder.rsplit("/", 1)[0]
        u.side_files = [s for d, fs_ in side_by_dir.items() if d == folder or d.rsplit("/", 1)[0] == parent
                        for s in fs_]
    return units


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as f:
        return f.read()


def unsafe_member_name(name: str) -> bool:
    p = PurePosixPath(name.replace("\\", "/"))
    return p.is_absolute() or ".." in p.parts


def iter_archive(uri: str) -> Iterator[tuple[str, bytes | Exception]]:
    """Yield ``(member name, bytes)`` for every regular member of a tar or zip archive, read one
    at a time from the stream (nothing is extracted to disk). A member that cannot be read
    yields ``(name, exception)`` instead, so the caller can record it and go on."""
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as raw:
        if suffix(uri) == ".zip":
            with zipfile.ZipFile(raw) as zf:
                for zi in zf.infolist():
                    if zi.is_dir():
                        continue
                    if zi.file_size > MAX_MEMBER_BYTES:
                        yield zi.filename, ValueError(
                            f"archive member declares {zi.file_size} bytes (limit {MAX_MEMBER_BYTES})")
                        continue
                    try:
                        yield zi.filename, zf.read(zi)
                    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
                        yield zi.filename, e
            return
        with tarfile.open(fileobj=raw, mode="r|*") as tf:  # streaming mode: one pass, no seeks
            for ti in tf:
                if not ti.isreg():
                    continue
                if ti.size > MAX_MEMBER_BYTES:
                    yield ti.name, ValueError(f"archive member declares {ti.size} bytes (limit {MAX_MEMBER_BYTES})")
                    continue
                try:
                    yield ti.name, tf.extractfile(ti).read()
                except (tarfile.TarError, OSError, EOFError) as e:
                    yield ti.name, e
