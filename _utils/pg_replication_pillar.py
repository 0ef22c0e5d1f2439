# SPDX-License-Identifier: Apache-2.0
"""Reading the formula's pillar from a minion's execution and state modules."""

import salt.utils.data


def lookup(pillar, key, default=None):
    """The value at ``key`` (``a:b:c``) in ``pillar`` (the caller's ``__pillar__``), else
    ``default``. Not ``pillar.get``: from Salt 3008 on it masks scalars (``**********``)
    when called outside a template, so a module would never see a password or a path."""
    return salt.utils.data.traverse_dict_and_list(pillar, key, default, delimiter=":")
