{#- A sample reactor for the pg_replication_health beacon (monitoring:beacon): it only
    notifies, sending one event tagged pg_replication/health/notice per change (what an
    alerting bridge, a chat hook or a log shipper reading the master's bus would pick up).
    It changes nothing on any host. On the master:

        reactor:
          - 'salt/beacon/*/pg_replication_health/pg_replication/health/*':
            - /srv/reactor/pg_replication-health.sls    # this file

    `data` is the beacon's event: the minion `id`, the `item` that changed (role,
    streaming:<standby>, slot_active:<slot>, wal_receiver, barman:<server>:<check>), its
    `old` and `new` values (None: the item appeared or went away). #}
pg_replication-health-notice:
  runner.event.send:
    - args:
      - tag: pg_replication/health/notice
      - data:
          minion: {{ data['id'] | tojson }}
          item: {{ data['item'] | tojson }}
          old: {{ data['old'] | tojson }}
          new: {{ data['new'] | tojson }}
          summary: {{ ('%s: %s changed from %s to %s' % (data['id'], data['item'], data['old'], data['new'])) | tojson }}
