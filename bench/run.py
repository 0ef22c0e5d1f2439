"""``make bench``: run every benchmark in ``bench/`` one after the other (their output goes
to the terminal as it comes), then write the table of their headline figures, with the date
and the machine's size, between the markers in ``docs/benchmarks.md``.

``--quick`` passes ``--quick`` to each (one round, small sizes) and writes the table marked
as quick; ``--only NAME`` (repeatable) runs some; ``--no-write`` leaves the document alone.
Run as root (the lab benchmarks make network namespaces).
"""

import argparse
import datetime
import os
import pathlib
import re
import subprocess
import sys

BENCH_DIR = pathlib.Path(__file__).resolve().parent
DOC = BENCH_DIR.parent / "docs" / "benchmarks.md"
START, END = "<!-- bench table: written by bench/run.py -->", "<!-- end of bench table -->"


class Bench:
    """One benchmark script and how to read its headline figures from its output."""

    def __init__(self, name, title, pattern, goal=None, higher_is_better=False):
        self.name, self.title, self.pattern = name, title, re.compile(pattern, re.MULTILINE)
        self.goal, self.higher_is_better = goal, higher_is_better

    def figures(self, output):
        """The lines of ``output`` that carry the headline figures, joined."""
        return "; ".join(m.group(0).strip() for m in self.pattern.finditer(output))

    def verdict(self, output):
        """'met', 'missed' or '' (no goal, or no figure) for the ratio in ``output``."""
        ratio = re.search(r"ratio: ([0-9.]+)x", output)
        if self.goal is None or not ratio:
            return ""
        value = float(ratio.group(1))
        met = value >= self.goal if self.higher_is_better else value <= self.goal
        return "met" if met else "**missed**"

    def goal_text(self):
        if self.goal is None:
            return "-"
        return f"at least {self.goal}x" if self.higher_is_better else f"at most {self.goal}x"


BENCHES = [
    Bench(
        "roles_slots",
        "Role/slot re-check vs Salt core, Ansible and the floor",
        r"^(re-check median Ansible.*|floor .*|speedup: .*)$",
    ),
    Bench(
        "apps",
        "Application objects re-check (roles, databases, extensions, grants) vs Salt core and Ansible",
        r"^(apps re-check median Ansible.*|apps ratio: .*)$",
        goal=30,
        higher_is_better=True,
    ),
    Bench("reapply", "Re-apply (0 changes) vs an empty highstate", r"^re-apply (median|ratio).*$", goal=1.25),
    Bench("cold_converge", "Cold converge vs the same steps by shell", r"^cold converge (median|ratio).*$", goal=2),
    Bench(
        "backup",
        "Backup state vs raw pg_basebackup",
        r"^(databases: .*|backup (median|throughput ratio).*)$",
        goal=0.9,
        higher_is_better=True,
    ),
    Bench("scale", "Scale: growth per added host", r"^growth per added host.*$"),
    Bench(
        "switchover",
        "Switchover write unavailability vs Patroni",
        r"^(median (ours|patroni) .*|switchover unavailability ratio: .*)$",
        goal=1.0,
    ),
    Bench(
        "failover",
        "Failover (primary host lost) vs Patroni: failure to a writable primary",
        r"^(median (patroni|manual|automatic) .*|failover ratio: .*)$",
        goal=1.0,
    ),
]


def machine():
    """'N cores, M GiB' of this machine."""
    mem_kib = next(
        int(line.split()[1])
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return f"{os.cpu_count()} cores, {mem_kib / 2**20:.0f} GiB"


def run(bench, quick):
    """Run one benchmark, echoing its output; (its exit code, its output)."""
    cmd = [sys.executable, str(BENCH_DIR / f"{bench.name}.py")] + (["--quick"] if quick else [])
    print(f"==> bench/{bench.name}.py{' --quick' if quick else ''}", flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        lines.append(line)
    return proc.wait(), "".join(lines)


def table(results, quick):
    """The Markdown table of ``results`` ([(bench, exit code, output)])."""
    mode = "quick mode (one round, small sizes)" if quick else "full runs"
    rows = [
        f"Written by `make bench` on {datetime.date.today().isoformat()}, {machine()}, {mode}:",
        "",
        "| Benchmark | Figures | Goal | |",
        "|---|---|---|---|",
    ]
    for bench, code, output in results:
        figures = bench.figures(output) if code == 0 else f"failed (exit {code})"
        rows.append(f"| {bench.title} (`bench/{bench.name}.py`) | {figures or '-'} | {bench.goal_text()} "
                    f"| {bench.verdict(output) if code == 0 else ''} |")  # fmt: skip
    return "\n".join(rows)


def write(doc, text):
    """Put ``text`` between the markers of ``doc`` (added after its title if missing)."""
    content = doc.read_text()
    block = f"{START}\n{text}\n{END}"
    if START in content and END in content:
        before, rest = content.split(START, 1)
        content = before + block + rest.split(END, 1)[1]
    else:
        title, _, body = content.partition("\n")
        content = f"{title}\n\n{block}\n{body}"
    doc.write_text(content)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one round each, small sizes")
    parser.add_argument("--only", action="append", choices=[b.name for b in BENCHES], help="run this one (repeatable)")
    parser.add_argument("--no-write", action="store_true", help=f"do not write the table into {DOC.name}")
    args = parser.parse_args(argv)
    chosen = [b for b in BENCHES if not args.only or b.name in args.only]
    results = [(bench, *run(bench, args.quick)) for bench in chosen]
    text = table(results, args.quick)
    print(text)
    if not args.no_write:
        write(DOC, text)
        print(f"table written to {DOC.relative_to(BENCH_DIR.parent)}")
    return max(code for _, code, _ in results)


if __name__ == "__main__":
    sys.exit(main())
