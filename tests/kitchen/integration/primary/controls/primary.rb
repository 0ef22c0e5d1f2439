# frozen_string_literal: true

# The primary of tests/kitchen/pillar/cluster.sls (Debian: the distribution's 15) or
# cluster-upstream.sls (RedHat: 16) after one converge.
debian = os.family == 'debian'
version = debian ? 15 : 16
conf_dir = debian ? "/etc/postgresql/#{version}/main" : "/var/lib/pgsql/#{version}/data"
data_dir = debian ? "/var/lib/postgresql/#{version}/main" : "/var/lib/pgsql/#{version}/data"

def psql(sql)
  command("runuser -u postgres -- psql -XAtq -h /var/run/postgresql -d postgres -c \"#{sql}\"")
end

control 'pg_replication-primary-server' do
  title 'PostgreSQL runs from the formula-made data directory'
  describe command('pg_isready -h /var/run/postgresql -p 5432') do
    its('exit_status') { should eq 0 }
  end
  describe file("#{data_dir}/PG_VERSION") do
    its('content') { should match(/^#{version}$/) }
  end
  describe psql('SHOW wal_level') do
    its('stdout.strip') { should eq 'replica' }
  end
end

control 'pg_replication-primary-security' do
  title 'scram-sha-256 on every TCP line, no trust, least-privilege roles'
  describe file("#{conf_dir}/pg_hba.conf") do
    # no line outside a comment trusts anyone (the file's comments may say so)
    its('content') { should_not match(/^[^#\n]*\btrust\b/) }
    its('content') { should match(%r{^host\s+replication\s+replicator\s+192\.0\.2\.102/32\s+scram-sha-256}) }
    its('content') { should match(%r{^host\s+replication\s+barman_streaming\s+192\.0\.2\.103/32\s+scram-sha-256}) }
  end
  describe psql("SELECT rolreplication, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = 'replicator'") do
    its('stdout.strip') { should eq 't|f|f' }
  end
  describe psql("SELECT rolsuper FROM pg_roles WHERE rolname = 'barman'") do
    its('stdout.strip') { should eq 'f' }
  end
  describe psql("SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'replicator'") do
    its('stdout.strip') { should eq 't' }
  end
end

control 'pg_replication-primary-slots' do
  title 'A physical slot per standby'
  describe psql("SELECT slot_type FROM pg_replication_slots WHERE slot_name = 'standby_slot'") do
    its('stdout.strip') { should eq 'physical' }
  end
end

control 'pg_replication-primary-idempotent' do
  title 'A second run changes nothing'
  describe command('salt-call --local --config-dir=/tmp/kitchen/etc/salt --id=master --out=json state.apply test=True') do
    its('exit_status') { should eq 0 }
    its('stdout') { should_not match(/"result": null/) }
  end
end
