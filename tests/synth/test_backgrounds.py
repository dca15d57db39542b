"""Real backgrounds for the generator: quiet stretches of a segment run cut into clips, and
recordings generated on them."""

import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from raybird.io import tables
from raybird.synth import backgrounds
from raybird.synth import generator as synth


def _run(out, source: str, duration: float, spans) -> None:
    """The summary and segments tables of a segment run over one recording."""
    for table, schema, rows in (
        (
            "summary",
            tables.SUMMARY_SCHEMA,
            [
                dict(
                    recording_id="r",
                    source=source,
                    channel=0,
                    duration_s=duration,
                    n_segments=len(spans),
                    bird_seconds=0.0,
                )
            ],
        ),
        (
            "segments",
            tables.SEGMENT_SCHEMA,
            [
                dict(
                    recording_id="r",
                    source=source,
                    channel=0,
                    segment_id=i,
                    start_s=a,
                    end_s=b,
                    low_hz=1e3,
                    high_hz=2e3,
                    score=0.9,
                    model_id="m",
                )
                for i, (a, b) in enumerate(spans)
            ],
        ),
    ):
        (out / table).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), out / table / "r.parquet")


def test_quiet_windows_keep_clear_of_every_segment_and_become_clips(tmp_path):
    sr = 8000
    x = np.random.default_rng(0).standard_normal(20 * sr).astype(np.float32) * 0.1
    source = str(tmp_path / "night.wav")
    sf.write(source, x, sr)
    _run(tmp_path / "seg", source, 20.0, [(4.0, 5.0), (5.5, 6.0), (15.0, 15.2)])
    windows = backgrounds.quiet_windows(str(tmp_path / "seg"), min_s=3.0, guard_s=0.5)
    assert windows == [(source, 0.0, 3.5), (source, 6.5, 14.5), (source, 15.7, 20.0)]
    paths = backgrounds.write_clips(windows, tmp_path / "clips")
    y, rate = sf.read(paths[1], dtype="float32")
    assert rate == sr and len(y) == 8 * sr
    np.testing.assert_allclose(y, x[int(6.5 * sr) : int(14.5 * sr)], atol=1 / 2**15)


def test_clips_come_from_archive_members_too(tmp_path):
    """A recording found in a tar (source ``archive.tar::member``) is read from the archive."""
    sr = 8000
    x = np.random.default_rng(1).standard_normal(6 * sr).astype(np.float32) * 0.1
    sf.write(tmp_path / "dawn.wav", x, sr)
    with tarfile.open(tmp_path / "site.tar", "w") as tar:
        tar.add(tmp_path / "dawn.wav", arcname="dawn.wav")
    [path] = backgrounds.write_clips([(f"{tmp_path / 'site.tar'}::dawn.wav", 1.0, 5.0)], tmp_path / "clips")
    y, rate = sf.read(path, dtype="float32")
    assert path.name == "dawn_0001000.flac" and rate == sr
    np.testing.assert_allclose(y, x[sr : 5 * sr], atol=1 / 2**15)


def test_a_recording_on_a_real_background_carries_that_background(tmp_path):
    sr = 22050
    t = np.arange(2 * sr) / sr
    (tmp_path / "bank").mkdir()
    sf.write(tmp_path / "bank" / "hum.flac", (0.1 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), sr)
    bank = backgrounds.BackgroundBank(tmp_path / "bank")
    rng = np.random.default_rng([5, 0])
    rec = synth.generate_recording(rng, 6.0, sr, noises=[], backgrounds=bank, p_real=1.0, p_clip=0.0, p_dc=0.0)
    assert rec.meta["noises"][0]["kind"] == "real" and rec.meta["noises"][0]["clips"][0] == "hum.flac"
    # the 2-s clip, joined end to end for 6 s: the background is that tone (and nothing else)
    spectrum = np.abs(np.fft.rfft(rec.background))
    assert np.argmax(spectrum) * sr / len(rec.background) == np.float64(300.0)
    assert spectrum[np.abs(np.fft.rfftfreq(len(rec.background), 1 / sr) - 300) > 20].max() < 0.05 * spectrum.max()
    # without the bank, the same seed gives the same birds over a generated background
    plain = synth.generate_recording(np.random.default_rng([5, 0]), 6.0, sr, noises=[], p_clip=0.0, p_dc=0.0)
    assert [c.start_s for c in plain.calls] == [c.start_s for c in rec.calls] and plain.calls
    assert plain.meta["noises"][0]["kind"] == "colored"
