# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# standby:restore_from_barman: restore_command runs barman-wal-restore (`barman get-wal` on the
# backup host over SSH) as postgres. Its key is made here and never leaves; its public half
# goes to the Salt mine for the backup host, whose host key is pinned in known_hosts.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}
{%- set ssh = pg.ssh %}

include:
  - .package

pg_replication-ssh-dir:
  file.directory:
    - name: {{ ssh.home }}/.ssh
    - user: postgres
    - group: postgres
    - mode: '0700'
    - require:
      - sls: {{ tplroot }}.server.package

pg_replication-ssh-key:
  cmd.run:
    - name: {{ ssh.keygen | yaml_dquote }}
    - runas: postgres
    - creates: {{ ssh.key_file }}
    - require:
      - file: pg_replication-ssh-dir

pg_replication-ssh-published:
  pg_replication.ssh_keys_published:
    - name: {{ ssh.mine }}
    - key_file: {{ ssh.key_file }}
    - require:
      - cmd: pg_replication-ssh-key

# The backup host publishes its key in its own highstate: the first run here waits for it.
pg_replication-ssh-barman-host-known:
  pg_replication.ssh_host_known:
    - name: {{ ssh.barman_address }}
    - minion: {{ ssh.barman_id }}
    - mine: {{ ssh.mine }}
    - timeout: {{ pg.standby.bootstrap_timeout }}
    - require:
      - file: pg_replication-ssh-dir
