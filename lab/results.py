"""Helpers to read ``salt '*' state.apply`` results."""


def state_errors(data):
    """Failed states (or render errors) per minion; empty when everything succeeded."""
    errors = {}
    for minion, result in (data or {}).items():
        if not isinstance(result, dict):
            errors[minion] = result
            continue
        failed = {sid: r.get("comment") for sid, r in result.items() if r.get("result") is False}
        if failed:
            errors[minion] = failed
    return errors


def changed_states(data):
    """States that changed (or, with test=True, would change) something, per minion."""
    changed = {}
    for minion, result in (data or {}).items():
        if not isinstance(result, dict):
            changed[minion] = result
            continue
        hits = {sid: r.get("changes") for sid, r in result.items() if r.get("changes") or r.get("result") is None}
        if hits:
            changed[minion] = hits
    return changed


def state_ids(data, test=False):
    """Per minion, the ids of the states that changed something (``test``: that would)."""
    out = {}
    for minion, result in (data or {}).items():
        if isinstance(result, dict):
            out[minion] = sorted(
                r.get("__id__", sid)
                for sid, r in result.items()
                if r.get("changes") or (test and r.get("result") is None)
            )
    return out
