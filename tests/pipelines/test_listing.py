"""What a segment run has to do, and listing that streams (raybird.pipelines.listing), without
Ray: the Ray job's side is in test_segment.py, test_reliability.py and test_cluster.py."""

import shutil

import pytest

from raybird.io import outputs, storage
from raybird.pipelines.listing import Listing


def _folder(root, names):
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"RIFF")
    return root


def test_a_listing_past_stream_after_yields_every_unit_once_and_skips_what_is_done(tmp_path):
    names = [f"site{s}/rec{i}.wav" for s in range(3) for i in range(4)]
    root = _folder(tmp_path / "in", [*names, "site0/labels.txt", "site1/.hidden.wav"])
    out = str(tmp_path / "out")
    parts = outputs.PartWriter(out, max_recordings=100)  # a run that finished two recordings
    for name in names[:2]:
        parts.add(storage.recording_id(str(root / name)), {})
    parts.commit()

    listing = Listing([str(root)], out, stream_after=5)
    assert listing.streams and listing.n_listed == 6 and len(listing.pending) == 4
    units = list(listing.units())
    assert [u.uri for u in units] == [str(root / n) for n in names[2:]]
    assert listing.n_listed == 12 and listing.skipped == 2 and listing.pending == units
    whole = {u.uri: u.rel for u in storage.discover([str(root)])}
    assert {u.uri: u.rel for u in units} == {u.uri: whole[u.uri] for u in units}

    small = Listing([str(root)], out, stream_after=100)
    assert not small.streams and [u.uri for u in small.pending] == [u.uri for u in units]
    with pytest.raises(ValueError, match="0 or more"):
        Listing([str(root)], out, stream_after=-1)


def test_a_resumed_listing_starts_at_its_first_unit_still_to_do(tmp_path):
    """A run whose first units are all done lists on to the first one still to do before it
    starts anything, and one with nothing left to do is not a streaming run at all."""
    names = [f"rec{i}.wav" for i in range(8)]
    root = _folder(tmp_path / "in", names)
    out = str(tmp_path / "out")
    parts = outputs.PartWriter(out, max_recordings=100)
    for name in names[:6]:
        parts.add(storage.recording_id(str(root / name)), {})
    parts.commit()
    listing = Listing([str(root)], out, stream_after=2)
    assert listing.streams and listing.n_listed == 7 and [u.uri for u in listing.pending] == [str(root / "rec6.wav")]
    assert [u.uri for u in listing.units()] == [str(root / n) for n in names[6:]] and listing.skipped == 6
    for name in names[6:]:
        parts.add(storage.recording_id(str(root / name)), {})
    parts.commit()
    done = Listing([str(root)], out, stream_after=2)
    assert not done.streams and done.pending == [] and done.n_listed == done.skipped == 8


def test_a_folder_is_segmented_as_it_is_listed(tmp_path):
    """The first folder's units come before the next folder is read: a folder removed after
    the first unit was handed out is never listed."""
    root = _folder(tmp_path / "in", ["a/1.wav", "a/2.wav", "z/3.wav"])
    listing = Listing([str(root)], str(tmp_path / "out"), stream_after=0)
    units = listing.units()
    assert next(units).uri == str(root / "a/1.wav")
    shutil.rmtree(root / "z")
    assert [u.uri for u in units] == [str(root / "a/2.wav")]


def test_a_manifest_streams_line_by_line_and_several_inputs_are_listed_whole(tmp_path):
    root = _folder(tmp_path / "in", ["a/1.wav", "b/1.wav"])
    manifest = tmp_path / "m.manifest"
    manifest.write_text("in/a/1.wav\n# a comment\nin/b/1.wav\nin/a/1.wav\n")
    listing = Listing([str(manifest)], str(tmp_path / "out"), stream_after=0)
    assert [u.uri for u in listing.units()] == [str(root / "a/1.wav"), str(root / "b/1.wav")]
    assert listing.n_listed == 2  # the repeated line is one unit
    # two inputs whose files share a name: both mirror their whole path, as discover names them
    _folder(root, ["a/site/2.wav", "b/site/2.wav"])
    both = Listing([str(root / "a/site"), str(root / "b/site")], str(tmp_path / "out"), stream_after=0)
    assert [u.rel for u in both.units()] == [storage.mirrored(str(root / f"{d}/site/2.wav")) for d in "ab"]


def test_no_input_files_is_an_error_and_a_missing_input_says_so(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no input files"):
        Listing([str(tmp_path / "empty")], str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="input not found"):
        Listing([str(tmp_path / "nowhere")], str(tmp_path / "out"))


def test_an_s3_prefix_is_listed_a_top_level_folder_at_a_time(s3_bucket):
    """In name order, each top-level folder listed when it is reached (one paginated listing
    each): an object deleted from a later folder after the first unit was handed out is never
    listed; a prefix that holds nothing is an input not found."""
    import fsspec

    fs = fsspec.filesystem("s3", **storage.storage_options())
    keys = ["raw/top.wav", "raw/a/1.wav", "raw/a/deep/2.wav", "raw/z/3.wav", "raw/z/notes.txt"]
    for key in [*keys, "raw/a/empty/"]:  # the last a folder marker, as consoles make them
        fs.pipe(f"{s3_bucket}/{key}", b"RIFF" if key in keys else b"")
    units = storage.listed_units([f"s3://{s3_bucket}/raw/"])
    first = next(units)
    fs.rm(f"{s3_bucket}/raw/z/3.wav")
    rest = list(units)
    assert [first.uri, *(u.uri for u in rest)] == [f"s3://{s3_bucket}/{k}" for k in keys[1:3]] + [
        f"s3://{s3_bucket}/raw/top.wav"
    ]
    assert first.rel == "raw/a/1.wav"
    with pytest.raises(FileNotFoundError, match="input not found"):
        Listing([f"s3://{s3_bucket}/nothing/"], "unused")
