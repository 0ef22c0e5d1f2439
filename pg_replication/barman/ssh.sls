# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# standby:restore_from_barman: sshd, this host's key in the Salt mine for the servers to pin,
# and the servers' keys authorized for `barman get-wal` (and sending the latest backup) of
# this cluster's server only.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}
{%- set ssh = pg.ssh %}

include:
  - .install

pg_replication-barman-sshd:
  pkg.installed:
    - pkgs: {{ ssh.pkgs | json }}
  service.running:
    - name: {{ ssh.service }}
    - enable: True
    - require:
      - pkg: pg_replication-barman-sshd

pg_replication-barman-ssh-published:
  pg_replication.ssh_keys_published:
    - name: {{ ssh.mine }}
    - require:
      - service: pg_replication-barman-sshd

# The forced command of every server's key: the key can run nothing else.
pg_replication-barman-forced-command:
  file.managed:
    - name: {{ ssh.forced_command }}
    - source: salt://{{ tplroot }}/barman/files/barman-forced-command
    - makedirs: True
    - user: root
    - group: root
    - mode: '0755'

# The servers publish their keys in their own highstates: the first run here waits for them.
pg_replication-barman-ssh-clients:
  pg_replication.ssh_clients_authorized:
    - name: {{ ssh.user }}
    - clients: {{ ssh.clients | json }}
    - options: {{ ssh.options | json }}
    - mine: {{ ssh.mine }}
    - timeout: {{ pg.barman.check_timeout }}
    - require:
      - file: pg_replication-barman-forced-command
      - sls: {{ tplroot }}.barman.install
