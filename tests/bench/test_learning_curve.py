"""The learning-curve benchmark's protocol: test, val and training sets are disjoint, the test
set holds at least a third of the audio, and training sizes grow by whole recordings."""

from benchmarks.learning_curve import protocol


def test_splits_are_disjoint_and_sizes_cumulative():
    files = [f"r{i:02d}.wav" for i in range(10)]
    durations = {f: 10.0 for f in files}
    plan = protocol(files, durations, ["15", "30", "60", "all"])
    assert plan["test"] == files[-4:]  # 40 s >= a third of 100 s, taken from the end
    assert plan["val"] == [files[5]]
    train = plan["train"]
    assert list(train) == ["15", "30", "all"]  # 60 s comes to the same 5 recordings as all
    assert train["15"] == files[:1] or train["15"] == files[:2]
    assert train["30"] == files[:3] and train["all"] == files[:5]
    for fs in train.values():
        assert not set(fs) & set(plan["test"] + plan["val"])
