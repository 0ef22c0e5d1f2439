# frozen_string_literal: true

# The standby and barman suites converge with test=True: the formula renders and predicts on
# this platform, and nothing is installed, written or started.
control 'pg_replication-dry-run-untouched' do
  title 'test=True changed nothing'
  %w[/var/lib/postgresql/16 /var/lib/pgsql/16 /etc/barman.d /var/lib/barman/.pgpass
     /etc/apt/sources.list.d/pgdg.list /etc/yum.repos.d/pgdg16.repo].each do |path|
    describe file(path) do
      it { should_not exist }
    end
  end
  describe command('pg_isready -h /var/run/postgresql -p 5432') do
    its('exit_status') { should_not eq 0 }
  end
end
