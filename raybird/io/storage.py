"""Where recordings come from and where tables go: local paths, globs, tar/zip archives,
``s3://`` prefixes and manifest files, all through fsspec (s3fs for S3).

Discovery only lists names (cheap, on the driver); reading happens in Ray tasks. A source
inside an archive is written ``archive.tar::member.wav``.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import stat
import tarfile
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Iterable, Iterator, Optional

import fsspec

from raybird.extras import require
from raybird.io.redaction import describe, redact

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip")
MANIFEST_SUFFIXES = (".manifest", ".lst", ".list")
# Files next to recordings that are labels or notes, never recordings themselves.
SIDE_SUFFIXES = (
    ".txt",
    ".csv",
    ".json",
    ".xml",
    ".npz",
    ".png",
    ".jpg",
    ".jpeg",
    ".md",
    ".pdf",
    ".parquet",
    ".yaml",
    ".yml",
    ".log",
    ".html",
    ".textgrid",
    ".mat",
)
MEMBER_SEP = "::"
MAX_MEMBER_BYTES = 4 * 1024**3  # a member declaring more than this is refused, not read
URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
EMPTY_FILE = ("decode", "empty file (0 bytes)")  # (stage, reason) of a zero-byte input
# File names that are not valid UTF-8: os.fsdecode turns each bad byte into a lone surrogate
# (U+DC80..U+DCFF), which Arrow strings cannot hold. URIs carry U+EF80..U+EFFF instead (the
# OPTU-8 convention), so every table can store them; local_path() gives back the bytes on disk.
_TO_TEXT = {0xDC00 + b: 0xEF00 + b for b in range(0x80, 0x100)}
_TO_PATH = {v: k for k, v in _TO_TEXT.items()}


def as_text(name: str) -> str:
    """A file name as it appears in URIs and tables (valid UTF-8 whatever the bytes on disk)."""
    return name.translate(_TO_TEXT)


def local_path(uri: str) -> str:
    """The path on disk of a local URI made by :func:`as_text`."""
    return uri.translate(_TO_PATH)


def local_problem(uri: str) -> tuple[str, str] | None:
    """``(stage, reason)`` when a local input cannot be read as a recording, else None. Opens
    the file rather than asking os.access, which says yes to root and ignores ACLs."""
    path = local_path(uri)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # FIFOs and devices would block or never end
            return "read", "not a regular file"
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        return "read", "broken symbolic link" if os.path.islink(path) else "not found"
    except OSError as e:
        return "read", describe(e)
    return EMPTY_FILE if size == 0 else None


@dataclass
class Unit:
    """A piece of input handled by one task: a single file, or a whole archive."""

    uri: str
    kind: str  # "file" | "archive"
    side_files: list[str] = field(default_factory=list)  # candidate label files next to it
    rel: str = ""  # its path under its input's parent folder: names its per-recording outputs


def safe_relative(path: str) -> str:
    """``path`` as components that stay below the folder it is joined to: empty, ``.`` and
    ``..`` components dropped (an S3 key or archive member name may hold them literally)."""
    return "/".join(p for p in path.replace("\\", "/").split("/") if p not in ("", ".", ".."))


def mirrored(uri: str) -> str:
    """A URI as a relative path: scheme, leading ``/`` and drive dropped (``s3://b/k`` -> ``b/k``)."""
    path = uri[5:] if uri.startswith("s3://") else os.path.splitdrive(os.path.abspath(uri))[1].replace(os.sep, "/")
    return safe_relative(path)


def _base(item: str) -> str:
    """The folder an input's relative names start under: the parent of the folder (or prefix)
    given, so the input's own name leads them (two inputs' same-named files stay apart); for a
    glob, the parent of its last folder before the first wildcard; for a file, its folder."""
    item = item.rstrip("/") if item.startswith("s3://") else local_path(item).rstrip(os.sep)
    if any(c in item for c in "*?["):
        item = item[: min(item.find(c) for c in "*?[" if c in item)].rsplit("/", 1)[0]
    if item.startswith("s3://"):
        return item.rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(item))


def _relative(uri: str, base: str) -> str:
    if uri.startswith("s3://"):
        return uri[len(base) :].lstrip("/") if uri.startswith(base + "/") else mirrored(uri)
    rel = os.path.relpath(os.path.abspath(local_path(uri)), base)
    return mirrored(uri) if rel.startswith("..") else rel.replace(os.sep, "/")


def member_rel(unit: Unit, source: str) -> str:
    """The relative name of one recording of a unit (an archive member under the archive's name,
    its suffix dropped)."""
    if MEMBER_SEP not in source:
        return safe_relative(unit.rel) or mirrored(source)
    rel = safe_relative(unit.rel) or mirrored(unit.uri)
    return f"{rel[: len(rel) - len(suffix(rel))]}/{safe_relative(source.split(MEMBER_SEP, 1)[1])}"


def storage_options() -> dict:
    """fsspec options for S3, from the environment (endpoint for S3-compatible stores)."""
    endpoint = os.environ.get("RAYBIRD_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
    return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}


def filesystem(uri: str):
    """``(fsspec filesystem, path)`` for a URI or local path."""
    if uri.startswith("s3://"):
        if "@" in uri.split("/", 3)[2]:
            raise ValueError("credentials in the URL are refused: give them through the environment")
        require("s3fs")
        fs = fsspec.filesystem("s3", **storage_options())
        return fs, uri[len("s3://") :]
    scheme = URL_SCHEME.match(uri)
    if scheme and scheme.group(1).lower() != "file":
        raise ValueError(f"unsupported URL scheme {scheme.group(1)!r} (local paths and s3:// only)")
    return fsspec.filesystem("file"), os.path.abspath(local_path(uri[7:] if scheme else uri))


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
    """The lower-case suffix of a name (``.tar.gz`` whole); string operations, not pathlib: a
    manifest of a million entries asks this of each."""
    low = name.lower()
    for s in ARCHIVE_SUFFIXES:
        if low.endswith(s):
            return s
    base = low.rsplit("/", 1)[-1]
    dot = base.rfind(".")
    return base[dot:] if 0 < dot < len(base) - 1 else ""


def is_hidden(name: str) -> bool:
    return name.rsplit("/", 1)[-1].startswith(".")


def is_side_file(name: str) -> bool:
    return suffix(name) in SIDE_SUFFIXES


def is_bsd_derived(name: str) -> bool:
    """BirdSoundsDenoising's ``Denoised_audios/`` are outputs of its masks, not recordings."""
    parts = name.replace(os.sep, "/").rsplit("/", 2)
    return len(parts) > 1 and parts[-2] == "Denoised_audios"


def _expand(uri: str) -> Iterator[str]:
    """All file URIs under one input (folder walk, glob, prefix, or the file itself), as they
    are listed: a local folder a folder at a time, an S3 prefix a top-level folder at a time
    (one paginated listing each), so work can start before a large input is listed."""
    fs, path = filesystem(uri)
    scheme = "s3://" if uri.startswith("s3://") else ""
    if any(c in uri for c in "*?["):
        if scheme:
            yield from sorted(scheme + p for p in fs.glob(path) if fs.isfile(p))
        else:
            files = glob.glob(local_path(uri), recursive=True)
            yield from sorted(as_text(os.path.abspath(p)) for p in files if os.path.isfile(p))
    elif scheme:
        if fs.isfile(path):
            yield uri
            return
        try:
            entries = fs.ls(path, detail=True, refresh=True)
        except FileNotFoundError:
            raise FileNotFoundError(f"input not found: {redact(uri)}") from None
        for entry in sorted(entries, key=lambda e: e["name"]):
            if entry["type"] == "directory":
                yield from sorted(scheme + p for p in fs.find(entry["name"]) if not p.endswith("/"))  # no markers
            elif not entry["name"].endswith("/"):
                yield scheme + entry["name"]
    elif os.path.isdir(path):
        # Symbolic links to folders are not followed (no loops, nothing listed twice); links to
        # files are listed, and one that loops or dangles becomes an error row when read.
        for root, dirs, files in os.walk(path, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            yield from (as_text(os.path.join(root, f)) for f in sorted(files))
    elif os.path.lexists(path):
        yield as_text(path)
    else:
        raise FileNotFoundError(f"input not found: {redact(uri)}")


def _expand_entry(entry: str) -> list[str]:
    """A manifest line: folders, prefixes (ending in ``/``) and globs are expanded; anything
    else is taken as a file as it stands, without asking the store (a listing of millions of
    files costs no request per line), and one that is missing, gone or refused becomes an
    error row when it is read."""
    if (
        entry.endswith("/")
        or any(c in entry for c in "*?[")
        or (not URL_SCHEME.match(entry) and os.path.isdir(local_path(entry)))
    ):
        try:
            return list(_expand(entry))
        except (OSError, ValueError):
            return [entry]
    return [entry]


def read_manifest(uri: str) -> Iterator[str]:
    """One URI per line, as the file is read; blank lines and ``#`` comments ignored; relative
    paths are taken relative to the manifest's folder."""
    fs, path = filesystem(uri)
    base = uri.rsplit("/", 1)[0] if uri.startswith("s3://") else os.path.dirname(path)
    with fs.open(path, "rt", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            line = as_text(line.strip())
            if line and not line.startswith("#"):
                yield line if URL_SCHEME.match(line) or os.path.isabs(line) else join(base, line)


INPUTS_HELP = "folders, globs, .tar/.tar.gz/.zip, s3:// prefixes, manifest files"  # what discover takes


def listed(inputs: list[str]) -> Iterator[tuple[str, Optional[str]]]:
    """``(file URI, its name under its input's parent folder)`` for every file of ``inputs``, as
    it is listed; a manifest's entries have no such name (None: they share no folder)."""
    for item in inputs:
        if suffix(item) in MANIFEST_SUFFIXES:
            for entry in read_manifest(item):
                yield from ((f, None) for f in _expand_entry(entry))
        else:
            base = _base(item)
            yield from ((f, _relative(f, base)) for f in _expand(item))


def _recordings(files: Iterable[tuple[str, Optional[str]]]) -> Iterator[Unit]:
    """A unit for each listed file that may be a recording, once each: hidden files, side files
    and BirdSoundsDenoising's derived audio are skipped. Relative names: :class:`Unit`."""
    seen: set = set()
    for f, rel in files:
        if f in seen or is_hidden(f) or is_side_file(f) or is_bsd_derived(f):
            continue
        seen.add(f)
        yield Unit(f, "archive" if suffix(f) in ARCHIVE_SUFFIXES else "file", rel=rel or mirrored(f))


def listed_units(inputs: list[str]) -> Iterator[Unit]:
    """:func:`discover`'s units, as they are listed, so that work can start on the first while a
    large input is still being listed (without side files: segmenting needs none). Only one
    input streams: names that clash across several are known once all are listed, so several
    inputs are :func:`discover`'s whole listing."""
    if len(inputs) == 1:
        yield from _recordings(listed(inputs))
    else:
        yield from discover(inputs)


def discover(inputs: list[str]) -> list[Unit]:
    """Expand inputs into units. Side files (labels) are attached to the recordings of the same
    folder; hidden files are skipped. Every other file becomes a unit: if it is not audio, the
    task that reads it reports so in the errors table."""
    files = list(listed(inputs))
    units = list(_recordings(files))
    side_by_dir: dict[str, list[str]] = {}
    for f, _ in files:
        if is_side_file(f):
            side_by_dir.setdefault(f.rsplit("/", 1)[0], []).append(f)
    clash = Counter(u.rel for u in units)
    for u in units:  # the same name under two inputs: both mirror their whole path
        if clash[u.rel] > 1:
            u.rel = mirrored(u.uri)
    for u in units:  # labels may sit in the recording's folder or a sibling folder (pykanto, BSD)
        folder = u.uri.rsplit("/", 1)[0]
        parent = folder.rsplit("/", 1)[0]
        u.side_files = [
            s for d, fs_ in side_by_dir.items() if d == folder or d.rsplit("/", 1)[0] == parent for s in fs_
        ]
    return units


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as f:
        return f.read()


class ArchiveMemberError(ValueError):
    """An archive member refused without reading it; the message is the reason."""


def member_problem(name: str, data: bytes | Exception) -> tuple[str, str] | None:
    """``(stage, reason)`` when an archive member cannot be used as a recording, else None."""
    if unsafe_member_name(name):
        return "read", "unsafe archive member name (absolute or '..')"
    if isinstance(data, ArchiveMemberError):
        return "read", str(data)
    if isinstance(data, Exception):
        return "read", describe(data)
    if len(data) == 0:
        return EMPTY_FILE
    return None


def unsafe_member_name(name: str) -> bool:
    p = PurePosixPath(name.replace("\\", "/"))
    return p.is_absolute() or ".." in p.parts


def iter_archive(uri: str) -> Iterator[tuple[str, bytes | Exception]]:
    """Yield ``(member name, bytes)`` for every file member of a tar or zip archive, read one
    at a time from the stream into memory (nothing is ever extracted to disk, so no member name
    can place a file anywhere). A member that cannot or must not be read (links, devices, a
    declared size over :data:`MAX_MEMBER_BYTES`, a damaged member) yields ``(name, exception)``
    instead, so the caller can record it and go on. Names are :func:`as_text`."""
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as raw:
        if suffix(uri) == ".zip":
            with zipfile.ZipFile(raw) as zf:
                for zi in zf.infolist():
                    if zi.is_dir():
                        continue
                    if zi.file_size > MAX_MEMBER_BYTES:
                        yield (
                            zi.filename,
                            ArchiveMemberError(
                                f"archive member declares {zi.file_size} bytes (limit {MAX_MEMBER_BYTES})"
                            ),
                        )
                        continue
                    try:
                        data = zf.read(zi)
                    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
                        data = e
                    yield zi.filename, data
            return
        with tarfile.open(fileobj=raw, mode="r|*") as tf:  # streaming mode: one pass, no seeks
            for ti in tf:
                name = as_text(ti.name)
                if ti.isdir():
                    continue
                if not ti.isreg():
                    yield name, ArchiveMemberError("archive member is a link or special file, not read")
                    continue
                if ti.size > MAX_MEMBER_BYTES:
                    yield (
                        name,
                        ArchiveMemberError(f"archive member declares {ti.size} bytes (limit {MAX_MEMBER_BYTES})"),
                    )
                    continue
                try:
                    data = tf.extractfile(ti).read()
                except (tarfile.TarError, OSError, EOFError) as e:
                    data = e
                yield name, data


def open_listed_file(uri: str) -> tuple:
    """``(src, problem)`` for a file unit: ``src`` is the path (local) or the bytes (remote) to
    decode, ``problem`` None or ``(stage, reason)`` -- gone since listing, refused, empty."""
    try:
        if URL_SCHEME.match(uri):
            src = read_bytes(uri)
            return src, (EMPTY_FILE if len(src) == 0 else None)
        return uri, local_problem(uri)
    except (OSError, ValueError) as e:  # gone since listing, refused, unsupported URL
        return uri, ("read", describe(e))


def source_bytes(source: str):
    """The audio of a source again (path, or bytes for S3 objects and archive members)."""
    if MEMBER_SEP in source:
        archive, member = source.split(MEMBER_SEP, 1)
        for name, data in iter_archive(archive):
            if name == member:
                if isinstance(data, Exception):
                    raise data
                return data
        raise FileNotFoundError(f"{member!r} not found in {archive}")
    return read_bytes(source) if source.startswith("s3://") else source


def iter_sources(unit: Unit, done: frozenset = frozenset()) -> Iterator[tuple[str, object, Optional[tuple]]]:
    """``(source, src, error)`` for every recording of a unit not in ``done``: ``src`` a path or
    bytes for the decoder, or ``error`` = (stage, reason): what ingest and segment read."""
    if unit.kind == "file":
        if recording_id(unit.uri) in done:
            return
        src, problem = open_listed_file(unit.uri)
        yield unit.uri, None if problem else src, problem
        return
    try:
        for name, data in iter_archive(unit.uri):
            source = f"{unit.uri}{MEMBER_SEP}{name}"
            if is_hidden(name) or is_side_file(name) or recording_id(source) in done:
                continue
            problem = member_problem(name, data)
            yield source, None if problem else data, problem
    except Exception as e:  # a corrupt archive: the archive itself is one error row
        yield unit.uri, None, ("read", f"corrupt or unreadable archive: {describe(e)}")
