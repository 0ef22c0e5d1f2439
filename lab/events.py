"""The salt-master's event bus, listened to from the test's process."""

import threading
import time


class MasterEvents:
    """Every event on the lab master's bus whose tag starts with ``prefix``, listened to from
    this process while in the ``with`` block: ``seen`` is ``[(monotonic time, tag, data)]``."""

    def __init__(self, salt_lab, prefix, short=False):
        """``short``: keep the tag's last part only (``salt/pg_replication/ha/promoted`` ->
        ``promoted``)."""
        self.config_file, self.prefix, self.short = str(salt_lab.master.config_file), prefix, short
        self.seen = []
        self._stop, self._ready = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        import salt.config  # pylint: disable=import-outside-toplevel
        import salt.utils.event  # pylint: disable=import-outside-toplevel

        opts = salt.config.master_config(self.config_file)
        bus = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True)
        bus.subscribe(self.prefix)
        self._ready.set()
        try:
            while not self._stop.is_set():
                event = bus.get_event(wait=0.5, tag=self.prefix, full=True)
                if event:
                    tag = event["tag"].rsplit("/", 1)[1] if self.short else event["tag"]
                    self.seen.append((time.monotonic(), tag, event["data"]))
        finally:
            bus.destroy()

    def __enter__(self):
        self._thread.start()
        self._ready.wait(30)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)
