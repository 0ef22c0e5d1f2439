"""No password or verifier in state returns, debug logs or any process's command line."""

import json
import logging

from tests.cmdline_scanner import CmdlineScanner

PASSWORDS = ("secrecy-first-Pa55word", "secrecy-second-Pa55word")


def test_passwords_never_leak(states, modules, postgres, caplog):
    caplog.set_level(logging.DEBUG)
    scanner = CmdlineScanner(list(PASSWORDS))
    scanner.start()
    rets = []
    try:
        for password in PASSWORDS:  # create, then change the password
            for test in (True, False):
                rets.append(states.pg_replication.role_present("secret_role", password=password, test=test))
        rets.append(states.pg_replication.role_present("secret_role", password=PASSWORDS[1], replication=True))
    finally:
        scanner.stop.set()
        scanner.join()
    try:
        assert rets[1].changes["password"] == "set"
        assert rets[3].changes["password"] == "changed"
        stored = postgres.fetch_one("SELECT rolpassword FROM pg_authid WHERE rolname = 'secret_role'")
        assert stored.startswith("SCRAM-SHA-256$")
        secrets = [*PASSWORDS, stored, stored.split("$", 2)[2]]
        returned = json.dumps([r.raw for r in rets], default=str)
        # The test harness (saltfactories' StateFunction) logs the call it is asked to make,
        # arguments included; that is this test's own call, not something Salt or we log.
        records = [r for r in caplog.records if not r.name.startswith("saltfactories")]
        logged = "\n".join(r.getMessage() for r in records)
        assert len(records) > 10  # debug logging was on and captured
        for secret in secrets:
            assert secret not in returned
            assert secret not in logged
        assert scanner.scans > 0
        assert scanner.hits == []
    finally:
        modules.pg_replication.role_drop("secret_role")


def test_plan_returns_passwords_only_when_asked(modules, merged_config):
    import yaml  # pylint: disable=import-outside-toplevel

    from tests.conftest import REPO_ROOT  # pylint: disable=import-outside-toplevel

    config = merged_config(yaml.safe_load((REPO_ROOT / "pillar.example").read_text())["pg_replication"])
    secret = config["replication"]["password"]
    shown = modules.pg_replication.plan(config, "backup")
    assert secret not in str(shown)
    assert shown["replication"]["password"] == "********"
    assert shown["barman_servers"][0]["password"] == "********"
    assert modules.pg_replication.plan(config, "backup", secrets=True)["replication"]["password"] == secret
