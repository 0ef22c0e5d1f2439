# The standby and barman suites converge with test=True: nothing installed, written or
# started (as tests/kitchen/integration/untouched/controls/untouched.rb).
# (check and failed come from lib.sh)
for path in /var/lib/postgresql/15 /var/lib/postgresql/16 /var/lib/pgsql/16 /etc/barman.d \
  /var/lib/barman/.pgpass /etc/apt/sources.list.d/pgdg.list /etc/yum.repos.d/pgdg16.repo; do
  check "$path does not exist" test ! -e "$path"
done
check "nothing installed (pg_isready, barman)" test -z "$(command -v pg_isready barman)"
check "nothing listens on 5432" sh -c "! ss -Hltn 'sport = :5432' | grep -q ."
exit $failed
