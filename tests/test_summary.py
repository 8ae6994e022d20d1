"""Summaries say what happened: each mode shows the counts that mean something in it (and any
other that is not 0), a failed run says why in one line, and proxies over one directory (xdist
workers) add up to what one proxy would have counted. Unit tests of ``proxy_addon.summary``;
the real runs are in test_cli, test_any_client, test_reliability and test_pytest_plugin."""

from __future__ import annotations

from proxy_addon.summary import Summary


def test_each_mode_shows_the_counts_that_mean_something_in_it():
    s = Summary(requests=3, hits=1, recorded=2, recordings=5, unused=["a.json"])
    lines = {
        mode: Summary(**{**s.__dict__, "mode": mode}).line()
        for mode in ("replay", "record", "auto", "passthrough", "refresh")
    }
    prefix = "cassette summary: "
    assert lines == {
        "replay": prefix + "1 hits, 0 misses, 1 unused recordings (of 5), 2 recorded",
        "record": prefix + "2 recorded, 1 hits",
        "auto": prefix + "1 hits, 2 recorded, 1 unused recordings (of 5)",
        "passthrough": prefix + "3 requests passed through, 1 hits, 2 recorded",
        "refresh": prefix + "1 hits, 2 recorded, 0 misses, 1 unused recordings (of 5)",
    }
    record = Summary(mode="record", recorded=4, recordings=4, unused=["a", "b"], upstream_failed=1)
    assert record.line() == prefix + "4 recorded, 1 not saved (the upstream failed or refused)"


def test_a_failed_run_says_why_in_one_line():
    assert Summary(mode="replay", requests=2, hits=2).failure("replay", {"CI": "true"}) is None
    assert Summary(requests=0).failure("replay", {"CI": "true"}) == (
        "no request reached the proxy (replay mode with CI=true)"
    )
    assert Summary(requests=0).failure("replay", {}) is None
    assert Summary(requests=0).failure("record", {"CI": "true"}) is None
    # a client whose tunnel the replay refused did reach the proxy: that is the reason, alone
    refused = Summary(requests=0, refused_connections=1)
    assert not refused.reached_nothing
    assert refused.failure("replay", {"CI": "true"}) == "1 upstream connections refused"
    both = Summary(requests=3, misses=2, internal_errors=1)
    assert both.failure("replay", {}) == "2 replay misses; 1 internal errors in the proxy"
    assert both.failed


def test_workers_over_one_directory_count_every_recording_once():
    """3 recordings before the run. Worker one started first and recorded a.json and b.json;
    worker two started once a.json existed (so found 4), and recorded c.json."""
    one = Summary(mode="auto", recorded=2, recordings=3 + 2, created=["a.json", "b.json"])
    two = Summary(mode="auto", recorded=1, recordings=4 + 1, created=["c.json"])
    total = Summary.combine([one, two])
    assert total.recordings == 3 + 3  # as one proxy would count: the 3, then a, b and c
    assert total.created == ["a.json", "b.json", "c.json"]
    assert total.recorded == 3
