# The primary after one converge (as tests/kitchen/integration/primary/controls/primary.rb).
# (check and failed come from lib.sh)
sql() { runuser -u postgres -- psql -XAtq -h /var/run/postgresql -d postgres -c "$1"; }
. /etc/os-release
if [ "$ID" = debian ]; then
  version=15 conf=/etc/postgresql/15/main data=/var/lib/postgresql/15/main
else
  version=16 conf=/var/lib/pgsql/16/data data=/var/lib/pgsql/16/data
fi
check "PostgreSQL answers" pg_isready -h /var/run/postgresql -p 5432
check "data directory of version $version" grep -qx "$version" "$data/PG_VERSION"
check "wal_level = replica" test "$(sql 'SHOW wal_level')" = replica
check "no trust outside comments in pg_hba.conf" sh -c "! grep -Eq '^[^#]*\\btrust\\b' $conf/pg_hba.conf"
check "standby replication line is scram-sha-256" \
  grep -Eq '^host\s+replication\s+replicator\s+192\.0\.2\.102/32\s+scram-sha-256' "$conf/pg_hba.conf"
check "barman streaming line is scram-sha-256" \
  grep -Eq '^host\s+replication\s+barman_streaming\s+192\.0\.2\.103/32\s+scram-sha-256' "$conf/pg_hba.conf"
check "replicator: REPLICATION only" test "$(sql "SELECT rolreplication, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = 'replicator'")" = "t|f|f"
check "barman is no superuser" test "$(sql "SELECT rolsuper FROM pg_roles WHERE rolname = 'barman'")" = f
check "replicator's password is SCRAM" \
  test "$(sql "SELECT rolpassword LIKE 'SCRAM-SHA-256\$%' FROM pg_authid WHERE rolname = 'replicator'")" = t
check "a physical slot for the standby" \
  test "$(sql "SELECT slot_type FROM pg_replication_slots WHERE slot_name = 'standby_slot'")" = physical
out=$(salt-call --local --config-dir=/tmp/kitchen/etc/salt --id=master --out=json state.apply test=True 2>&1)
check "a second run would change nothing" sh -c "! printf '%s' \"\$1\" | grep -q '\"result\": null'" - "$out"
exit $failed
