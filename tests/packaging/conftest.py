"""Render the formula in-process, as a minion of any OS family would: the real Salt loader,
map.jinja and pg_replication.plan, with grains and pillar chosen by the test."""

import pathlib

import pytest
import yaml

from lab.minion import formula_tree, masterless_opts
from tests.conftest import REPO_ROOT


class Rendering:
    """The formula rendered for one minion: its states (``state.show_sls``) and templates."""

    def __init__(self, loaders, states):
        self.loaders = loaders
        self.states = states

    def state(self, state_id):
        """``{function: args}`` of one state, e.g. ``{"pkg.installed": {"pkgs": [...]}}``."""
        data = self.states[state_id]
        out = {}
        for module, body in data.items():
            if module.startswith("__"):
                continue
            args = {k: v for item in body if isinstance(item, dict) for k, v in item.items()}
            function = next(item for item in body if isinstance(item, str))
            out[f"{module}.{function}"] = args
        return out

    def args(self, state_id):
        (args,) = self.state(state_id).values()
        return args

    def template(self, path, **context):
        """Render one of the formula's file templates (e.g. server/files/postgresql.conf.jinja)."""
        import salt.utils.data  # pylint: disable=import-outside-toplevel
        import salt.utils.templates  # pylint: disable=import-outside-toplevel

        loaders = self.loaders
        pillar = loaders.opts["pillar"]

        class Functions(dict):
            """Salt's functions, with pillar.get answering from this rendering's pillar."""

            def __getitem__(self, name):
                if name == "pillar.get":
                    return lambda key, default="", **_: salt.utils.data.traverse_dict_and_list(
                        pillar, key, default, delimiter=":"
                    )
                return loaders.modules[name]

        source = (REPO_ROOT / "pg_replication" / path).read_text()
        return salt.utils.templates.render_jinja_tmpl(
            source,
            {
                "tplroot": "pg_replication",
                "salt": Functions(),
                "grains": loaders.grains,
                "pillar": pillar,
                "opts": loaders.opts,
                "saltenv": "base",
                **context,
            },
        )


@pytest.fixture(scope="session")
def formula(tmp_path_factory):
    """``formula(minion_id, pillar, os_family="Debian", init=..., pythonexecutable=...)``
    -> :class:`Rendering`."""
    from saltfactories.utils.functional import Loaders  # pylint: disable=import-outside-toplevel

    root = tmp_path_factory.mktemp("render")
    pillar_dir = root / "pillar"
    pillar_dir.mkdir()
    (pillar_dir / "top.sls").write_text("base:\n  '*':\n    - pg_replication\n")
    # The pillar file exists before the loader lists the pillar roots; tests rewrite it.
    (pillar_dir / "pg_replication.sls").write_text("pg_replication: {}\n")
    opts = masterless_opts(
        root,
        "render",
        file_roots={"base": [str(formula_tree(root / "states"))]},
        pillar_roots={"base": [str(pillar_dir)]},
    )
    loaders = Loaders(opts)
    # One pillar dict for the whole session, refilled per rendering: the loaded modules keep
    # a reference to it (pillar.get in map.jinja, file templates).
    shared_pillar = {}

    python = loaders.grains["pythonexecutable"]

    def render(
        minion_id,
        pillar,
        os_family="Debian",
        sls="pg_replication",
        init="unknown",
        pythonexecutable=python,
        release=0,
        failing=False,
    ):
        """``release``: the os grain's major release; 0 (unknown to the plan) renders any
        PostgreSQL version, a known one refuses versions it does not ship. ``failing``: return
        what ``state.show_sls`` said (the render errors, a list) instead of raising."""
        loaders.opts["id"] = minion_id
        os_name = {"Debian": "Debian", "RedHat": "Rocky"}[os_family]
        loaders.grains.update(
            {"id": minion_id, "os_family": os_family, "os": os_name, "osmajorrelease": release, "init": init,
             "pythonexecutable": pythonexecutable}
        )  # fmt: skip
        (pillar_dir / "pg_replication.sls").write_text(yaml.safe_dump({"pg_replication": pillar}))
        # Salt merges opts["pillar"] into the pillar it compiles: start from nothing.
        loaders.opts["pillar"] = {}
        loaders.refresh_pillar()
        compiled = loaders.opts["pillar"]
        shared_pillar.clear()
        shared_pillar.update(compiled)
        loaders.opts["pillar"] = shared_pillar
        states = loaders.modules.state.show_sls(sls)
        if failing:
            return states
        if not isinstance(states, dict):
            raise AssertionError(f"rendering {sls} for {minion_id} ({os_family}) failed: {states}")
        return Rendering(loaders, states)

    yield render
    loaders.reset_state()


@pytest.fixture(scope="session")
def example_pillar():
    return yaml.safe_load(pathlib.Path(REPO_ROOT / "pillar.example").read_text())["pg_replication"]
