# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# This minion's validated plan, its secrets redacted, written to
# /tmp/salt_mapdata_pg_replication_<minion id>.yaml (template-formula's _mapdata): what the
# formula makes of the pillar, grains and defaults on this minion. Not part of the
# highstate: `salt MINION state.apply pg_replication._mapdata`.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/layers.jinja" import merged with context %}
{#- The plan map.jinja builds, asked for again without secrets (pg_replication.plan
    redacts unless told secrets=True): the file and the state's arguments hold none. #}
{%- set _mapdata = {'values': salt['pg_replication.plan'](merged, grains['id'])} %}
{%- do salt['log.debug']('### MAP.JINJA DUMP ###\n' ~ _mapdata | yaml(False)) %}

pg_replication-mapdata-dump:
  file.managed:
    - name: /tmp/salt_mapdata_pg_replication_{{ grains['id'] }}.yaml
    - source: salt://{{ tplroot }}/_mapdata/_mapdata.jinja
    - template: jinja
    - mode: '0600'
    # A link put at that path in /tmp is replaced, not written through.
    - follow_symlinks: False
    - context:
        map: {{ _mapdata | json }}
