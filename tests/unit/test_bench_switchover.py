"""bench/switchover.py: the figures it computes from the probe's samples and the client, the
medians and the ratio it prints, and the order of its rounds."""

import datetime
import pathlib
import sys
import types

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from bench import switchover  # noqa: E402

# (monotonic time, (in recovery, members streaming)) as the probe samples the new primary;
# None: it did not answer.
SAMPLES = [(99.0, (True, 0)), (100.5, (True, 0)), (101.0, None), (102.25, (False, 0)), (104.0, (False, 1)),
           (106.5, (False, 2)), (107.0, (False, 2))]  # fmt: skip


def test_the_new_primary_is_writable_then_streamed_from_by_both_others_seconds_after_the_command():
    assert switchover.first_after(SAMPLES, 100.0, switchover.writable) == 2.25
    assert switchover.first_after(SAMPLES, 100.0, switchover.all_streaming) == 6.5


def test_samples_before_the_command_do_not_count_and_a_state_never_reached_is_none():
    assert switchover.first_after(SAMPLES, 106.6, switchover.all_streaming) == 0.4
    assert switchover.first_after(SAMPLES[:4], 100.0, switchover.all_streaming) is None


def test_a_rounds_figures_come_from_the_client_and_the_samples():
    writer = types.SimpleNamespace(longest_pause=3.456, errors=4, committed=[1, 2, 3])
    figures = switchover.round_figures(writer, SAMPLES, 100.0, 12.345, lost=0)
    assert figures == {"unavailable_s": 3.46, "errors": 4, "writable_s": 2.25, "streaming_s": 6.5,
                       "command_s": 12.35, "committed": 3, "lost": 0}  # fmt: skip


def rounds(*unavailable, lost=0):
    return [{"unavailable_s": u, "errors": 1, "writable_s": u, "streaming_s": None if u > 9 else u, "command_s": 2.0,
             "lost": lost} for u in unavailable]  # fmt: skip


def test_medians_leave_a_timeout_out_and_sum_the_lost_commits():
    figures = switchover.medians(rounds(1.0, 3.0, 10.0, lost=2))
    assert figures["unavailable_s"] == 3.0
    assert figures["streaming_s"] == 2.0
    assert figures["lost"] == 6


def test_the_ratio_is_ours_over_patroni_and_none_without_a_peer_figure():
    assert switchover.ratio({"unavailable_s": 1.5}, {"unavailable_s": 6.0}) == 0.25
    assert switchover.ratio({"unavailable_s": 1.5}, {"unavailable_s": None}) is None


def test_the_summary_prints_the_ratio_the_make_bench_table_reads():
    lines = switchover.summary({"ours": rounds(2.0), "patroni": rounds(4.0)})
    assert lines[-1].startswith("switchover unavailability ratio: 0.5x (ours/Patroni")


def test_rounds_alternate_ours_first():
    assert switchover.schedule(2) == ["ours", "patroni", "ours", "patroni"]
    assert switchover.schedule(1) == ["ours", "patroni"]


def test_make_bench_reads_the_medians_and_judges_the_ratio_against_one():
    from bench import run  # pylint: disable=import-outside-toplevel

    bench = next(b for b in run.BENCHES if b.name == "switchover")
    lines = switchover.summary({"ours": rounds(2.0), "patroni": rounds(4.0)})
    output = "\n".join(["round 1 ours    master -> standby: ...", *lines])
    assert bench.figures(output).count("median") == 2
    assert bench.verdict(output) == "met"
    assert bench.verdict(output.replace("0.5x", "1.33x")) == "**missed**"


def event(tag, fun, second):
    stamp = datetime.datetime(2026, 12, 7, 3, 31, 0, tzinfo=datetime.timezone.utc) + datetime.timedelta(seconds=second)
    return types.SimpleNamespace(tag=tag, stamp=stamp, data={"fun": fun})


def test_the_write_gaps_jobs_are_timed_from_their_new_and_ret_events():
    events = [
        event("salt/job/1/new", "service.stop", 43.6), event("salt/job/1/ret/master", "service.stop", 44.1),
        event("salt/job/2/new", "pg_replication.promote", 44.8),
        event("salt/job/2/ret/standby", "pg_replication.promote", 45.3),
        event("salt/job/3/new", "state.apply", 44.0), event("salt/job/3/ret/master", "state.apply", 50.0),
        event("salt/job/4/new", "pg_replication.position", 46.0),
    ]  # fmt: skip
    spans = switchover.job_spans(events)
    assert [fun for fun, _, _ in spans] == ["service.stop", "pg_replication.promote"]
    assert switchover.gap_path(spans) == "stop 0.50 s, promote 0.50 s; 1.70 s from the stop to the promotion"
    assert switchover.gap_path([]) == "no runner jobs seen"
