# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# Monitoring's clean: the exporters and Prometheus the formula runs here stopped and disabled,
# the formula's monitoring files removed (the exporters' queries and TLS files, Barman's
# metrics file and its cron file, the alert rules), and the health beacon (monitoring:beacon)
# gone from the minion's beacons, first (stopping PostgreSQL would otherwise fire its
# events; Salt's beacon.absent reports no changes). The packages' own configuration files
# (exporters' options files, prometheus.yml) go only while they hold the formula's content;
# on Debian the package then gets them back. Never data: Prometheus' time series, the
# monitoring role and the packages stay.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}
{%- set m = pg.monitoring %}
{%- set marker = 'Managed by Salt (pg_replication)' %}
{#- (name, package, service, the package's file the formula writes over) on this host. #}
{%- set services = [] %}
{%- if m.enabled and m.server %}
{%-   do services.append(('postgres-exporter', m.pkgs.postgres_exporter, m.services.postgres_exporter,
                          m.postgres_exporter.defaults_file)) %}
{%- endif %}
{%- if m.enabled and m.backup %}
{%-   do services.append(('node-exporter', m.pkgs.node_exporter, m.services.node_exporter,
                          m.node_exporter.defaults_file)) %}
{%- endif %}
{%- if m.enabled and m.prometheus.here %}
{%-   do services.append(('prometheus', m.pkgs.prometheus, m.services.prometheus, m.prometheus.config_file)) %}
{%- endif %}
{%- if m.enabled and (m.server or m.backup) %}

pg_replication-monitoring-beacon-clean:
  beacon.absent:
    - name: pg_replication_health
    - save: True
    - order: 1
{%- endif %}
{%- for name, pkg, service, conffile in services %}

pg_replication-monitoring-{{ name }}-clean:
  service.dead:
    - name: {{ service }}
    - enable: False

pg_replication-monitoring-{{ name }}-conffile-clean:
  file.absent:
    - name: {{ conffile }}
    - onlyif:
      - fun: file.contains
        path: {{ conffile }}
        text: {{ marker | json }}
    - require:
      - service: pg_replication-monitoring-{{ name }}-clean
{%-   if grains['os_family'] == 'Debian' %}

# The package's conffile back as shipped (dpkg puts back a missing conffile with confmiss).
pg_replication-monitoring-{{ name }}-package-file-clean:
  cmd.run:
    - name: {{ ("apt-get -q -y -o DPkg::Options::=--force-confmiss -o DPkg::Options::=--force-confold"
                ~ " -o DPkg::Options::=--force-confdef install --reinstall \"" ~ pkg
                ~ "=$(dpkg-query -W -f='${Version}' " ~ pkg ~ ")\"") | json }}
    - env:
        DEBIAN_FRONTEND: noninteractive
    - onchanges:
      - file: pg_replication-monitoring-{{ name }}-conffile-clean
    # The reinstall must not start the service again (the package's postinst would).
    - require_in:
      - cmd: pg_replication-monitoring-services-stay-down
{%-   endif %}
{%- endfor %}
{%- if services and grains['os_family'] == 'Debian' %}

# Debian's postinst starts an enabled service only: stopped and disabled they stay.
pg_replication-monitoring-services-stay-down:
  cmd.run:
    - name: {{ ("systemctl disable --now " ~ (services | map(attribute=2) | join(' ')) ~ " || true") | json }}
    - onchanges:
{%-   for name, _, _, _ in services %}
      - cmd: pg_replication-monitoring-{{ name }}-package-file-clean
{%-   endfor %}
{%- endif %}
{%- if m.enabled %}

pg_replication-monitoring-files-clean:
  file.absent:
    - names:
{%-   if m.server %}
      - {{ m.postgres_exporter.queries_file }}
{%-   endif %}
{%-   if m.backup %}
      - {{ m.cron_file }}
      - {{ m.node_exporter.textfile_dir }}/{{ m.barman_metrics_file }}
      - {{ m.barman_metrics_script }}
      - {{ salt['file.join'](salt['file.dirname'](m.barman_metrics_script), 'pg_replication_barman_metrics.py') }}
{%-   endif %}
{%-   if m.prometheus.here %}
      - {{ m.prometheus.rules_file }}
{%-   endif %}
{%-   if m.tls_files %}
      - {{ m.tls_dir }}
{%-   endif %}
{%-   if services %}
    - require:
{%-     for name, _, _, _ in services %}
      - service: pg_replication-monitoring-{{ name }}-clean
{%-     endfor %}
{%-   endif %}
{%- endif %}
