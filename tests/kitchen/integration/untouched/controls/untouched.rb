# frozen_string_literal: true

# The standby and barman suites converge with test=True: the formula renders and predicts on
# this platform, and nothing is installed, written or started.
control 'pg_replication-dry-run-untouched' do
  title 'test=True changed nothing'
  %w[/var/lib/postgresql/15 /var/lib/postgresql/16 /var/lib/pgsql/16 /etc/barman.d
     /var/lib/barman/.pgpass /etc/apt/sources.list.d/pgdg.list /etc/yum.repos.d/pgdg16.repo].each do |path|
    describe file(path) do
      it { should_not exist }
    end
  end
  # Nothing installed (not only nothing answering: a missing pg_isready exits 127)
  describe command('command -v pg_isready postgres barman') do
    its('stdout') { should eq '' }
  end
  describe port(5432) do
    it { should_not be_listening }
  end
end
