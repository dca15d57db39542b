"""Discovery's relative names: what per-recording outputs (tables for other tools, denoised audio)
are named after."""

from pathlib import Path

from raybird.io import storage


def _tree(root: Path) -> None:
    for rel in ("site1/a.wav", "site1/deep/b.flac", "site2/a.wav", "other/site1/a.wav"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")


def _rels(inputs) -> dict:
    return {u.uri: u.rel for u in storage.discover([str(i) for i in inputs])}


def test_a_folder_input_leads_its_names_and_files_keep_only_their_name(tmp_path):
    _tree(tmp_path)
    assert _rels([tmp_path / "site1"]) == {
        str(tmp_path / "site1/a.wav"): "site1/a.wav",
        str(tmp_path / "site1/deep/b.flac"): "site1/deep/b.flac",
    }
    assert _rels([tmp_path / "site2/a.wav"]) == {str(tmp_path / "site2/a.wav"): "a.wav"}
    assert set(_rels([f"{tmp_path}/site1/*.wav"]).values()) == {"site1/a.wav"}
    # two inputs: their names stay apart
    assert set(_rels([tmp_path / "site1", tmp_path / "site2"]).values()) == {
        "site1/a.wav",
        "site1/deep/b.flac",
        "site2/a.wav",
    }


def test_names_that_clash_mirror_their_whole_path(tmp_path):
    _tree(tmp_path)
    rels = _rels([tmp_path / "site1", tmp_path / "other/site1"])
    clashing = [str(tmp_path / "site1/a.wav"), str(tmp_path / "other/site1/a.wav")]
    assert [rels[c] for c in clashing] == [storage.mirrored(c) for c in clashing]
    assert rels[str(tmp_path / "site1/deep/b.flac")] == "site1/deep/b.flac"
    assert len(set(rels.values())) == len(rels)


def test_archive_members_and_odd_names_stay_below_the_output_folder():
    unit = storage.Unit("/data/more.tar.gz", "archive", rel="data/more.tar.gz")
    assert storage.member_rel(unit, "/data/more.tar.gz::site/m.wav") == "data/more/site/m.wav"
    assert storage.member_rel(unit, "/data/more.tar.gz::../../../etc/x.wav") == "data/more/etc/x.wav"
    assert storage.mirrored("s3://bucket/a/../../x.wav") == "bucket/a/x.wav"
    assert storage.safe_relative("/./a//b/../c") == "a/b/c"
