# SPDX-License-Identifier: Apache-2.0
"""Whether the runner's failover may take an old primary whose minion does not answer as
fenced by its own watchdog (issue #28), from the HA engine's state file on the master
(``<cachedir>/pg_replication/ha.json``, written by ``_engines/pg_replication_ha.py`` every
``ha:check_interval``): pure code, the master's clock passed in.

The runner cannot tell by itself how long the old primary has been cut off: one look is a
moment, not a duration. The engine can: it asks every server each tick, and keeps
``agreed_since``, the first tick of an unbroken run of ticks on which a strict majority of
the primary's peers said they lost it (its port unreachable from them, their WAL receivers
not streaming) while the master did not reach its port either (or its own minion said its
PostgreSQL was down). Through all that run the primary reached neither the master nor that
majority (the failure model's symmetric
partition), which is exactly what makes its watchdog fence it within ``fence_timeout``
(plus a check and the stop itself). So once the run has lasted ``fence_timeout +
fence_margin + 2 * check_interval`` (the bound the plan keeps ``failover_timeout`` above,
the one the engine's own failover relies on), the old primary has stopped and carries its
fence marker; nothing of ours starts it again.

Accepted only when all of these hold, else the refusal says which did not:

- the engine's state exists, is about the same primary, and is fresh (written within
  ``3 * check_interval + FRESH`` seconds: the engine is watching now, not an old outage's
  record);
- ``mode`` was ``automatic`` (the pillar the servers answered with) and the primary's
  watchdog unit was seen *active* on its last healthy tick (a pillar set to automatic but
  never applied to the primary runs no watchdog);
- the engine sees it suspected or lost (not healthy, not in a failover or cooldown), with
  an agreement running for at least that bound.

Not covered: asymmetric partitions (the failure model's), and a primary started again by
hand while cut off, which runs up to ``fence_timeout`` before its watchdog stops it.
"""

# Seconds of slack for a slow tick (a silent minion holds a tick up to a few seconds).
FRESH = 15
WATCHED = ("primary suspected", "primary lost")


def watchdog_fenced(state, old, now):
    """``(ok, detail)``: whether ``old`` has surely been fenced by its watchdog, from the HA
    engine's ``state`` (its state file's content, or None) at ``now`` (the master's
    ``time.time()``, the engine's clock)."""
    if not isinstance(state, dict):
        return False, "no HA engine state on this master: nothing measured how long it has been cut off"
    if state.get("primary") != old:
        return False, f"the HA engine watches {state.get('primary')}, not {old}"
    if state.get("mode") != "automatic":
        return False, f"ha:mode is {state.get('mode')}: no watchdog fences it"
    timings = state.get("timings") or {}
    try:
        interval, fence = float(timings["check_interval"]), float(timings["fence_timeout"])
        margin = float(timings["fence_margin"])
        updated = float(state["updated"])
    except (KeyError, TypeError, ValueError):
        return False, "the HA engine's state does not say its timings (an older engine?)"
    age = now - updated
    if age > 3 * interval + FRESH:
        return False, f"the HA engine's state is {age:.0f} s old: the engine is not watching"
    if state.get("watchdog") is not True:
        return False, f"its watchdog was not seen running on its last healthy check ({state.get('watchdog')})"
    if state.get("state") not in WATCHED:
        return False, f"the HA engine sees it as {state.get('state')}"
    since = state.get("agreed_since")
    if not isinstance(since, (int, float)):
        return False, "the HA engine does not see a majority of its peers say they lost it"
    needed = fence + margin + 2 * interval
    lasted = updated - since
    if lasted < needed:
        wait = needed - lasted
        return False, f"cut off for {lasted:.1f} s of the {needed:g} s its fence needs: try again in {wait:.1f} s"
    agreeing = (state.get("last_decision") or {}).get("agreeing")
    who = f" ({', '.join(agreeing)})" if agreeing else ""
    return True, (
        f"its watchdog has fenced it: for {lasted:.1f} s (fence_timeout {fence:g} + fence_margin {margin:g}"
        f" + 2 * check_interval {interval:g} = {needed:g} s needed) a majority of its peers{who} said they"
        " lost it and the master did not reach it"
        f" (the HA engine's state, {age:.0f} s old; ha:mode automatic, its watchdog seen running)"
    )
