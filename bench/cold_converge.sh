#!/bin/sh
# The reference scenario by hand, the baseline of bench/cold_converge.py: on hosts with the
# packages installed and nothing configured, the steps the formula's first highstate takes
# (cluster, settings, pg_hba, roles and grants, slot, base backup, standby started, Barman's
# server, slot, receive-wal and first backup), as a shell script.
#
#   cold_converge.sh primary|standby|backup MASTER STANDBY BACKUP
# with the passwords in REPL_PW, BARMAN_PW and STREAMING_PW (never in argv).
set -eu
step=$1 master=$2 standby=$3 backup=$4
conf=/etc/postgresql/15/main
data=/var/lib/postgresql/15/main
as_postgres() { runuser -u postgres -- "$@"; }

settings() {
    cat > "$conf/conf.d/bench.conf" <<EOF
listen_addresses = '*'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_log_hints = on
hot_standby = on
password_encryption = 'scram-sha-256'
EOF
}

case $step in
primary)
    pg_createcluster 15 main -- --auth-local=peer --auth-host=scram-sha-256 --encoding=UTF8 >/dev/null
    settings
    cat >> "$conf/pg_hba.conf" <<EOF
host replication replicator $standby/32 scram-sha-256
host replication barman_streaming $backup/32 scram-sha-256
host postgres barman $backup/32 scram-sha-256
EOF
    systemctl start postgresql@15-main
    as_postgres psql -XAtq -v ON_ERROR_STOP=1 \
        -v repl="$REPL_PW" -v barman="$BARMAN_PW" -v streaming="$STREAMING_PW" <<'EOF'
CREATE ROLE replicator LOGIN REPLICATION PASSWORD :'repl';
CREATE ROLE barman LOGIN PASSWORD :'barman' IN ROLE pg_checkpoint, pg_read_all_settings, pg_read_all_stats;
GRANT EXECUTE ON FUNCTION pg_backup_start(text, boolean), pg_backup_stop(boolean), pg_switch_wal(),
    pg_create_restore_point(text) TO barman;
CREATE ROLE barman_streaming LOGIN REPLICATION PASSWORD :'streaming';
SELECT pg_create_physical_replication_slot('standby_slot');
EOF
    ;;
standby)
    echo "$master:5432:*:replicator:$REPL_PW" > /var/lib/postgresql/.pgpass
    chown postgres:postgres /var/lib/postgresql/.pgpass
    chmod 600 /var/lib/postgresql/.pgpass
    pg_createcluster 15 main >/dev/null
    settings
    rm -rf "$data"
    as_postgres pg_basebackup -D "$data" -h "$master" -U replicator -X stream -S standby_slot -c fast -R -w
    systemctl start postgresql@15-main
    until [ "$(as_postgres psql -XAtq -c 'SELECT status FROM pg_stat_wal_receiver')" = streaming ]; do
        sleep 0.2
    done
    ;;
backup)
    cat > /etc/barman.d/master-streaming.conf <<EOF
[master-streaming]
conninfo = host=$master user=barman dbname=postgres
streaming_conninfo = host=$master user=barman_streaming
backup_method = postgres
streaming_archiver = on
slot_name = barman_slot
immediate_checkpoint = true
path_prefix = /usr/lib/postgresql/15/bin
EOF
    cat > /var/lib/barman/.pgpass <<EOF
$master:5432:postgres:barman:$BARMAN_PW
$master:5432:*:barman_streaming:$STREAMING_PW
EOF
    chown barman:barman /var/lib/barman/.pgpass
    chmod 600 /var/lib/barman/.pgpass
    as_barman() { runuser -u barman -- "$@"; }
    as_barman barman receive-wal --create-slot master-streaming >/dev/null
    as_barman barman cron >/dev/null
    as_barman barman switch-wal --archive --archive-timeout 120 master-streaming >/dev/null
    as_barman barman backup --wait master-streaming >/dev/null
    ;;
*)
    echo "usage: $0 primary|standby|backup MASTER STANDBY BACKUP" >&2
    exit 2
    ;;
esac
