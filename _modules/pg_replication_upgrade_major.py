# SPDX-License-Identifier: Apache-2.0
"""The pg_replication execution module: what a major-version upgrade (``salt-run
pg_replication.upgrade_major``) needs on a server: the new version's binaries, free space,
the extensions the new version lacks, and ``pg_upgrade`` itself (``--check`` against a
throw-away new cluster while the old one runs, then the upgrade, and its undo before the new
cluster ever started). Part of ``pg_replication`` (see pg_replication.py).

Runs on the minion's Python (3.9 on Debian 11). What it decides (initdb's arguments, the
command lines) is pure code in ``_utils/pg_replication_upgrade_major.py``.
"""

import os
import re
import shutil

import salt.utils.files
from salt.exceptions import CommandExecutionError

__virtualname__ = "pg_replication"

# The binaries of the new version an upgrade runs.
NEW_BINARIES = ("postgres", "initdb", "pg_ctl", "pg_upgrade", "pg_controldata", "vacuumdb", "pg_basebackup")


def __virtual__():
    # One of the files of the pg_replication module (Salt merges the functions of files
    # that share a virtual name); loads without psycopg2, like pg_replication.py.
    return __virtualname__


def _pure(name):
    return __utils__[f"pg_replication_upgrade_major.{name}"]


def upgrade_facts(data_dir, new_bin_dir, new_data_dir):
    """
    What an upgrade to the version of ``new_bin_dir`` and ``new_data_dir`` finds on this
    server: ``binaries`` (each of the new version's commands: whether it is there),
    ``new_data_dir_empty`` (absent or empty: nothing is overwritten), ``data_bytes`` (the size
    of the current cluster's ``data_dir``, 0 without one) and ``free_bytes`` (free space where
    the new data directory goes). Changes nothing.

    CLI Example:

    .. code-block:: bash

        salt '*' pg_replication.upgrade_facts /var/lib/postgresql/17/main \\
            /usr/lib/postgresql/18/bin /var/lib/postgresql/18/main
    """
    binaries = {name: os.access(os.path.join(new_bin_dir, name), os.X_OK) for name in NEW_BINARIES}
    try:
        empty = not os.listdir(new_data_dir)
    except FileNotFoundError:
        empty = True
    except OSError as exc:
        raise CommandExecutionError(f"cannot read {new_data_dir}: {exc}") from exc
    parent = new_data_dir
    while not os.path.isdir(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    return {
        "binaries": binaries,
        "new_data_dir_empty": empty,
        "data_bytes": _size(data_dir),
        "free_bytes": shutil.disk_usage(parent).free,
    }


def _size(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue  # a file removed while walking (WAL recycled)
    return total


def extensions_missing(new_version, share_dir=None, **kwargs):
    """
    The extensions installed in this server's databases whose control file the new
    PostgreSQL version (its ``share_dir``, default ``pg_config --sharedir`` of
    /usr/lib/postgresql/<new_version>/bin, else /usr/share/postgresql/<new_version>) does not
    have: ``["db: extension"]``, empty when pg_upgrade will find every one.

    CLI Example:

    .. code-block:: bash

        salt primary pg_replication.extensions_missing 18
    """
    share_dir = share_dir or _share_dir(new_version)
    missing = []
    for db, extensions in _in_each_database("SELECT extname FROM pg_extension ORDER BY extname", kwargs):
        for ext in extensions:
            if not os.path.exists(os.path.join(share_dir, "extension", f"{ext['extname']}.control")):
                missing.append(f"{db}: {ext['extname']}")
    return missing


def column_options(**kwargs):
    """
    The column options (``pg_attribute.attoptions``, what ``ALTER TABLE ... ALTER COLUMN
    ... SET (...)`` stores) in use in this server's databases, system catalogs included:
    ``{"db": [option names]}``. pg_upgrade's dump sets them again in the new cluster, which
    refuses a name it does not know.

    CLI Example:

    .. code-block:: bash

        salt primary pg_replication.column_options
    """
    statement = (
        "SELECT DISTINCT split_part(option, '=', 1) AS name FROM pg_attribute, unnest(attoptions) AS option ORDER BY 1"
    )
    return {db: [n["name"] for n in names] for db, names in _in_each_database(statement, kwargs)}


def _share_dir(version):
    pg_config = f"/usr/lib/postgresql/{int(version)}/bin/pg_config"
    if os.access(pg_config, os.X_OK):
        res = __salt__["cmd.run_all"]([pg_config, "--sharedir"], python_shell=False, ignore_retcode=True)
        if not res["retcode"] and res["stdout"].strip():
            return res["stdout"].strip()
    return f"/usr/share/postgresql/{int(version)}"


def _in_each_database(statement, kwargs):
    """``(database, rows)`` of ``statement`` in each database that takes connections, in
    name order (``kwargs``: the connection settings, Salt's own ``__`` keys left out)."""
    conn = {k: v for k, v in kwargs.items() if not k.startswith("__")}
    for row in _query("SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname", **conn):
        yield row["datname"], _query(statement, **dict(conn, dbname=row["datname"]))


def _query(statement, **kwargs):
    configured = __salt__["config.option"]("pg_replication.connection", {})
    return __utils__["pg_replication_connection.query"](__context__.value(), configured, statement, **kwargs)


def _as_postgres(cmd, cwd, **more):
    """``cmd`` run as postgres (no shell, C locale); ``cmd.run_all``'s answer, whatever its exit code."""
    return __salt__["cmd.run_all"](
        cmd, runas="postgres", cwd=cwd, python_shell=False, ignore_retcode=True, env={"LC_ALL": "C"}, **more
    )


def _run(cmd, cwd, what):
    res = _as_postgres(cmd, cwd)
    if res["retcode"]:
        raise CommandExecutionError(f"{what} failed: {_tail(res)}")
    return res


def _tail(res, lines=15):
    text = "\n".join(part for part in (res.get("stdout"), res.get("stderr")) if part)
    return "\n".join(text.strip().splitlines()[-lines:])


def _checksums_on(data_dir, bin_dir):
    control = __salt__["pg_replication.controldata"](data_dir, bin_dir)
    if not control:
        raise CommandExecutionError(f"{data_dir} holds no cluster")
    return control.get("Data page checksum version", "0") != "0", control


def upgrade_check(old_bin_dir, new_bin_dir, data_dir, config_file, initdb_command, new_version, port=5432,
                  socket_dir="/var/run/postgresql", home="/var/lib/postgresql", mode="link",
                  options=None):  # fmt: skip
    """
    ``pg_upgrade --check`` of this server's running cluster (``data_dir``, started with
    ``config_file``) against a throw-away cluster of the new version, made by the new
    version's ``initdb_command`` (the formula's, with the old cluster's data checksums) in a
    temporary directory under ``home`` and removed after: ``{"ok": bool, "output": the
    last lines, "options_refused": [names]}``. ``options``: the column option names in use
    (:py:func:`column_options`); each one that is not one every release knows is set on a
    column of the throw-away cluster first (its server in single-user mode), as pg_upgrade's
    schema restore will, and ``options_refused`` lists those it refuses as unknown
    (``--check`` does not try them). Changes nothing else.

    CLI Example:

    .. code-block:: bash

        salt primary pg_replication.upgrade_check /usr/lib/postgresql/17/bin \\
            /usr/lib/postgresql/18/bin /var/lib/postgresql/17/main \\
            /etc/postgresql/17/main/postgresql.conf \\
            "/usr/lib/postgresql/18/bin/initdb -D /var/lib/postgresql/18/main -U postgres" 18
    """
    checksums, _control = _checksums_on(data_dir, old_bin_dir)
    scratch = os.path.join(home, f".pg_replication-upgrade-check-{int(new_version)}")
    _remove(scratch)
    try:
        initdb = _pure("initdb_args")(initdb_command, scratch, checksums, new_version)
        _run(initdb, home, "initdb of the throw-away cluster")
        refused = _options_refused(new_bin_dir, scratch, options or (), home)
        cmd = _pure("pg_upgrade_args")(
            old_bin_dir, new_bin_dir, data_dir, scratch, config_file, mode, socket_dir, check=True, old_port=port
        )
        res = _as_postgres(cmd, home)
        return {"ok": not res["retcode"], "output": _tail(res), "options_refused": refused}
    finally:
        _remove(scratch)


def _options_refused(new_bin_dir, scratch, options, home):
    """The column options of ``options`` the new version's server refuses ("unrecognized
    parameter"), each set on a column of the throw-away cluster ``scratch`` (stopped) by its
    server in single-user mode, one statement a line. Names that cannot be written on one
    line are refused without asking."""
    probe = _pure("probe_options")(options)
    if not probe:
        return []
    lines = ["CREATE TABLE pg_replication_probe (c int)"]
    lines += [f"ALTER TABLE pg_replication_probe ALTER COLUMN c SET ({_ident(name)} = 0)" for name in probe]
    res = _as_postgres([os.path.join(new_bin_dir, "postgres"), "--single", "-D", scratch, "template1"], home,
                       stdin="\n".join(lines) + "\n")  # fmt: skip
    if res["retcode"]:
        raise CommandExecutionError(f"the new version's server in single-user mode failed: {_tail(res)}")
    output = "\n".join(part for part in (res.get("stdout"), res.get("stderr")) if part)
    return _pure("options_refused")(options, output)


def _ident(name):
    return '"' + name.replace('"', '""') + '"'


def _remove(path):
    if os.path.lexists(path):
        shutil.rmtree(path)


def upgrade_cluster(old_bin_dir, new_bin_dir, data_dir, new_data_dir, config_file, initdb_command, new_version,
                    socket_dir="/var/run/postgresql", home="/var/lib/postgresql", mode="link"):  # fmt: skip
    """
    Upgrade this server's cluster (``data_dir``, shut down cleanly) into ``new_data_dir``: the
    new version's ``initdb_command`` (the old cluster's data checksums kept), then
    ``pg_upgrade --link`` or ``--clone`` (``mode``). The old cluster stays where it is (with
    ``--link`` it must not be started once the new one has run). Refused unless the old
    cluster is shut down and ``new_data_dir`` absent or empty. On a failure, undone
    (:py:func:`upgrade_undo`): the old cluster can start as before. Returns pg_upgrade's
    last lines.

    CLI Example:

    .. code-block:: bash

        salt primary pg_replication.upgrade_cluster /usr/lib/postgresql/17/bin \\
            /usr/lib/postgresql/18/bin /var/lib/postgresql/17/main /var/lib/postgresql/18/main \\
            /etc/postgresql/17/main/postgresql.conf \\
            "/usr/lib/postgresql/18/bin/initdb -D /var/lib/postgresql/18/main -U postgres" 18
    """
    checksums, control = _checksums_on(data_dir, old_bin_dir)
    if control.get("Database cluster state") != "shut down":
        raise CommandExecutionError(f"{data_dir} is not shut down cleanly: {control.get('Database cluster state')}")
    if os.path.isdir(new_data_dir) and os.listdir(new_data_dir):
        raise CommandExecutionError(f"{new_data_dir} is not empty: nothing was changed")
    try:
        os.makedirs(new_data_dir, mode=0o700, exist_ok=True)
        shutil.chown(new_data_dir, "postgres", "postgres")
        os.chmod(new_data_dir, 0o700)
        _run(_pure("initdb_args")(initdb_command, new_data_dir, checksums, new_version), home, "initdb")
        cmd = _pure("pg_upgrade_args")(old_bin_dir, new_bin_dir, data_dir, new_data_dir, config_file, mode, socket_dir)
        res = _as_postgres(cmd, home)
        if res["retcode"]:
            # The log pg_upgrade points at goes with the new data directory: its end goes into the error.
            raise CommandExecutionError(f"pg_upgrade failed: {_tail(res)}{_logs_named(res.get('stdout') or '')}")
    except (CommandExecutionError, OSError) as exc:
        upgrade_undo(data_dir, new_data_dir)
        raise CommandExecutionError(f"{exc} (undone: {data_dir} can start as before)") from exc
    return _tail(res, 5)


def _logs_named(output, lines=10):
    """The last lines of each log file pg_upgrade's ``output`` names ("Consult the last few
    lines of ...")."""
    out = []
    for path in re.findall(r'"(/[^"]+\.log)"', output):
        try:
            with salt.utils.files.fopen(path) as fh:
                out.append(f"\n{path}:\n" + "\n".join(fh.read().strip().splitlines()[-lines:]))
        except OSError:
            continue
    return "".join(out)


def upgrade_undo(data_dir, new_data_dir):
    """
    Undo :py:func:`upgrade_cluster` before the new cluster has run: the old cluster's
    ``global/pg_control`` back (pg_upgrade --link renames it ``pg_control.old`` when it starts
    linking) and ``new_data_dir`` emptied. Only before the new cluster ever started (with
    --link the old one is not usable after): refused while it runs (its ``postmaster.pid``).
    What it did, as lines.

    CLI Example:

    .. code-block:: bash

        salt primary pg_replication.upgrade_undo /var/lib/postgresql/17/main /var/lib/postgresql/18/main
    """
    done = []
    if os.path.exists(os.path.join(new_data_dir, "postmaster.pid")):
        raise CommandExecutionError(f"{new_data_dir} runs (postmaster.pid): not undone")
    control, old = os.path.join(data_dir, "global", "pg_control"), os.path.join(data_dir, "global", "pg_control.old")
    if os.path.exists(old) and not os.path.exists(control):
        os.rename(old, control)
        done.append(f"{old} renamed back to pg_control")
    if os.path.isdir(new_data_dir):
        for name in os.listdir(new_data_dir):
            path = os.path.join(new_data_dir, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        done.append(f"{new_data_dir} emptied")
    return done


def analyze_new_cluster(new_bin_dir, new_version, socket_dir="/var/run/postgresql", port=5432):
    """
    Rebuild the optimizer statistics of the upgraded cluster: ``vacuumdb --all
    --analyze-in-stages`` (PostgreSQL 18 and later keep most statistics through pg_upgrade:
    ``--missing-stats-only`` there, as the release notes advise). Its last lines.

    CLI Example:

    .. code-block:: bash

        salt primary pg_replication.analyze_new_cluster /usr/lib/postgresql/18/bin 18
    """
    cmd = _pure("vacuumdb_args")(new_bin_dir, new_version, socket_dir, port)
    return _tail(_run(cmd, "/", "vacuumdb"), 5)
