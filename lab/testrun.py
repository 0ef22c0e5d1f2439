"""``make test``: lint, the benchmarks' smoke run and the whole suite, with the lab's images
built in the background from the first second, beside them.

On a machine with no image cache the images (lab/image.py, every release side by side, and
the Vagrant box) build while lint, unit, functional and packaging tests run; the first
integration module that boots a host waits only for the image it needs. At the end one line
says where the time went::

    images built in 190 s (labs waited 0 s for them); tests in 2300 s; make test in 2420 s

A SIGTERM or SIGHUP is passed on to whatever runs (pytest and its workers, the builds), which
unwind as on Ctrl-C: every lab is torn down, every build directory unmounted. Whatever is
still left of the run's labs after that is named and removed: the line ``no lab left behind``
says every teardown ran.
"""

import argparse
import os
import subprocess
import sys
import time

from lab import image
from lab.hosts import DEFAULT_PREFIX, REPO_ROOT, Lab, worker_slots_base
from lab.signals import forward_signals

BUILD_LOG = image.CACHE / "background-build.log"


class Run:
    """The processes of one ``make test``: the background builds and the current step."""

    def __init__(self):
        self.builds = []
        self.step = None
        self.interrupted = False
        forward_signals(self._on_signal)

    def _on_signal(self):
        self.interrupted = True
        return [p.pid for p in [self.step, *self.builds] if p is not None and p.poll() is None]

    def start_builds(self):
        """Every image, and the Vagrant box where Vagrant can run, in the background."""
        image.CACHE.mkdir(parents=True, exist_ok=True)
        log = BUILD_LOG.open("ab")
        commands = [[sys.executable, "-m", "lab.image", "--all"]]
        if _vagrant_available():
            # Needed by the last module only (test_vagrant_up): built below the tests' priority.
            commands.append([sys.executable, "-m", "lab.box", "--no-add", "--nice", str(image.LATER_GROUPS_NICENESS)])
        for cmd in commands:
            self.builds.append(
                subprocess.Popen(cmd, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
            )
        log.close()

    def run(self, cmd):
        """Run one step in the foreground; its exit code (a signal stops the steps after it)."""
        if self.interrupted:
            return 143
        self.step = subprocess.Popen(cmd, cwd=REPO_ROOT)  # noqa: S603
        code = self.step.wait()
        self.step = None
        return code

    def wait_builds(self):
        codes = [p.wait() for p in self.builds]
        if any(codes) and not self.interrupted:
            print(f"an image build failed (exit {codes}); its log: {BUILD_LOG}", flush=True)
            print(BUILD_LOG.read_text(errors="replace")[-4000:], flush=True)
        return max(codes, default=0)


def _vagrant_available():
    from lab import vagrant  # pylint: disable=import-outside-toplevel

    return vagrant.available() is None


def lab_prefixes(jobs):
    """The lab prefixes of a pytest run with ``jobs`` workers (lab.hosts.worker_slot)."""
    workers = os.cpu_count() if jobs == "auto" else int(jobs)
    if not workers:
        return [DEFAULT_PREFIX]
    base = worker_slots_base()[0]
    return [f"{base}{number}" for number in range(workers)]


def remove_leftovers(jobs):
    """What the run's labs left on the machine (nothing, when every teardown ran), removed."""
    left = []
    for prefix in lab_prefixes(jobs):
        found = Lab.leftovers(prefix)
        if found:
            left += found
            Lab.cleanup_stale(prefix)
    return left


def summary(started, tests_seconds):
    """The closing line: images, tests, the whole of ``make test``."""
    wall, lines = image.build_report(started)
    waited = sum(e["seconds"] for e in image.timings_since(started) if e["step"] == "waited")
    for line in lines:
        print(f"  {line}")
    built = f"images built in {wall:.0f} s (labs waited {waited:.0f} s for them)" if lines else "images: all cached"
    return f"{built}; tests in {tests_seconds:.0f} s; make test in {time.time() - started:.0f} s"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--jobs", default="2", help="pytest-xdist workers (0: one process)")
    parser.add_argument("--no-images", action="store_true", help="build no image in the background")
    parser.add_argument("--no-lint", action="store_true", help="pytest only: no lint, no benchmark smoke run")
    args, pytest_args = parser.parse_known_args(argv)
    started = time.time()
    run = Run()
    if not args.no_images:
        run.start_builds()
    code = 0
    if not args.no_lint:
        code = run.run([os.environ.get("MAKE", "make"), "--no-print-directory", "lint", "bench-quick"])
    tests_started = time.time()
    if code == 0:
        # --no-loadscope-reorder: xdist would otherwise hand out the modules with the most
        # tests first (integration ones among them); tests/conftest.py's order stands.
        pytest = [sys.executable, "-m", "pytest", "-n", args.jobs, "--dist", "loadfile", "--no-loadscope-reorder"]
        code = run.run([*pytest, *pytest_args])
    tests_seconds = time.time() - tests_started
    # Never leave a build behind: wait for them even after a failed step.
    builds = run.wait_builds()
    code = code or builds or (143 if run.interrupted else 0)
    left = remove_leftovers(args.jobs)
    print(f"left behind by the labs: {', '.join(left)} (removed)" if left else "no lab left behind", flush=True)
    print(summary(started, tests_seconds), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
