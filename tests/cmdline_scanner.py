"""Watch every process's command line for secrets while something runs (shared by the
functional secrecy test and the TLS lab's)."""

import os
import threading


class CmdlineScanner(threading.Thread):
    """Reads every process's command line, over and over, until stopped."""

    def __init__(self, needles):
        super().__init__(daemon=True)
        self.needles = needles
        self.hits = []
        self.scans = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as fh:
                        cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                self.hits += [(pid, cmdline) for n in self.needles if n in cmdline]
            self.scans += 1
