# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# A server's clean: PostgreSQL stopped and disabled, the formula's configuration files
# (TLS certificates and key included) removed; the floating address (pg_replication:vip)
# dropped, with its ExecStopPost script and drop-in. The data directory (and standby.signal /
# recovery.conf in it) is left alone.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}
{%- set files = ['postgresql.conf', 'pg_hba.conf', 'pg_ident.conf'] %}
{%- if grains['os_family'] == 'Debian' %}
{%-   do files.extend(['start.conf', 'pg_ctl.conf', 'environment']) %}
{%- endif %}

pg_replication-service-clean:
  service.dead:
    - name: {{ pg.service_name }}
    - enable: False

pg_replication-config-clean:
  file.absent:
    - names:
{%- for filename in files %}
      - {{ pg.conf_dir }}/{{ filename }}
{%- endfor %}
      - {{ pg.home }}/.pgpass
{%- if pg.cloud_credentials %}
      - {{ pg.cloud_credentials }}
{%- endif %}
{%- if pg.ssh %}
      - {{ pg.ssh.key_file }}
      - {{ pg.ssh.key_file }}.pub
{%- endif %}
      - {{ pg.home }}/.pg_replication-slots-{{ pg.version }}-{{ pg.cluster }}.json
{%- if pg.createcluster_conf %}
      - {{ pg.createcluster_conf }}
{%- endif %}
{%- for path in (pg.tls or {}).values() | sort %}
      - {{ path }}
{%- endfor %}
{%- if pg.peer_tls %}
      - {{ salt['file.dirname'](pg.peer_tls.sslrootcert) }}
{%- endif %}
    - require:
      - service: pg_replication-service-clean

{%- if pg.ssh %}

# standby:restore_from_barman: the backup host's pinned key leaves postgres's known_hosts.
pg_replication-ssh-barman-host-clean:
  ssh_known_hosts.absent:
    - name: {{ pg.ssh.barman_address }}
    - user: postgres
{%- endif %}

{%- if grains.get('init') == 'systemd' %}

# Debian's postgresql-common generator enables at runtime the unit of each cluster with a
# postgresql.conf (and start.conf auto): reload systemd once they are gone, so it is not.
pg_replication-systemd-reload-clean:
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: pg_replication-config-clean
{%- endif %}

{%- if pg.routing.vip %}

# Once PostgreSQL is stopped: the clients' floating address leaves this host.
pg_replication-vip-clean:
  pg_replication.vip:
    - name: {{ pg.routing.vip }}
    - prefix: {{ pg.routing.vip_prefix }}
    - beside: {{ pg.me.address }}
    - present: False
    - require:
      - service: pg_replication-service-clean

pg_replication-vip-files-clean:
  file.absent:
    - names:
      - {{ pg.routing.vip_drop_script }}
      - /etc/systemd/system/{{ pg.service_name }}.service.d/pg_replication-vip.conf
    - require:
      - pg_replication: pg_replication-vip-clean
{%-   if grains.get('init') == 'systemd' %}

pg_replication-vip-systemd-reload-clean:
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: pg_replication-vip-files-clean
{%-   endif %}
{%- endif %}
