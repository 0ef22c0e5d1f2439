"""Options of a masterless minion that loads this checkout's _modules, _states and _utils."""

import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def masterless_options(root, minion_id, **overrides):
    """The options that differ from Salt's defaults (what a minion config file holds):
    private directories under ``root``, the local file client, our module directories."""
    root = pathlib.Path(root)
    options = {
        "id": minion_id,
        "root_dir": str(root),
        "cachedir": str(root / "cache"),
        # Salt derives this from its default cachedir (/var/cache/salt/minion/extmods), shared
        # by every run on the machine: a sync there is seen by every other test run.
        "extension_modules": str(root / "cache" / "extmods"),
        "pki_dir": str(root / "pki"),
        "sock_dir": str(root / "sock"),
        "log_file": str(root / "minion.log"),
        "file_client": "local",
        "module_dirs": [str(REPO_ROOT / "_modules")],
        "states_dirs": [str(REPO_ROOT / "_states")],
        "utils_dirs": [str(REPO_ROOT / "_utils")],
    }
    options.update(overrides)
    return options


def masterless_opts(root, minion_id, **overrides):
    """Full minion opts (Salt's defaults + :func:`masterless_options`), for Salt's loaders."""
    import salt.config  # pylint: disable=import-outside-toplevel

    opts = salt.config.minion_config(None)
    opts.update(masterless_options(root, minion_id, **overrides))
    return opts
