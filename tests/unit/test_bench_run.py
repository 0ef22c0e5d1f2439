"""bench/run.py: the headline figures it reads from each benchmark's output, the goal
verdicts and the table it writes between the markers of docs/benchmarks.md."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from bench import run  # noqa: E402

BENCH = {b.name: b for b in run.BENCHES}

REAPPLY_OUTPUT = """cold converge (provisioned image): 52.2s
round 1: formula 10.19s, empty 6.87s
re-apply median, 0 changes: 10.19s; empty highstate median: 6.87s
re-apply ratio: 1.48x
"""


def test_a_ratio_above_an_upper_goal_is_missed_below_it_met():
    reapply = BENCH["reapply"]
    assert reapply.verdict(REAPPLY_OUTPUT) == "**missed**"
    assert reapply.verdict(REAPPLY_OUTPUT.replace("1.48x", "1.20x")) == "met"
    assert reapply.figures(REAPPLY_OUTPUT) == (
        "re-apply median, 0 changes: 10.19s; empty highstate median: 6.87s; re-apply ratio: 1.48x"
    )


def test_a_throughput_goal_is_a_lower_bound():
    backup = BENCH["backup"]
    assert backup.verdict("backup throughput ratio: 0.95x\n") == "met"
    assert backup.verdict("backup throughput ratio: 0.61x\n") == "**missed**"
    assert backup.goal_text() == "at least 0.9x"


def test_no_goal_or_no_figure_gives_no_verdict():
    assert BENCH["scale"].verdict("growth per added host, x: cold converge +4.6s\n") == ""
    assert BENCH["reapply"].verdict("Traceback ...\n") == ""


def test_the_table_replaces_only_what_is_between_the_markers(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nIntro.\n\n## Re-apply\n\nProse.\n")
    results = [(BENCH["reapply"], 0, REAPPLY_OUTPUT), (BENCH["backup"], 2, "Traceback\n")]
    run.write(doc, run.table(results, quick=True))
    first = doc.read_text()
    assert first.startswith(f"# Benchmarks\n\n{run.START}\n")
    assert "| re-apply median, 0 changes: 10.19s; empty highstate median: 6.87s; re-apply ratio: 1.48x |" in first
    assert "| failed (exit 2) |" in first
    assert "quick mode" in first
    assert "## Re-apply\n\nProse.\n" in first
    run.write(doc, run.table([(BENCH["reapply"], 0, REAPPLY_OUTPUT.replace("1.48x", "1.20x"))], quick=False))
    second = doc.read_text()
    assert second.count(run.START) == 1
    assert second.count(run.END) == 1
    assert "1.48x" not in second
    assert "| met |" in second
    assert "full runs" in second
    assert second.endswith("## Re-apply\n\nProse.\n")
