"""A real salt-master on the lab bridge and one real salt-minion per lab host, started with
pytest-salt-factories. The formula and ``_modules``/``_states``/``_utils`` are served from
the checkout (``file_roots``), or from a tag of a local repository of it (gitfs,
:mod:`lab.gitfs`); the pillar is the reference pillar with the lab's addresses."""

import contextlib
import json
import pathlib
import secrets
import subprocess
import sys
import time

import attr
import yaml
from saltfactories.daemons.master import SaltMaster
from saltfactories.daemons.minion import SaltMinion

from lab import gitfs as lab_gitfs
from lab.hosts import REPO_ROOT
from lab.minion import formula_tree

TOP = "base:\n  '*':\n    - pg_replication\n"
# The reference scenario's hosts (minion ids) and their roles.
REFERENCE_ROLES = {"master": "primary", "standby": "standby", "backup": "barman"}


@attr.s(kw_only=True, slots=True)
class NamespacedMinion(SaltMinion):
    """A salt-minion started inside a lab host's network, mount and UTS namespaces."""

    host = attr.ib(default=None)

    def cmdline(self, *args):
        return self.host.wrap(super().cmdline(*args))


def reference_pillar(lab, roles=None, **overrides):
    """The reference pillar (as in pillar.example), with the lab's addresses and fresh
    random passwords. ``roles`` maps minion id -> role; hosts without a role are left out."""
    roles = REFERENCE_ROLES if roles is None else roles
    hosts = {}
    for name, role in roles.items():
        if role is None:
            continue
        hosts[name] = {"role": role, "address": lab[name].address}
        if name == "standby":
            hosts[name]["slot"] = "standby_slot"
    pillar = {
        "version": 15,
        "network": str(lab.network),
        "hosts": hosts,
        "replication": {"user": "replicator", "password": secrets.token_urlsafe(18)},
        "barman": {
            "password": secrets.token_urlsafe(18),
            "streaming_password": secrets.token_urlsafe(18),
            "server_name": "master-streaming",
            # The lab's backups start at once, not after a spread checkpoint (~1-2 minutes).
            "immediate_checkpoint": True,
            # No backup from cron in the middle of a test (the schedule test sets one).
            "backup_schedule": None,
        },
        "settings": {},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(pillar.get(key), dict):
            pillar[key].update(value)
        else:
            pillar[key] = value
    return pillar


def second_cluster_pillars(lab, reference, primary="other", backup="backup"):
    """A second cluster whose only server, ``primary``, the reference backup host also backs
    up: the reference pillar gains a ``barman:servers`` entry for it, and ``primary`` gets a
    pillar of its own naming the backup host. Returns (reference pillar, other pillar)."""
    creds = {"password": secrets.token_urlsafe(18), "streaming_password": secrets.token_urlsafe(18)}
    server = {"address": lab[primary].address, "port": 5432, "version": 15, **creds}
    reference = dict(reference, barman=dict(reference["barman"], servers={f"{primary}-streaming": server}))
    other = reference_pillar(lab, roles={primary: "primary", backup: "barman"}, barman=creds)
    return reference, other


class SaltLab:
    """The salt-master and minions of a :class:`lab.hosts.Lab`."""

    _client = None
    _runners_synced = False
    _modules_synced = False
    _pillar_changed = True

    def __init__(self, factories, lab, pillar, other_pillars=None, gitfs=False, engines=None):
        """``pillar`` is the reference cluster's, for every host; ``other_pillars`` maps a
        minion id to the pillar of another cluster it belongs to instead. ``gitfs``: the
        master serves the formula and the top file from local git repositories through
        gitfs only (:mod:`lab.gitfs`; their paths in ``self.gitfs``), not from the checkout.
        ``engines``: the master's ``engines`` configuration (e.g. the formula's HA engine),
        loaded from the checkout's ``_engines`` (with its ``_utils`` and ``_runners``) since
        the master starts them before anything is synced."""
        self.factories = factories
        self.engines = engines
        self.lab = lab
        self.master = None
        self.minions = {}
        self.state_dir = pathlib.Path(lab.root) / "states"
        self.pillar_dir = pathlib.Path(lab.root) / "pillar"
        self.pillar_dir.mkdir(parents=True, exist_ok=True)
        self.gitfs = None
        if gitfs:
            repos = pathlib.Path(lab.root) / "git"
            self.gitfs = {
                "formula": lab_gitfs.formula_repository(repos / "pg_replication"),
                "site": lab_gitfs.site_repository(repos / "site", TOP),
            }
        else:
            formula_tree(self.state_dir)
            (self.state_dir / "top.sls").write_text(TOP)
        other_pillars = other_pillars or {}
        self.pillar_top = {
            name: [f"pg_replication_{name}" if name in other_pillars else "pg_replication"] for name in lab.hosts
        }
        self._write_pillar_top(self.pillar_top)
        for name, other in other_pillars.items():
            self.set_pillar(other, f"pg_replication_{name}")
        self.set_pillar(pillar)

    def set_pillar(self, pillar, sls="pg_replication", extra=None):
        """Write ``pillar`` as the ``pg_replication`` key of ``sls``, with the top-level keys
        of ``extra`` beside it (e.g. ``mine_functions``)."""
        if sls == "pg_replication":
            self.pillar = pillar
        path = self.pillar_dir / f"{sls}.sls"
        path.write_text(yaml.safe_dump({"pg_replication": pillar, **(extra or {})}, default_flow_style=False))
        path.chmod(0o600)
        self._pillar_changed = True

    def _write_pillar_top(self, top):
        (self.pillar_dir / "top.sls").write_text(yaml.safe_dump({"base": top}))
        self._pillar_changed = True

    @contextlib.contextmanager
    def pillar_per_minion(self, pillars):
        """Each minion of ``pillars`` gets its own ``pg_replication`` pillar meanwhile (e.g.
        one invalid pillar per minion, so that one ``state.apply`` tries several)."""
        top = dict(self.pillar_top)
        for name, pillar in pillars.items():
            path = self.pillar_dir / f"per_minion_{name}.sls"
            path.write_text(yaml.safe_dump({"pg_replication": pillar}, default_flow_style=False))
            path.chmod(0o600)
            top[name] = [f"per_minion_{name}"]
        self._write_pillar_top(top)
        try:
            yield
        finally:
            self._write_pillar_top(self.pillar_top)

    @contextlib.contextmanager
    def started(self):
        lab = self.lab
        overrides = {"interface": lab.master_address, "pillar_roots": {"base": [str(self.pillar_dir)]}, "timeout": 30}
        factory_class = SaltMaster
        if self.gitfs:
            overrides.update(lab_gitfs.master_config(self.gitfs["formula"], self.gitfs["site"]))
            factory_class = lab_gitfs.GitfsMaster
        else:
            overrides["file_roots"] = {"base": [str(self.state_dir)]}
        if self.engines:
            overrides["engines"] = self.engines
            for key, folder in (("engines_dirs", "_engines"), ("utils_dirs", "_utils"), ("runner_dirs", "_runners")):
                overrides[key] = [str(REPO_ROOT / folder)]
        self.master = self.factories.salt_master_daemon(
            "pgr-salt-master", overrides=overrides, factory_class=factory_class
        )
        addr = {"host": lab.master_address}
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.master.started())
            stack.callback(self._close_client)
            if self.gitfs:
                self._gitfs_fetched()
            if lab.booted:
                self._connect_booted_minions()
                yield self
                return
            for host in lab.hosts.values():
                minion = self.master.salt_minion_daemon(
                    host.name,
                    overrides={
                        "master": lab.master_address,
                        "interface": host.address,
                        "pytest-minion": {"log": dict(addr), "returner_address": dict(addr)},
                    },
                    factory_class=NamespacedMinion,
                    host=host,
                )
                stack.enter_context(minion.started(start_timeout=120))
                self.minions[host.name] = minion
            yield self

    def _gitfs_fetched(self):
        """Fetch the gitfs remotes now (what ``salt-run fileserver.update backend=gitfs`` does,
        in this process: two salt-run commands cost about 20 s on a busy 2-core machine)
        rather than whenever the master's own update loop gets to it."""
        import salt.config  # pylint: disable=import-outside-toplevel
        import salt.fileserver  # pylint: disable=import-outside-toplevel

        fileserver = salt.fileserver.Fileserver(salt.config.master_config(str(self.master.config_file)))
        # The master's own update loop may hold a remote's update lock (this update then skips
        # it): try again until both remotes are served.
        deadline = time.monotonic() + 90
        while True:
            fileserver.update(back=["gitfs"])
            files = fileserver.file_list({"saltenv": "base"})
            if "pg_replication/init.sls" in files and "top.sls" in files:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"gitfs serves no formula or no top file: {files}")
            time.sleep(3)

    def _connect_booted_minions(self, timeout=180):
        """Booted hosts run their salt-minion under systemd: point it at this master (whose
        ports the factory chose) and wait until every one answers."""
        config = {
            "master": self.lab.master_address,
            "master_port": self.master.config["ret_port"],
            "publish_port": self.master.config["publish_port"],
            "log_level_logfile": "debug",
            "acceptance_wait_time": 2,
        }
        for host in self.lab.hosts.values():
            conf = yaml.safe_dump(dict(config, id=host.name))
            host.run(["sh", "-c", f"cat > /etc/salt/minion.d/lab.conf <<'EOF'\n{conf}EOF\n"])
            host.run(["systemctl", "restart", "salt-minion"])
        self.wait_for_minions(timeout)

    def wait_for_minions(self, timeout=180):
        """Wait until every lab host's minion answers the master."""
        deadline = time.monotonic() + timeout
        names = set(self.lab.hosts)
        while time.monotonic() < deadline:
            ret = self.salt("test.ping", timeout=10)
            if isinstance(ret.data, dict) and {m for m, ok in ret.data.items() if ok is True} >= names:
                return
            time.sleep(2)
        raise RuntimeError(f"minions {sorted(names)} did not all answer the master within {timeout}s")

    @contextlib.contextmanager
    def master_stopped(self):
        """The salt-master (and the engines it runs) stopped meanwhile, started again on exit;
        the booted minions, which reconnect by themselves, answer again before it returns."""
        self._close_client()
        with self.master.stopped():
            yield
        self.wait_for_minions(180)

    def minion_log(self, name):
        """The debug log of minion ``name`` (on a booted host, Salt's own /var/log/salt/minion)."""
        if self.lab.booted:
            return self.lab[name].run(["cat", "/var/log/salt/minion"]).stdout
        minion = self.minions[name]
        assert minion.config["log_level_logfile"] == "debug"  # noqa: S101 - the factories' default
        with open(minion.config["log_file"], errors="replace") as fh:
            return fh.read()

    def salt(self, *args, target="*", timeout=900):
        """Run ``salt TARGET ARGS...`` through the master; returns the factories' result."""
        cli = self.master.salt_cli(timeout=timeout)
        return cli.run(*args, minion_tgt=target, _timeout=timeout + 60)

    def call(self, fun, *args, target="*", timeout=300, tgt_type="glob"):
        """Run ``fun`` on the minions through the master's Python API, in this process (no
        ``salt`` CLI to start): ``{minion: {"ret": ..., "retcode": ...}}``. For tight loops."""
        import salt.client  # pylint: disable=import-outside-toplevel

        if self._client is None:
            self._client = salt.client.LocalClient(c_path=str(self.master.config_file))
        return self._client.cmd(target, fun, list(args), timeout=timeout, full_return=True, tgt_type=tgt_type)

    def _close_client(self):
        if self._client is not None:
            self._client.destroy()
            self._client = None

    def run(self, fun, *args, timeout=900):
        """``salt-run FUN ARGS... --out=json`` on the master (the formula's runners and utils synced
        first): a CompletedProcess whose ``data`` is the runner's parsed return."""
        self.sync_master()
        return self._salt_run(fun, *args, timeout=timeout)

    def sync_master(self):
        """``salt-run saltutil.sync_all`` on the master (runners, utils), once per lab: its
        parsed return, or None when it ran already."""
        if self._runners_synced:
            return None
        ret = self._salt_run("saltutil.sync_all", timeout=120)
        if ret.returncode:
            raise RuntimeError(f"salt-run saltutil.sync_all failed: {ret.stdout}{ret.stderr}")
        self._runners_synced = True
        return ret.data

    def _salt_run(self, *args, timeout):
        script = pathlib.Path(sys.executable).parent / "salt-run"
        cmd = [str(script), "-c", str(self.master.config_dir), "--out=json", *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 60, check=False)
        try:
            res.data = json.loads(res.stdout) if res.stdout.strip() else None
        except ValueError:
            res.data = None
        return res

    def sync_modules(self):
        """``saltutil.sync_all`` on every minion, once per lab (the custom modules do not
        change during a run)."""
        if not self._modules_synced:
            self.salt("saltutil.sync_all", timeout=120)
            self._modules_synced = True

    def highstate(self, *args, target="*", timeout=900):
        """``salt TARGET state.apply``, its data keyed by minion id; the custom modules are
        synced once per lab (they do not change during a run), the minions' in-memory pillar
        refreshed when it changed."""
        self.sync_modules()
        if self._pillar_changed:
            self.salt("saltutil.refresh_pillar", "wait=True", timeout=120)
            self._pillar_changed = False
        ret = self.salt("state.apply", *args, target=target, timeout=timeout)
        if target in self.lab.hosts and isinstance(ret.data, dict) and target not in ret.data:
            ret = attr.evolve(ret, data={target: ret.data})  # the factories unwrap a single minion's return
        return ret
