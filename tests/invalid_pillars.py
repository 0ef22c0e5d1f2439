"""Invalid pillars, each with the pillar key its error must name.

Shared by the unit test of the plan, the render test (tests/packaging/test_invalid_render.py:
each one through the real Salt loader and map.jinja) and the integration test
(tests/integration/test_topology.py: LAB_CASES through a real salt-master, proving no host
changed). Each case is
(id, path, value, key): ``path`` is where ``value`` goes in the reference pillar (``()``: the whole ``pg_replication``
pillar; ``DELETE``: remove the key; ``SameAs(path)``: the value the pillar has at that other path).
"""

DELETE = object()


class SameAs:
    """The value the pillar holds at ``path`` (e.g. a host's address, whatever the lab's)."""

    def __init__(self, path):
        self.path = path


POOLER = {"hosts": ["backup"], "auth_password": "a-lookup-role-secret"}

DB2 = {
    "address": "192.168.12.101",
    "port": 5432,
    "version": 15,
    "password": "another-cluster-secret",
    "streaming_password": "another-cluster-streaming-secret",
}
NEWLINE_SCRIPT = "\npost_backup_script = touch /tmp/pwned"
CLOUD = {"destination": "s3://backups/pg", "access_key_id": "AKIALAB", "secret_access_key": "lab-secret-key"}

CASES = [
    # Wrong types, at every level.
    ("pillar-is-a-list", (), ["hosts"], "pg_replication: must be a mapping"),
    ("hosts-is-a-list", ("hosts",), ["master", "standby"], "pg_replication:hosts: must be a mapping"),
    ("host-is-a-string", ("hosts", "standby"), "10.0.0.2", "pg_replication:hosts:standby: must be a mapping"),
    ("address-is-a-list", ("hosts", "standby", "address"), ["10.0.0.2"], "pg_replication:hosts:standby:address"),
    ("replication-is-a-list", ("replication",), ["replicator"], "pg_replication:replication: must be a mapping"),
    ("password-is-a-mapping", ("replication", "password"), {"a": 1}, "pg_replication:replication:password"),
    ("settings-is-a-list", ("settings",), ["work_mem=4MB"], "pg_replication:settings: must be a mapping"),
    ("setting-is-a-mapping", ("settings", "work_mem"), {"mb": 4}, "pg_replication:settings:work_mem"),
    ("barman-is-a-string", ("barman",), "yes", "pg_replication:barman: must be a mapping"),
    ("install-is-a-list", ("barman", "install"), ["pip"], "pg_replication:barman:install: must be a mapping"),
    ("servers-is-a-list", ("barman", "servers"), ["db2"], "pg_replication:barman:servers: must be a mapping"),
    ("server-is-a-string", ("barman", "servers"), {"db2": "10.0.0.9"}, "pg_replication:barman:servers:db2"),
    ("standby-is-a-string", ("standby",), "wipe", "pg_replication:standby: must be a mapping"),
    ("wipe-is-a-string", ("standby", "wipe_unrelated_data"), "yes", "pg_replication:standby:wipe_unrelated_data"),
    ("enable-is-a-string", ("service", "enable"), "no", "pg_replication:service:enable"),
    ("initdb-options-is-a-string", ("initdb_options",), "--data-checksums", "pg_replication:initdb_options"),
    ("port-not-a-number", ("port",), "54a32", "pg_replication:port"),
    ("version-too-old", ("version",), 9, "pg_replication:version"),
    ("senders-too-few-for-the-hosts", ("settings", "max_wal_senders"), 3,
     "pg_replication:settings:max_wal_senders: 3 is too small"),
    ("slots-not-a-number", ("settings", "max_replication_slots"), "many",
     "pg_replication:settings:max_replication_slots: must be a whole number"),
    ("restart-mode-unknown", ("restart", "primary"), "yes", "pg_replication:restart:primary"),
    ("spare-senders-negative", ("spare_wal_senders",), -1, "pg_replication:spare_wal_senders"),
    ("redundancy-not-a-number", ("barman", "minimum_redundancy"), "one", "pg_replication:barman:minimum_redundancy"),
    ("immediate-checkpoint-a-string", ("barman", "immediate_checkpoint"), "fast",
     "pg_replication:barman:immediate_checkpoint"),
    ("backup-max-age-zero", ("barman", "backup_max_age"), 0, "pg_replication:barman:backup_max_age"),
    ("role-missing", ("hosts", "standby", "role"), DELETE, "pg_replication:hosts:standby:role: is required"),
    # Typos: an unknown key is refused, never ignored.
    ("typo-in-host-key", ("hosts", "standby", "adress"), "10.0.0.2", "pg_replication:hosts:standby:adress"),
    ("typo-at-top-level", ("setings",), {"work_mem": "8MB"}, "pg_replication:setings: unknown key"),
    ("typo-in-barman", ("barman", "retention"), "REDUNDANCY 3", "pg_replication:barman:retention: unknown key"),
    # postgresql.conf
    ("conf-name-injection", ("settings", "work_mem = 1MB\nshared_preload_libraries"), "x",
     "pg_replication:settings:work_mem = 1MB"),
    ("conf-value-newline", ("settings", "work_mem"), "4MB'\narchive_command = 'touch /tmp/pwned",
     "pg_replication:settings:work_mem"),
    ("conf-reserved-port", ("settings", "port"), 5433, "pg_replication:settings:port"),
    ("conf-reserved-conninfo", ("settings", "primary_conninfo"), "host=10.0.0.66",
     "pg_replication:settings:primary_conninfo"),
    ("conf-reserved-include", ("settings", "include_dir"), "/tmp", "pg_replication:settings:include_dir"),
    ("conf-upper-case-name", ("settings", "Work_Mem"), "8MB", "pg_replication:settings:Work_Mem"),
    # pg_hba.conf
    ("hba-address-trust", ("hosts", "standby", "address"), "10.0.0.2/32 trust", "pg_replication:hosts:standby:address"),
    ("hba-network-trust", ("network",), "0.0.0.0/0 trust", "pg_replication:network"),
    ("hba-user-trust", ("replication", "user"), "replicator all 0.0.0.0/0 trust", "pg_replication:replication:user"),
    # connection strings (primary_conninfo, Barman's conninfo)
    ("conninfo-application-name", ("hosts", "standby", "application_name"), "x host=10.0.0.66",
     "pg_replication:hosts:standby:application_name"),
    ("conninfo-barman-user", ("barman", "user"), "barman host=10.0.0.66", "pg_replication:barman:user"),
    # .pgpass
    ("pgpass-password-newline", ("replication", "password"), "long-enough-password\n*:*:*:*:x",
     "pg_replication:replication:password: contains a control character"),
    ("pgpass-password-number", ("barman", "password"), 123456789012345, "pg_replication:barman:password"),
    # recovery.conf / primary_slot_name and SQL
    ("slot-injection", ("hosts", "standby", "slot"), "standby_slot'\nrestore_command='touch /tmp/pwned",
     "pg_replication:hosts:standby:slot"),
    ("sql-role-injection", ("barman", "streaming_user"), 'x"; DROP ROLE postgres; --',
     "pg_replication:barman:streaming_user"),
    # barman.conf and server files (a newline there is an option Barman runs through a shell)
    ("barman-retention-newline", ("barman", "retention_policy"), "REDUNDANCY 2" + NEWLINE_SCRIPT,
     "pg_replication:barman:retention_policy"),
    ("barman-server-name-section", ("barman", "server_name"), "x]\n[y", "pg_replication:barman:server_name"),
    ("barman-config-dir-newline", ("barman", "config_dir"), "/etc/barman.d" + NEWLINE_SCRIPT,
     "pg_replication:barman:config_dir"),
    ("barman-home-shell", ("barman", "home"), "/var/lib/barman; touch /tmp/pwned", "pg_replication:barman:home"),
    ("barman-server-address", ("barman", "servers"), {"db2": dict(DB2, address="db2 host=10.0.0.66")},
     "pg_replication:barman:servers:db2:address"),
    ("barman-server-retention", ("barman", "servers"), {"db2": dict(DB2, retention_policy="REDUNDANCY %(x)s")},
     "pg_replication:barman:servers:db2:retention_policy"),
    ("barman-interpolation", ("barman", "log_dir"), "/var/log/%(home)s", "pg_replication:barman:log_dir"),
    ("barman-compression-newline", ("barman", "compression"), "gzip" + NEWLINE_SCRIPT,
     "pg_replication:barman:compression"),
    ("barman-backup-compression-lz4-on-13", ("barman", "servers"),
     {"db2": dict(DB2, version=13, backup_compression="lz4")}, "pg_replication:barman:servers:db2:backup_compression"),
    # barman:cloud (its values reach Barman's hook scripts, run through a shell)
    ("cloud-destination-shell", ("barman", "cloud"), dict(CLOUD, destination="s3://backups/pg;touch /tmp/pwned"),
     "pg_replication:barman:cloud:destination"),
    ("cloud-endpoint-path", ("barman", "cloud"), dict(CLOUD, endpoint_url="http://s3.lab:9000/$(id)"),
     "pg_replication:barman:cloud:endpoint_url"),
    ("cloud-secret-newline", ("barman", "cloud"), dict(CLOUD, secret_access_key="lab-secret" + NEWLINE_SCRIPT),
     "pg_replication:barman:cloud:secret_access_key"),
    ("cloud-no-secret", ("barman", "cloud"), {"destination": "s3://backups/pg", "access_key_id": "AKIALAB"},
     "pg_replication:barman:cloud:secret_access_key: is required"),
    ("cloud-with-tar-backups", ("barman",), {"cloud": CLOUD, "backup_compression": "gzip"},
     "pg_replication:barman:backup_compression: barman-cloud-backup copies plain base backups only"),
    ("restore-from-cloud-without-cloud", ("standby", "restore_from_cloud"), True,
     "pg_replication:standby:restore_from_cloud: needs a barman host and pg_replication:barman:cloud"),
    ("restore-from-barman-and-cloud", ("standby",), {"restore_from_barman": True, "restore_from_cloud": True},
     "pg_replication:standby:restore_from_barman: set it or pg_replication:standby:restore_from_cloud, not both"),
    ("bootstrap-from-barman-without-the-link", ("standby", "bootstrap_from"), "barman",
     "pg_replication:standby:bootstrap_from: barman needs pg_replication:standby:restore_from_barman"),
    ("bootstrap-from-elsewhere", ("standby", "bootstrap_from"), "s3", "pg_replication:standby:bootstrap_from"),
    ("keep-not-an-id", ("barman", "keep"), {"latest": "full"}, "pg_replication:barman:keep:latest"),
    ("keep-bad-target", ("barman", "keep"), {"20261207T101500": "forever"},
     "pg_replication:barman:keep:20261207T101500"),
    # cron (/etc/cron.d/pg_replication-barman runs these paths through a shell)
    ("cron-link-shell", ("barman", "install"), {"method": "pip", "link": "/usr/local/bin/barman; touch /tmp/pwned"},
     "pg_replication:barman:install:link"),
    ("cron-config-file", ("barman", "config_file"), "/etc/barman.conf && touch /tmp/pwned",
     "pg_replication:barman:config_file"),
    ("pip-version-shell", ("barman", "install"), {"method": "pip", "version": "3.10; touch /tmp/pwned"},
     "pg_replication:barman:install:version"),
    # command lines (initdb, service names, packages, repositories)
    ("initdb-option-shell", ("initdb_options",), ["--encoding=UTF8; touch /tmp/pwned"],
     "pg_replication:initdb_options:0"),
    ("data-dir-substitution", ("data_dir",), "/var/lib/postgresql/{version}/$(touch /tmp/pwned)",
     "pg_replication:data_dir"),
    ("bin-dir-relative", ("bin_dir",), "../../tmp", "pg_replication:bin_dir"),
    ("bin-dir-dot-dot", ("bin_dir",), "/usr/lib/postgresql/../../../tmp", "pg_replication:bin_dir"),
    ("cluster-shell", ("cluster",), "main; touch /tmp/pwned", "pg_replication:cluster"),
    ("service-name-shell", ("service_name",), "postgresql; reboot", "pg_replication:service_name"),
    ("package-two-names", ("pkgs", "server"), "postgresql-15 netcat", "pg_replication:pkgs:server"),
    ("repo-url-newline", ("repo", "url"), "https://example.org/ bookworm main\ndeb http://10.0.0.66/ x main",
     "pg_replication:repo:url"),
    ("backup-schedule-command", ("barman", "backup_schedule"), "0 3 * * * root touch /tmp/pwned",
     "pg_replication:barman:backup_schedule"),
    ("backup-schedule-newline", ("barman", "backup_schedule"), "0 3 * * *\n* * * * * root touch /tmp/pwned",
     "pg_replication:barman:backup_schedule"),
    # restore drills (barman:drill)
    ("drill-is-a-string", ("barman", "drill"), "weekly", "pg_replication:barman:drill: must be a mapping"),
    ("drill-unknown-key", ("barman", "drill"), {"schedule": "@daily", "when": "now"},
     "pg_replication:barman:drill:when"),
    ("drill-schedule-command", ("barman", "drill"), {"schedule": "* * * * * root touch /tmp/pwned"},
     "pg_replication:barman:drill:schedule"),
    ("drill-target-no-zone", ("barman", "drill"), {"target": "2026-12-01 03:00:00"},
     "pg_replication:barman:drill:target"),
    ("drill-target-bad-date", ("barman", "drill"), {"target": "2026-13-01 03:00:00+00"},
     "pg_replication:barman:drill:target"),
    ("drill-table-shell", ("barman", "drill"), {"tables": ["public.t; touch /tmp/pwned"]},
     "pg_replication:barman:drill:tables:0"),
    ("drill-tables-a-string", ("barman", "drill"), {"tables": "public.t"}, "pg_replication:barman:drill:tables"),
    ("drill-tables-of-a-server-shell", ("barman", "drill"), {"tables": {"master-streaming": ["t; rm -rf /"]}},
     "pg_replication:barman:drill:tables:master-streaming:0"),
    ("drill-timeout-zero", ("barman", "drill"), {"timeout": 0}, "pg_replication:barman:drill:timeout"),
    ("drill-port-privileged", ("barman", "drill"), {"port": 80}, "pg_replication:barman:drill:port"),
    # topology
    ("sync-count-too-large", ("synchronous",), {"method": "any", "count": 2, "standbys": ["standby"]},
     "pg_replication:synchronous:count"),
    ("sync-unknown-standby", ("synchronous",), {"method": "any", "count": 1, "standbys": ["standby9"]},
     "pg_replication:synchronous:standbys:0"),
    ("upstream-unknown", ("hosts", "standby", "upstream"), "standby9", "pg_replication:hosts:standby:upstream"),
    ("upstream-is-itself", ("hosts", "standby", "upstream"), "standby",
     "pg_replication:hosts:standby:upstream: the chain standby -> standby is a cycle"),
    ("upstream-is-the-backup-host", ("hosts", "standby", "upstream"), "backup",
     "pg_replication:hosts:standby:upstream: 'backup' is not a server"),
    ("upstream-on-the-primary", ("hosts", "master", "upstream"), "standby",
     "pg_replication:hosts:master:upstream: only a standby"),
    ("upstream-is-a-list", ("hosts", "standby", "upstream"), ["master"], "pg_replication:hosts:standby:upstream"),
    ("minion-id-space", ("hosts", "ma ster"), {"role": "standby", "address": "10.0.0.9"},
     "pg_replication:hosts:ma ster"),
    # per-host settings, delayed standbys
    ("host-setting-reserved", ("hosts", "standby", "settings"), {"primary_slot_name": "x"},
     "pg_replication:hosts:standby:settings:primary_slot_name"),
    ("host-setting-newline", ("hosts", "standby", "settings"), {"work_mem": "4MB'\narchive_command = 'x"},
     "pg_replication:hosts:standby:settings:work_mem"),
    ("host-setting-hot-standby-minimum", ("hosts", "standby", "settings"), {"max_connections": 50},
     "pg_replication:hosts:standby:settings:max_connections: a standby needs it at least as high"),
    # application objects: databases
    ("database-name-injection", ("databases",), {'x"; DROP DATABASE postgres; --': {}},
     'pg_replication:databases:x"; DROP DATABASE postgres; --'),
    ("database-owner-unknown", ("databases",), {"app": {"owner": "nobody"}}, "pg_replication:databases:app:owner"),
    ("database-owner-injection", ("databases",), {"app": {"owner": "a b"}}, "pg_replication:databases:app:owner"),
    ("database-encoding-newline", ("databases",), {"app": {"encoding": "UTF8\n"}},
     "pg_replication:databases:app:encoding"),
    ("database-locale-quote", ("databases",), {"app": {"locale": "C'; x"}}, "pg_replication:databases:app:locale"),
    ("database-lc-collate", ("databases",), {"app": {"lc_collate": "C UTF8"}},
     "pg_replication:databases:app:lc_collate"),
    ("database-lc-ctype", ("databases",), {"app": {"lc_ctype": 5}}, "pg_replication:databases:app:lc_ctype"),
    ("database-template", ("databases",), {"app": {"template": "tem plate"}}, "pg_replication:databases:app:template"),
    ("database-connlimit", ("databases",), {"app": {"connlimit": "many"}}, "pg_replication:databases:app:connlimit"),
    ("database-system", ("databases",), {"template1": {}}, "pg_replication:databases:template1: template1 is"),
    ("database-typo", ("databases",), {"app": {"ownr": "x"}}, "pg_replication:databases:app:ownr: unknown key"),
    ("extension-name", ("databases",), {"app": {"extensions": {"pg trgm": None}}},
     "pg_replication:databases:app:extensions:pg trgm"),
    ("extension-version", ("databases",), {"app": {"extensions": {"citext": {"version": "1.6'"}}}},
     "pg_replication:databases:app:extensions:citext:version"),
    ("extension-schema", ("databases",), {"app": {"extensions": {"citext": {"schema": "a.b"}}}},
     "pg_replication:databases:app:extensions:citext:schema"),
    ("schema-name", ("databases",), {"app": {"schemas": {"a;b": None}}}, "pg_replication:databases:app:schemas:a;b"),
    ("schema-owner", ("databases",), {"app": {"schemas": {"s": {"owner": "ghost"}}}},
     "pg_replication:databases:app:schemas:s:owner"),
    # roles
    ("role-name", ("roles",), {"bad name": {}}, "pg_replication:roles:bad name"),
    ("role-formula-own", ("roles",), {"replicator": {}},
     "pg_replication:roles:replicator: replicator is the formula's"),
    ("role-login-string", ("roles",), {"app": {"login": "yes"}}, "pg_replication:roles:app:login"),
    ("role-password-weak", ("roles",), {"app": {"password": "short"}}, "pg_replication:roles:app:password"),
    ("role-password-newline", ("roles",), {"app": {"password": "long-enough-password\nx"}},
     "pg_replication:roles:app:password"),
    ("role-attribute", ("roles",), {"app": {"superuser": 1}}, "pg_replication:roles:app:superuser"),
    ("role-connlimit", ("roles",), {"app": {"connlimit": -5}}, "pg_replication:roles:app:connlimit"),
    ("role-valid-until", ("roles",), {"app": {"valid_until": "tomorrow"}}, "pg_replication:roles:app:valid_until"),
    ("role-member-of", ("roles",), {"app": {"member_of": ["ghost"]}}, "pg_replication:roles:app:member_of:0"),
    ("role-member-of-list", ("roles",), {"app": {"member_of": "pg_monitor"}}, "pg_replication:roles:app:member_of"),
    # privileges
    ("privileges-not-a-list", ("privileges",), {"role": "x"}, "pg_replication:privileges: must be a list"),
    ("privilege-role", ("privileges",), [{"role": "ghost", "database": "postgres", "on": "database",
                                          "privileges": ["CONNECT"]}], "pg_replication:privileges:0:role"),
    ("privilege-database", ("privileges",), [{"role": "PUBLIC", "database": "nodb", "on": "database",
                                              "privileges": ["CONNECT"]}], "pg_replication:privileges:0:database"),
    ("privilege-on", ("privileges",), [{"role": "PUBLIC", "database": "postgres", "on": "views",
                                        "privileges": ["SELECT"]}], "pg_replication:privileges:0:on"),
    ("privilege-keyword", ("privileges",), [{"role": "PUBLIC", "database": "postgres", "on": "schema",
                                             "schema": "public", "privileges": ["SELECT; DROP"]}],
     "pg_replication:privileges:0:privileges:0"),
    ("privilege-wrong-kind", ("privileges",), [{"role": "PUBLIC", "database": "postgres", "on": "schema",
                                                "schema": "public", "privileges": ["SELECT"]}],
     "pg_replication:privileges:0:privileges:0: SELECT is not a privilege on schema"),
    ("privilege-no-schema", ("privileges",), [{"role": "PUBLIC", "database": "postgres", "on": "tables",
                                               "privileges": ["SELECT"]}], "pg_replication:privileges:0:schema"),
    ("privilege-objects", ("privileges",), [{"role": "PUBLIC", "database": "postgres", "on": "tables",
                                             "schema": "public", "objects": ["t; x"], "privileges": ["SELECT"]}],
     "pg_replication:privileges:0:objects:0"),
    ("privilege-default-for", ("privileges",), [{"role": "PUBLIC", "database": "postgres", "on": "tables",
                                                 "default_for": "ghost", "privileges": ["SELECT"]}],
     "pg_replication:privileges:0:default_for"),
    ("privilege-missing-role", ("privileges",), [{"database": "postgres", "on": "database", "privileges": []}],
     "pg_replication:privileges:0:role: is required"),
    # pg_hba.conf rules
    ("hba-rule-trust", ("hba",), [{"type": "host", "database": "all", "user": "all", "address": "0.0.0.0/0",
                                   "method": "trust"}], "pg_replication:hba:0:method"),
    ("hba-rule-type", ("hba",), [{"type": "hostnossl", "database": "all", "user": "all", "address": "10.0.0.0/8",
                                  "method": "reject"}], "pg_replication:hba:0:type"),
    ("hba-rule-database", ("hba",), [{"type": "host", "database": "all all", "user": "x", "address": "10.0.0.0/8",
                                      "method": "reject"}], "pg_replication:hba:0:database"),
    ("hba-rule-user", ("hba",), [{"type": "host", "database": "otus", "user": "x\nhost all all 0/0 trust",
                                  "address": "10.0.0.0/8", "method": "reject"}], "pg_replication:hba:0:user"),
    ("hba-rule-address", ("hba",), [{"type": "host", "database": "otus", "user": "x", "address": "10.0.0.0/8 trust",
                                     "method": "scram-sha-256"}], "pg_replication:hba:0:address"),
    ("hba-rule-no-address", ("hba",), [{"type": "host", "database": "otus", "user": "x", "method": "scram-sha-256"}],
     "pg_replication:hba:0:address: is required"),
    ("hba-rule-local-address", ("hba",), [{"type": "local", "database": "otus", "user": "x", "address": "10.0.0.0/8",
                                           "method": "peer"}], "pg_replication:hba:0:address: a local rule"),
    ("hba-rule-peer-host", ("hba",), [{"type": "host", "database": "otus", "user": "x", "address": "10.0.0.0/8",
                                       "method": "peer"}], "pg_replication:hba:0:method: peer"),
    # absent
    ("absent-not-a-list", ("absent", "roles"), "old", "pg_replication:absent:roles"),
    ("absent-postgres", ("absent", "roles"), ["postgres"], "pg_replication:absent:roles:0"),
    ("absent-system-database", ("absent", "databases"), ["template0"], "pg_replication:absent:databases:0"),
    ("absent-typo", ("absent", "role"), ["x"], "pg_replication:absent:role: unknown key"),
    # monitoring
    ("monitoring-reserved-role", ("monitoring",), {"enabled": True, "user": "pg_exporter"},
     "pg_replication:monitoring:user: 'pg_exporter' is not a valid role name"),
    ("monitoring-prometheus-host-unknown", ("monitoring",), {"enabled": True, "prometheus": {"host": "prom9"}},
     "pg_replication:monitoring:prometheus:host: 'prom9' is not in pg_replication:hosts"),
    ("monitoring-duration", ("monitoring", "alerts"), {"for": "2 minutes"}, "pg_replication:monitoring:alerts:for"),
    ("monitoring-tls-without-ca", ("monitoring",), {"enabled": True, "tls": True},
     "pg_replication:monitoring:tls: needs pg_replication:tls:ca_cert"),
    ("monitoring-service-name", ("monitoring", "services"), {"node_exporter": "node exporter"},
     "pg_replication:monitoring:services:node_exporter"),
    # Clients follow the primary (issue #29): the VIP and the poolers.
    ("vip-outside-the-network", ("vip",), "203.0.113.7", "pg_replication:vip: 203.0.113.7 is outside"),
    ("vip-is-a-host", ("vip",), SameAs(("hosts", "master", "address")),
     "is the address of master (pg_replication:hosts:master:address)"),
    ("vip-not-an-address", ("vip",), "10.0.0.300", "pg_replication:vip: '10.0.0.300' is not an IP address"),
    ("pool-size-zero", ("pooler", "default_pool_size"), 0, "pg_replication:pooler:default_pool_size"),
    ("max-client-conn-negative", ("pooler", "max_client_conn"), -5, "pg_replication:pooler:max_client_conn"),
    ("pooler-target-unknown", ("pooler", "target"), "haproxy", "pg_replication:pooler:target: 'haproxy'"),
    ("pooler-host-unknown", ("pooler", "hosts"), ["nowhere"], "pg_replication:pooler:hosts:0: 'nowhere'"),
    ("pooler-port-is-the-servers", ("pooler",), dict(POOLER, hosts=["standby"], port=5432),
     "pg_replication:pooler:port: 5432 is the servers' port"),
    ("pooler-without-lookup-password", ("pooler",), {"hosts": ["backup"]},
     "pg_replication:pooler:auth_password: a password is required"),
    # Automatic failover (issue #28): the mode, and the timings' invariant.
    ("ha-mode-unknown", ("ha", "mode"), "auto", "pg_replication:ha:mode: 'auto' is not one of manual, automatic"),
    ("ha-failover-before-the-fence", ("ha",), {"fence_timeout": 20, "failover_timeout": 23},
     "pg_replication:ha:failover_timeout: 23 s must be at least"),
]  # fmt: skip

# Cases the integration test leaves to the unit test (the same render path, through the same
# plan): the application objects' fields, each checked by the schema alone. The integration
# test keeps one per kind (host settings, database, role, privilege, hba rule, absent), so
# that CI's time budget holds.
PLAN_ONLY = frozenset(
    (
        # barman:drill: the render test keeps the injection (drill-schedule-command).
        "drill-is-a-string",
        "drill-unknown-key",
        "drill-target-no-zone",
        "drill-target-bad-date",
        "drill-table-shell",
        "drill-tables-a-string",
        "drill-tables-of-a-server-shell",
        "drill-timeout-zero",
        "drill-port-privileged",
        "host-setting-newline",
        "host-setting-hot-standby-minimum",
        "database-owner-unknown",
        "database-owner-injection",
        "database-encoding-newline",
        "database-locale-quote",
        "database-lc-collate",
        "database-lc-ctype",
        "database-template",
        "database-connlimit",
        "database-system",
        "database-typo",
        "extension-name",
        "extension-version",
        "extension-schema",
        "schema-name",
        "schema-owner",
        "role-name",
        "role-formula-own",
        "role-login-string",
        "role-password-weak",
        "role-attribute",
        "role-connlimit",
        "role-valid-until",
        "role-member-of",
        "role-member-of-list",
        "privileges-not-a-list",
        "privilege-role",
        "privilege-database",
        "privilege-on",
        "privilege-wrong-kind",
        "privilege-no-schema",
        "privilege-objects",
        "privilege-default-for",
        "privilege-missing-role",
        "hba-rule-trust",
        "hba-rule-type",
        "hba-rule-database",
        "hba-rule-address",
        "hba-rule-no-address",
        "hba-rule-local-address",
        "hba-rule-peer-host",
        "absent-not-a-list",
        "absent-system-database",
        "absent-typo",
        # (the render path of monitoring's keys: the lab tries the other monitoring cases)
        "monitoring-tls-without-ca",
        "monitoring-service-name",
    )
)
RENDER_CASES = [case for case in CASES if case[0] not in PLAN_ONLY]

# The cases the lab applies through a real salt-master (tests/integration/test_topology.py),
# one of each kind: every case renders in-process through the same loader and map.jinja in
# tests/packaging/test_invalid_render.py, at a fraction of the lab's cost. Two batches of six
# minions.
LAB_CASES = frozenset(
    (
        "pillar-is-a-list",  # a wrong type at the top
        "setting-is-a-mapping",  # ... and nested
        "typo-in-host-key",  # an unknown key
        "conf-name-injection",  # postgresql.conf
        "hba-address-trust",  # pg_hba.conf
        "pgpass-password-newline",  # .pgpass
        "sql-role-injection",  # SQL
        "barman-server-name-section",  # Barman's configuration
        "backup-schedule-command",  # a cron line
        "upstream-is-itself",  # an impossible topology
        "database-name-injection",  # the application's objects
        "ha-failover-before-the-fence",  # a plan invariant across keys
    )
)


def mutate(pillar, path, value):
    """A copy of ``pillar`` with ``value`` at ``path`` (see the module docstring)."""
    import copy  # pylint: disable=import-outside-toplevel

    if not path:
        return copy.deepcopy(value)
    pillar = copy.deepcopy(pillar)
    node = pillar
    for key in path[:-1]:
        node = node.setdefault(key, {})
    if isinstance(value, SameAs):
        value = _at(pillar, value.path)
    if value is DELETE:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = copy.deepcopy(value)
    return pillar


def _at(pillar, path):
    for key in path:
        pillar = pillar[key]
    return pillar
