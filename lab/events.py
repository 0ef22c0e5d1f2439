"""The salt-master's event bus, listened to from the test's process."""

import json
import pathlib
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


def ha_state(salt_lab):
    """The HA engine's state file on the lab's master (what cluster_status shows as ``ha``)."""
    path = pathlib.Path(salt_lab.master.config["cachedir"]) / "pg_replication" / "ha.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def engine_watching(salt_lab):
    """What the engine's promotion needs (and the runner's failover reads, through
    pg_replication_ha_proof): mode automatic, the primary healthy, its watchdog seen running."""
    state = ha_state(salt_lab)
    return state.get("mode") == "automatic" and state.get("state") == "healthy" and bool(state.get("watchdog"))
