"""Reliability: a corpus of bad inputs built here (no shipped binaries) through ingest and segment, a
segment driver killed mid-run, segment actors killed mid-unit, a worker node removed from a multi-
node cluster, atomic writes, safe checkpoints and archives, and credentials kept out of errors,
outputs and logs.

The training-worker kill (SIGKILL mid-epoch, the run resumes from the last checkpoint) is
tests/test_train.py::test_killed_worker_resumes_from_last_checkpoint.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from raybird import cli
from raybird.dsp.spectrogram import SpecConfig, n_frames_for, row_freqs
from raybird.inference import decode
from raybird.io import audio, outputs, redaction, storage, tables
from raybird.models import checkpoint
from raybird.models.networks import build_model
from raybird.pipelines import ingest

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")
# The grid of tests/test_segment.py: 16 kHz, 8 ms hop, 128 rows, 128-frame tiles.
CFG = SpecConfig(sample_rate=16000, n_fft=256, win_length=256, hop_length=128, tile_frames=128, tile_overlap=32)
SECRET = f"rbSecret{uuid.uuid4().hex}"  # 40 characters, like an AWS secret key
KEY_ID = "AKIA" + uuid.uuid4().hex[:16].upper()  # the shape of an AWS access key id
LONG_S = 300.0  # the "very long" recording: 5 minutes at 8 kHz


def wav(x: np.ndarray, sr: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def sound(seconds: float, sr: int, seed: int, channels: int = 1) -> np.ndarray:
    """Noise with 0.2 s tone bursts at 3 kHz, ``(n,)`` or ``(n, channels)`` float32."""
    rng = np.random.default_rng(seed)
    n = max(int(seconds * sr), 1)
    t = np.arange(n) / sr
    x = 0.02 * rng.standard_normal((n, channels)) + (0.2 * np.sin(2 * np.pi * 3000 * t) * ((t % 0.5) < 0.2))[:, None]
    return (x[:, 0] if channels == 1 else x).astype(np.float32)


def tiny_checkpoint(path: Path) -> str:
    """An untrained width-4 U-Net: reliability needs a deterministic model, not a good one."""
    torch.manual_seed(0)
    model = build_model("unet", width=4, depth=3, dropout=0.0)
    return str(checkpoint.save_checkpoint(path, model, spec_config_json=CFG.to_json()))


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


# ---- the bad-input corpus ---------------------------------------------------------------------------
class Corpus:
    """Inputs plus what must become of them: ``good`` sources (each processed, exactly once) and
    ``bad`` ``{recording_id: (source, stage, reason fragment)}`` (each exactly one error row)."""

    def __init__(self, root: Path):
        self.root, self.folder = root, root / "in"
        self.folder.mkdir(parents=True)
        self.good: dict[str, float | None] = {}  # source -> decoded duration (s) when known
        self.bad: dict[str, tuple[str, str, str]] = {}
        self.inputs = [str(self.folder)]

    def file(self, name: str | bytes, data: bytes, duration: float | None = None, error=None) -> str:
        path = os.path.join(os.fsencode(self.folder), name) if isinstance(name, bytes) else self.folder / name
        with open(path, "wb") as f:
            f.write(data)
        source = storage.as_text(os.fsdecode(path))
        self.expect(source, duration, error)
        return source

    def expect(self, source: str, duration: float | None = None, error=None) -> None:
        if error is None:
            self.good[source] = duration
        else:
            self.bad[storage.recording_id(source)] = (source, *error)

    @property
    def n_recordings(self) -> int:
        return len(self.good) + len(self.bad)


def build_corpus(root: Path, bucket: str) -> Corpus:
    c = Corpus(root)
    sr = CFG.sample_rate
    good = wav(sound(3.0, sr, 0), sr)
    c.file("good.wav", good, 3.0)
    flac = io.BytesIO()
    sf.write(flac, sound(2.5, sr, 1), sr, format="FLAC")
    c.file("good.flac", flac.getvalue(), 2.5)
    c.file("cut.flac", flac.getvalue()[: len(flac.getvalue()) // 2], error=("decode", "flac decoder lost sync"))
    # duplicate content under two names: both are inputs, both are processed (ids hash the path)
    c.file("dup one.wav", good, 3.0)
    c.file("  spaced   name .wav", wav(sound(1.0, sr, 2), sr), 1.0)
    c.file(b"caf\xe9 \xff.wav", wav(sound(1.0, sr, 3), sr), 1.0)  # not UTF-8
    c.file("one_sample.wav", wav(np.full(1, 0.1, np.float32), sr), 1 / sr)
    c.file("rate_8k.wav", wav(sound(2.0, 8000, 4), 8000), 2.0)
    c.file("rate_384k.wav", wav(sound(0.5, 384000, 5), 384000), 0.5)
    c.file("eight_channels.wav", wav(sound(1.0, sr, 6, channels=8), sr), 1.0)
    c.file("long.wav", wav(sound(LONG_S, 8000, 7), 8000), LONG_S)
    piped = bytearray(good)  # a WAV written to a pipe: sizes left at 0xFFFFFFFF ("unknown")
    piped[4:8] = piped[40:44] = b"\xff\xff\xff\xff"
    c.file("piped.wav", bytes(piped), 3.0)
    mp3 = io.BytesIO()
    sf.write(mp3, sound(3.0, sr, 8), sr, format="MP3")
    # MP3 has no exact length field (a complete real one decodes 9 % short of its header), so a
    # cut MP3 cannot be told from a whole one: it is processed as the audio it holds.
    c.file("cut.mp3", mp3.getvalue()[: len(mp3.getvalue()) // 2])

    c.file("empty.wav", b"", error=("decode", "empty file (0 bytes)"))
    c.file("cut_header.wav", good[:30], error=("decode", "No 'data' chunk marker"))
    c.file(
        "cut_data.wav",
        good[: len(good) // 2],
        error=("decode", f"truncated: the data chunk declares {len(good) - 44} bytes, the file holds"),
    )
    aiff = io.BytesIO()
    sf.write(aiff, sound(1.0, sr, 15), sr, format="AIFF", subtype="PCM_16")
    c.file("cut.aiff", aiff.getvalue()[:20000], error=("decode", "truncated: the data chunk declares 32008 bytes"))
    c.file("random.wav", np.random.default_rng(9).bytes(5000), error=("decode", "not a readable audio file"))
    c.file("text.flac", b"this is not audio\n" * 50, error=("decode", "Format not recognised"))
    c.file("rate_1hz.wav", wav(np.zeros(1000, np.float32), 1), error=("decode", "implausible sample rate: 1 Hz"))
    c.file("zero_samples.wav", wav(np.zeros(0, np.float32), sr), error=("decode", "no audio samples (0 frames)"))
    nan = sound(1.0, sr, 10)
    nan[100] = np.nan
    c.file("nan.wav", wav(nan, sr, "FLOAT"), error=("decode", "NaN samples (first at sample 100)"))
    inf = sound(1.0, sr, 11)
    inf[2000] = np.inf
    c.file("inf.wav", wav(inf, sr, "FLOAT"), error=("decode", "infinite samples (first at sample 2000)"))
    os.symlink("loop.wav", c.folder / "loop.wav")  # a link to itself
    c.expect(str(c.folder / "loop.wav"), error=("read", "symbolic link loop"))
    os.symlink("gone.wav", c.folder / "dangling.wav")
    c.expect(str(c.folder / "dangling.wav"), error=("read", "broken symbolic link"))
    os.symlink(".", c.folder / "again")  # a folder loop: not followed
    if os.geteuid() != 0:  # root reads a chmod 000 file anyway: the case only exists for other users
        c.file("unreadable.wav", good, error=("read", "permission denied"))
        os.chmod(c.folder / "unreadable.wav", 0)

    # archives, one beside the other in their own folder
    arch = root / "archives"
    arch.mkdir()
    member = wav(sound(2.0, sr, 12), sr)
    with tarfile.open(arch / "bad.tar", "w") as tf:
        for name in ("site/member.wav", "../../escape.wav"):
            info = tarfile.TarInfo(name)
            info.size = len(member)
            tf.addfile(info, io.BytesIO(member))
        link = tarfile.TarInfo("site/link.wav")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
        tf.addfile(link)
    c.expect(f"{arch / 'bad.tar'}::site/member.wav", 2.0)
    c.expect(f"{arch / 'bad.tar'}::../../escape.wav", error=("read", "unsafe archive member name"))
    c.expect(f"{arch / 'bad.tar'}::site/link.wav", error=("read", "archive member is a link"))
    with tarfile.open(arch / "whole.tar", "w") as tf:
        for name in ("first.wav", "second.wav"):
            info = tarfile.TarInfo(name)
            info.size = len(member)
            tf.addfile(info, io.BytesIO(member))
    data = (arch / "whole.tar").read_bytes()
    (arch / "cut.tar").write_bytes(data[: 512 + len(member) + 512 + 1000])  # ends inside second.wav
    (arch / "whole.tar").unlink()
    c.expect(f"{arch / 'cut.tar'}::first.wav", 2.0)
    c.expect(f"{arch / 'cut.tar'}::second.wav", error=("read", "ReadError: unexpected end of data"))
    c.expect(str(arch / "cut.tar"), error=("read", "corrupt or unreadable archive: ReadError: unexpected end of data"))
    (arch / "corrupt.tar").write_bytes(np.random.default_rng(13).bytes(4000))
    c.expect(str(arch / "corrupt.tar"), error=("read", "corrupt or unreadable archive: ReadError: invalid header"))
    with zipfile.ZipFile(arch / "huge.zip", "w") as zf:
        zf.writestr("z/ok.wav", member)
        zf.writestr("z/huge.wav", member)
        zf.getinfo("z/huge.wav").file_size = 5 * 2**30  # what the central directory will declare
    c.expect(f"{arch / 'huge.zip'}::z/ok.wav", 2.0)
    c.expect(f"{arch / 'huge.zip'}::z/huge.wav", error=("read", f"declares {5 * 2**30} bytes"))
    c.inputs.append(str(arch))

    # S3: one object listed under a prefix; a manifest (a listing made earlier) naming an object
    # deleted since, a URL of an unsupported scheme and an s3:// URL with credentials in it
    fs, _ = storage.filesystem("s3://")
    fs.pipe(f"{bucket}/in/s3_ok.wav", wav(sound(1.5, sr, 14), sr))
    fs.pipe(f"{bucket}/gone/deleted.wav", good)
    c.expect(f"s3://{bucket}/in/s3_ok.wav", 1.5)
    manifest = root / "listing.manifest"
    lines = [
        f"s3://{bucket}/gone/deleted.wav",
        f"https://user:{SECRET}@example.org/rec.wav",
        f"s3://{KEY_ID}:{SECRET}@{bucket}/in/s3_ok.wav",
    ]
    manifest.write_text("\n".join(lines) + "\n")
    fs.rm(f"{bucket}/gone/deleted.wav")
    c.expect(lines[0], error=("read", "not found (deleted or moved after it was listed?)"))
    c.expect(lines[1], error=("read", "unsupported URL scheme 'https'"))
    c.expect(lines[2], error=("read", "credentials in the URL are refused"))
    c.inputs += [f"s3://{bucket}/in/", str(manifest)]
    return c


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, s3_server) -> Corpus:
    import boto3

    bucket = f"raybird-rel-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    return build_corpus(tmp_path_factory.mktemp("corpus"), bucket)


def check_errors(errors: list[dict], corpus: Corpus) -> None:
    """One row per bad recording, with its stage and a specific reason; credentials redacted."""
    got = {e["recording_id"]: e for e in errors}
    assert len(got) == len(errors), "a recording has two error rows"
    assert set(got) == set(corpus.bad), {e["source"]: e["reason"] for e in errors}
    for rec_id, (source, stage, reason) in corpus.bad.items():
        row = got[rec_id]
        assert row["stage"] == stage and reason in row["reason"], (source, row)
        assert row["source"] == source or "***" in row["source"]
        assert SECRET not in row["source"] + row["reason"] and KEY_ID not in row["source"] + row["reason"]


def files_containing(folder: Path, needle: bytes) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


# ---- ingest and segment over the corpus ---------------------------------------------------------------
@pytest.mark.ray
def test_ingest_corpus_every_input_in_one_place(ray_session, corpus, tmp_path, capsys):
    out = tmp_path / "ingest"
    rc = cli.main(["ingest", *corpus.inputs, "--out", str(out), "--preset", CFG.to_json(), "--fail-on-error"])
    assert rc == 1  # there were errors; the job still finished: every table below is complete
    printed = capsys.readouterr().out
    shards = outputs.read_outputs(
        str(out),
        "shards",
        columns=["recording_id", "source", "channel", "tile_index", "duration_s", "sample_rate", "spec"],
    )
    errors = outputs.read_outputs(str(out), "errors").to_pylist()
    check_errors(errors, corpus)
    sources = set(shards.column("source").to_pylist())
    assert sources == set(corpus.good)
    assert len(sources) + len(errors) == corpus.n_recordings
    assert f"{len(sources)} recordings" in printed and f"+ {len(errors)} errors" in printed
    keys = list(zip(*(shards.column(c).to_pylist() for c in ("recording_id", "channel", "tile_index"))))
    assert len(keys) == len(set(keys)), "a tile written twice"
    rows = {}
    for r in shards.select(["source", "duration_s", "sample_rate", "tile_index", "spec"]).to_pylist():
        rows.setdefault(r["source"], []).append(r)
    for source, duration in corpus.good.items():
        if duration is not None:  # decoded length; the resampled ones within a sample
            assert rows[source][0]["duration_s"] == pytest.approx(duration, abs=1.5 / CFG.sample_rate), source
    long = rows[str(corpus.folder / "long.wav")]
    assert len(long) == -(-n_frames_for(int(LONG_S * CFG.sample_rate), CFG) // CFG.tile_step)
    # 8 kHz on a 16 kHz grid: the rows above 4 kHz are blank, not normalised resampler leakage
    low = rows[str(corpus.folder / "rate_8k.wav")][0]
    spec = np.frombuffer(low["spec"], np.uint8).reshape(CFG.n_rows, CFG.tile_frames)
    assert low["sample_rate"] == 8000
    assert spec[row_freqs(CFG) > 4000].max() == 0 and spec[row_freqs(CFG) < 3900].max() > 100
    # the same content under two names: two recordings, identical tiles
    dup = [rows[str(corpus.folder / n)] for n in ("good.wav", "dup one.wav")]
    assert [r["spec"] for r in dup[0]] == [r["spec"] for r in dup[1]]
    assert not files_containing(out, SECRET.encode()) and not files_containing(out, KEY_ID.encode())


@pytest.fixture(scope="module")
def segmented(ray_session, corpus, model_path, tmp_path_factory) -> dict:
    """The uninterrupted reference run, through the command line with --fail-on-error."""
    base = tmp_path_factory.mktemp("seg")
    before = {p for p in corpus.root.rglob("*")} | {p for p in base.rglob("*")}
    out = base / "out"
    rc = cli.main(
        [
            "segment",
            *corpus.inputs,
            "--out",
            str(out),
            "--model",
            model_path,
            "--format",
            "raven",
            "--probabilities",
            "--fail-on-error",
        ]
    )
    return dict(out=out, rc=rc, base=base, before=before)


def committed(out) -> set[str]:
    """The recordings whose rows are committed in ``out`` (its journal)."""
    return outputs.read_journal(str(out)).ids


def read_tables(out) -> dict:
    keys = dict(
        segments=["recording_id", "channel", "segment_id"],
        masks=["recording_id", "channel"],
        summary=["recording_id", "channel"],
        errors=["recording_id"],
    )
    return {
        name: outputs.read_outputs(str(out), name).sort_by([(k, "ascending") for k in ks]) for name, ks in keys.items()
    }


@pytest.mark.ray
def test_segment_corpus_every_input_in_one_place(segmented, corpus):
    assert segmented["rc"] == 1
    t = read_tables(segmented["out"])
    check_errors(t["errors"].to_pylist(), corpus)
    masks = t["masks"].to_pylist()
    assert len({m["recording_id"] for m in masks}) == len(masks), "a recording finished twice"
    assert {m["source"] for m in masks} == set(corpus.good)
    assert len(masks) + len(t["errors"]) == corpus.n_recordings
    summary = {s["source"]: s for s in t["summary"].to_pylist()}
    for source, duration in corpus.good.items():
        if duration is not None:
            assert summary[source]["duration_s"] == pytest.approx(duration, abs=1.5 / CFG.sample_rate), source
    long = next(m for m in masks if m["source"] == str(corpus.folder / "long.wav"))
    assert long["n_frames"] == n_frames_for(int(LONG_S * CFG.sample_rate), CFG)
    one = next(m for m in masks if m["source"].endswith("one_sample.wav"))
    assert one["n_frames"] == 1
    by_source = {m["source"]: m for m in masks}
    assert (
        by_source[str(corpus.folder / "good.wav")]["probability"]
        == by_source[str(corpus.folder / "dup one.wav")]["probability"]
    )
    # the non-UTF-8 name is stored as valid UTF-8 and maps back to the file on disk
    odd = next(s for s in corpus.good if "\uefe9" in s)
    assert os.fsencode(storage.local_path(odd)).endswith(b"/caf\xe9 \xff.wav")
    assert not files_containing(segmented["out"], SECRET.encode())


@pytest.mark.ray
def test_archive_members_are_never_written_outside_the_output(segmented, corpus):
    out = segmented["out"]
    new = {p for p in corpus.root.rglob("*")} | {p for p in segmented["base"].rglob("*")}
    outside = [p for p in new - segmented["before"] if out not in p.parents and p != out]
    assert outside == []
    assert not Path(corpus.root.parent, "escape.wav").exists() and not Path("../../escape.wav").exists()
    # tables named after the recordings, archive members under the archive's name, all inside raven/
    raven = {p.relative_to(out / "raven").as_posix() for p in (out / "raven").rglob("*") if p.is_file()}
    assert {"archives/bad/site/member.Table.1.selections.txt", "in/good.Table.1.selections.txt"} <= raven
    assert not any("escape" in n for n in raven)


# ---- a killed driver ---------------------------------------------------------------------------------
def _driver_env(**extra) -> dict:
    import ray

    env = dict(os.environ, RAY_ADDRESS=ray.get_runtime_context().gcs_address, PYTHONPATH=str(ROOT), **extra)
    return env


@contextlib.contextmanager
def _running(argv: list[str], env: dict, log: Path | None = None) -> Iterator[subprocess.Popen]:
    """A ``raybird`` process, its output in ``log``; killed on the way out if still running."""
    with open(log or os.devnull, "wb") as sink:
        proc = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)


def _wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:
    end = time.time() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the driver ended (rc {proc.returncode}) before {what}")
        if time.time() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.ray
@pytest.mark.slow
def test_killed_segment_driver_rerun_gives_the_same_tables(segmented, corpus, model_path, tmp_path):
    """SIGKILL a real ``raybird segment`` driver once some recordings are committed (part files
    of two recordings), run the same command again: the tables equal the uninterrupted run's.
    The drivers join the session's Ray (as a job's driver joins a cluster) with an S3 secret in
    their environment that must not show up in their output, the tables or Ray's logs."""
    out = tmp_path / "out"
    argv = [
        sys.executable,
        "-m",
        "raybird.cli",
        "segment",
        *corpus.inputs,
        "--out",
        str(out),
        "--model",
        model_path,
        "--format",
        "raven",
        "--probabilities",
        "--file-recordings",
        "2",
    ]
    env = _driver_env(AWS_SECRET_ACCESS_KEY=SECRET)
    with _running(argv, env, tmp_path / "first.log") as first:
        _wait_for(lambda: len(committed(out)) >= 2, 300, first, "2 recordings")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
    written = len(committed(out))
    assert 2 <= written < corpus.n_recordings, "the kill did not land mid-run"
    second = subprocess.run(argv, env=env, capture_output=True, timeout=600)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output.decode(errors="replace")[-3000:]
    assert b"already complete, skipped" in second.stdout
    want, got = read_tables(segmented["out"]), read_tables(out)
    for name in want:
        assert got[name].equals(want[name]), name
    assert sorted(p.relative_to(out) for p in (out / "raven").rglob("*")) == sorted(
        p.relative_to(segmented["out"]) for p in (segmented["out"] / "raven").rglob("*")
    )
    # no partial file is taken as a table: whatever the kill left is hidden (.*.tmp) and ignored
    for table in ("masks", "segments", "summary", "errors"):
        for p in (out / table).glob("*.parquet"):
            pq.read_metadata(p)
    # credentials: not in the drivers' output, the tables, nor the Ray session's logs
    import ray

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    assert SECRET.encode() not in output + (tmp_path / "first.log").read_bytes()
    assert files_containing(out, SECRET.encode()) == []
    assert files_containing(logs, SECRET.encode()) == []


@pytest.mark.ray
@pytest.mark.slow
def test_killed_segment_actors_lose_their_units_to_a_second_pass(ray_session, model_path, tmp_path, descendants):
    """SIGKILL every segment actor (as the OOM killer would) while zips of recordings are in work,
    after a first part file of three recordings is committed and with the next one half filled:
    their units fail at once and a second pass segments what they left; the part files committed
    before the kill are kept as they are, what was buffered is done again, and every member ends
    in the masks once. The folder's listing streams into the first pass (``--stream-after 1``)."""
    members = []
    (tmp_path / "zips").mkdir()
    for z in range(2):  # units of ten recordings: the first one written leaves its unit mid-way
        with zipfile.ZipFile(tmp_path / "zips" / f"batch{z}.zip", "w") as f:
            for i in range(10):
                members.append(f"rec{z}_{i:02d}.wav")
                f.writestr(members[-1], wav(sound(6.0, CFG.sample_rate, 100 * z + i), CFG.sample_rate))
    out = tmp_path / "out"
    argv = [
        sys.executable,
        "-m",
        "raybird.cli",
        "segment",
        str(tmp_path / "zips"),
        "--out",
        str(out),
        "--model",
        model_path,
        "--actors",
        "2",
        "--file-recordings",
        "3",
        "--stream-after",
        "1",
    ]
    pids: list[int] = []

    def actors_up() -> bool:  # the session's Ray runs no dashboard, so no state API: ask /proc
        pids[:] = [pid for pid, title in descendants(os.getpid()) if "SegmentWorker" in title]
        return len(pids) == 2

    with _running(argv, _driver_env(), tmp_path / "driver.log") as driver:
        _wait_for(lambda: len(committed(out)) >= 3, 120, driver, "the first part file")
        _wait_for(actors_up, 10, driver, "two segment actors")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # gone already: the asserts below tell
                os.kill(pid, signal.SIGKILL)
        before = {p: (out / p).stat().st_mtime_ns for p in outputs.read_journal(str(out)).files}
        n_before = len(committed(out))
        rc = driver.wait(300)
    output = (tmp_path / "driver.log").read_text(errors="replace")
    assert rc == 0, output[-4000:]
    assert 3 <= n_before < len(members), "the kill did not land mid-run"
    assert "pass 2 on the cluster that is left" in output
    assert {p: (out / p).stat().st_mtime_ns for p in before} == before
    sources = outputs.read_outputs(str(out), "masks").column("source").to_pylist()
    assert len(sources) == len(set(sources)) == len(members)
    assert sorted(s.split(storage.MEMBER_SEP)[-1] for s in sources) == sorted(members)
    assert len(outputs.read_outputs(str(out), "errors")) == 0


@pytest.mark.ray
@pytest.mark.slow
def test_killed_ingest_leaves_the_previous_output_whole(ray_session, corpus, tmp_path):
    """Ingest writes under OUT/.staging-*/ and puts the tables in place at the end: a driver
    killed while writing leaves the previous run's tables exactly as they were."""
    out = tmp_path / "ingest"
    inputs = [str(corpus.folder)]
    ingest.run_local(inputs, str(out), CFG)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    want = {name: outputs.read_outputs(str(out), name) for name in ingest.TABLES}
    with _running(
        [sys.executable, "-m", "raybird.cli", "ingest", *inputs, "--out", str(out), "--preset", CFG.to_json()],
        _driver_env(),
    ) as proc:
        _wait_for(lambda: any(out.glob(".staging-*")), 300, proc, "the write phase")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    after = {
        p.relative_to(out): p.read_bytes()
        for p in out.rglob("*")
        if p.is_file() and not p.relative_to(out).parts[0].startswith(".staging-")
    }
    assert after == before
    assert list(out.glob(".staging-*")), "the kill did not land in the write phase"
    ingest.run_local(inputs, str(out), CFG)  # the next run clears the leftover and publishes
    assert sorted(p.name for p in out.iterdir()) == ["errors", "run.json", "shards"]
    for name in ingest.TABLES:
        assert outputs.read_outputs(str(out), name).equals(want[name]), name


# ---- a worker node lost ------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Run against the cluster's dashboard: each named node's state.
STATE = """
import json, sys
from ray.util.state import list_nodes
addr, names = sys.argv[1], ("head", "node_a", "node_b")
nodes = list_nodes(address=addr, limit=100)
print(json.dumps({"nodes": {k: n.state for n in nodes for k in n.resources_total if k in names}}))
"""


def _raylets_of(node_dir: str) -> list[int]:
    """PIDs of the raylets whose command line names ``node_dir`` (the node's --temp-dir)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if proc.name.isdigit() and argv[0].endswith("/raylet") and any(node_dir + "/" in a for a in argv):
            pids.append(int(proc.name))
    return pids


@pytest.mark.cluster
@pytest.mark.slow
def test_worker_node_removed_mid_segmentation_loses_nothing(model_path, tmp_path, descendants):
    """Three nodes (cluster/local_cluster.sh: head, node_a, node_b, 1 CPU each); the raylet of
    node_a is SIGKILLed once recordings are being written. The unit its actor held fails at once
    and a second pass on the two nodes left segments it (before, Ray Data waited for that actor
    to restart, with no CPU left for it: the job stalled): it finishes, every recording once."""
    from raybird.synth.generator import generate_archive

    archive = tmp_path / "archive"
    generate_archive(archive, 12, seed=4, duration_s=(4.0, 6.0))
    n = len([p for p in archive.iterdir() if p.suffix in (".wav", ".flac")])
    tmp = tempfile.mkdtemp(prefix="rbn-", dir="/tmp")  # short: Ray's socket paths live under it
    gcs, dash = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        RAYBIRD_CLUSTER_DIR=os.path.join(tmp, "ray"),
        RAYBIRD_GCS_PORT=str(gcs),
        RAYBIRD_DASHBOARD_PORT=str(dash),
        RAY=RAY,
        RAY_health_check_period_ms="1000",
        RAY_health_check_failure_threshold="3",
    )
    script = str(ROOT / "cluster" / "local_cluster.sh")
    out = tmp_path / "out"
    try:
        started = subprocess.run(["bash", script, "start"], env=env, capture_output=True, text=True, timeout=300)
        assert started.returncode == 0, started.stdout + started.stderr
        driver_env = dict(env, RAY_ADDRESS=f"127.0.0.1:{gcs}", RAY_AUTH_MODE="token", PYTHONPATH=str(ROOT))
        argv = [
            sys.executable,
            "-m",
            "raybird.cli",
            "segment",
            str(archive),
            "--out",
            str(out),
            "--model",
            model_path,
            "--actors",
            "3",
            "--file-recordings",
            "1",
        ]  # one actor per node
        with _running(argv, driver_env, tmp_path / "driver.log") as driver:
            _wait_for(lambda: len(committed(out)) >= 1, 400, driver, "the first recording")
            raylets = _raylets_of(os.path.join(tmp, "ray", "node_a"))
            assert len(raylets) == 1
            # node_a holds one of the job's segment actors (a worker process of its raylet)
            _wait_for(
                lambda: any("SegmentWorker" in t for _, t in descendants(raylets[0])),
                60,
                driver,
                "a segment actor on node_a",
            )
            written = len(committed(out))
            os.kill(raylets[0], signal.SIGKILL)
            rc = driver.wait(240)  # a whole run takes ~70 s
        output = (tmp_path / "driver.log").read_text(errors="replace")
        assert rc == 0, output[-4000:]
        assert written < n, "the node died after the work was done"
        state = subprocess.run(
            [sys.executable, "-c", STATE, f"http://127.0.0.1:{dash}"],
            env=dict(env, RAY_AUTH_MODE="token"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert state.returncode == 0, state.stderr[-3000:]
        state = json.loads(state.stdout.strip().splitlines()[-1])
        assert state["nodes"] == {"head": "ALIVE", "node_a": "DEAD", "node_b": "ALIVE"}
    finally:
        subprocess.run(["bash", script, "stop"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)
    masks = outputs.read_outputs(str(out), "masks").column("source").to_pylist()
    assert len(masks) == len(set(masks)) == n
    assert sorted(masks) == sorted(str(p) for p in archive.iterdir() if p.suffix in (".wav", ".flac"))
    assert len(outputs.read_outputs(str(out), "errors")) == 0


# ---- pieces --------------------------------------------------------------------------------------------
@pytest.mark.ray
def test_object_deleted_between_listing_and_reading(ray_session, s3_bucket, model_path):
    fs, _ = storage.filesystem("s3://")
    fs.pipe(f"{s3_bucket}/raw/a.wav", wav(sound(1.0, CFG.sample_rate, 0), CFG.sample_rate))
    units = storage.discover([f"s3://{s3_bucket}/raw/"])
    fs.rm(f"{s3_bucket}/raw/a.wav")
    [(got, err)] = list(ingest.process_unit(units[0], CFG))
    assert got is None and err.to_pylist()[0]["reason"] == "not found (deleted or moved after it was listed?)"
    [(source, item)] = list(decode.unit_tiles(units[0], CFG))
    assert isinstance(item, decode.Failed) and item.stage == "read" and source.endswith("raw/a.wav")


def test_redact_scrubs_credentials(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "short")  # placeholders under 8 characters stay
    text = (
        f"failed {SECRET} https://bob:pa55@host/x.wav s3://{KEY_ID}:{SECRET}@b/k "
        f"key {KEY_ID} https://b.s3.amazonaws.com/k?X-Amz-Credential=AK%2F1&X-Amz-Signature=abc123&x=1 short"
    )
    got = redaction.redact(text)
    assert got == (
        "failed *** https://***@host/x.wav s3://***@b/k key *** "
        "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***&x=1 short"
    )
    row = tables.error_table(f"https://u:{SECRET}@h/x.wav", "read", f"boom {SECRET}").to_pylist()[0]
    assert row["source"] == "https://***@h/x.wav" and row["reason"] == "boom ***"
    assert row["recording_id"] == storage.recording_id(f"https://u:{SECRET}@h/x.wav")


def test_cli_input_errors_are_one_redacted_line(monkeypatch, tmp_path, capsys):
    """A missing input whose URL carries credentials: exit 2, one line, no secret, no traceback."""
    from raybird import cli

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    missing = f"https://bob:{SECRET}@host.invalid/nothing-here/"
    code = cli.main(["ingest", str(tmp_path / f"gone-{SECRET}"), missing, "--out", str(tmp_path / "o"), "--local"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("raybird ingest: ") and err.count("\n") == 1
    assert SECRET not in err and "Traceback" not in err


def test_non_utf8_names_round_trip(tmp_path):
    raw = os.path.join(os.fsencode(tmp_path), b"\xff\xfe caf\xe9.wav")
    with open(raw, "wb") as f:
        f.write(wav(sound(0.5, 8000, 0), 8000))
    [unit] = storage.discover([str(tmp_path)])
    unit.uri.encode("utf-8")  # valid UTF-8: Arrow can store it
    assert os.fsencode(storage.local_path(unit.uri)) == raw
    assert audio.decode(unit.uri, 8000).shape == (1, 4000)
    assert storage.local_problem(unit.uri) is None


def test_checkpoints_load_weights_only(tmp_path, model_path):
    """A checkpoint carrying a pickled object (which could run code when unpickled) is refused
    by every loader; the code does not run."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    good = torch.load(model_path, weights_only=True)
    torch.save({**good, "extra": Payload()}, evil)
    with pytest.raises(Exception, match="Weights only load failed"):
        checkpoint.read_checkpoint(str(evil))
    with pytest.raises(Exception, match="Weights only load failed"):
        checkpoint.load_checkpoint(evil)
    assert not marker.exists()
    assert checkpoint.read_checkpoint(model_path).cfg == CFG


def test_segment_write_is_atomic(tmp_path):
    """A writer that dies half-way leaves no file, not even a partial one under the final name."""

    def half(path):
        with open(path, "wb") as f:
            f.write(b"PAR1 half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tables.write_file(str(tmp_path), "masks/abc.parquet", half)
    assert os.listdir(tmp_path / "masks") == []
