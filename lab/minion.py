"""Options of a masterless minion that loads this checkout's _modules, _states and _utils."""

import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# What a salt-master serves of the checkout: the formula and the custom modules, nothing else
# (a file_roots of the whole checkout would make every file listing walk .venv and .git).
FORMULA_DIRS = ("pg_replication", "_modules", "_states", "_utils", "_runners", "_beacons", "_engines")


def formula_tree(directory):
    """``directory`` made a file root serving this checkout's formula and custom modules
    (symlinks); returns it."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in FORMULA_DIRS:
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(REPO_ROOT / name)
    return directory


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
