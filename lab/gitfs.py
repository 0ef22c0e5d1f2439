"""The formula served to the lab's salt-master by gitfs, as most Salt sites install a formula:
``gitfs_remotes`` pinned to a tag of its repository, whose root holds ``pg_replication/``,
``_modules``, ``_states``, ``_utils`` and ``_runners``.

The lab makes two local repositories (file:// URLs, no network): the formula's, a snapshot of
this work copy (what ``git ls-files`` lists, uncommitted changes included, so that the tests
try the code at hand) tagged :data:`TAG`, with one more commit after the tag that changes
:data:`AFTER_TAG` (a master serving that commit instead of the tag shows in what the
minions get); and the site's, holding only the top file, as a site's own states repository
would. The master reads nothing else: ``fileserver_backend`` is ``[gitfs]``.
"""

import os
import shutil
import subprocess

from saltfactories.daemons.master import SaltMaster

from lab.hosts import REPO_ROOT

TAG = "v0.0.0-test"
# Files the commit after the tag changes (one per kind of thing a minion or the master gets
# from the formula), each with a line of its language's comment syntax.
AFTER_TAG = {
    "_modules/pg_replication.py": "# committed after the tag: a master pinned to the tag never serves this\n",
    "_runners/pg_replication.py": "# committed after the tag: a master pinned to the tag never serves this\n",
    "pg_replication/map.jinja": "{#- committed after the tag: a master pinned to the tag never serves this #}\n",
}
PROVIDER = "pygit2"


def git(repo, *args):
    """``git ARGS`` in ``repo``, with the lab's identity and no user or system config."""
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_TERMINAL_PROMPT="0")
    cmd = ["git", "-c", "user.name=pg_replication lab", "-c", "user.email=lab@pg-replication.invalid", *args]
    return subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True, text=True).stdout  # noqa: S603


def work_copy_files():
    """The work copy's files as a commit of it would hold them (tracked and untracked, not
    ignored, not deleted), relative to the repository root."""
    out = git(REPO_ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--deduplicate")
    return sorted(path for path in out.split("\0") if path and os.path.lexists(REPO_ROOT / path))


def formula_repository(dest):
    """The formula's repository at ``dest``: the work copy committed and tagged :data:`TAG`,
    then a commit after the tag changing :data:`AFTER_TAG`. Returns ``dest``."""
    dest.mkdir(parents=True)
    for path in work_copy_files():
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / path, target, follow_symlinks=False)
    git(dest, "init", "--quiet", "--initial-branch=main")
    git(dest, "add", "--all")
    git(dest, "commit", "--quiet", "--message", "pg_replication as the lab found it")
    git(dest, "tag", "--annotate", TAG, "--message", f"pg_replication {TAG} (lab)")
    for path, line in AFTER_TAG.items():
        with (dest / path).open("a") as fh:
            fh.write(line)
    git(dest, "commit", "--quiet", "--all", "--message", "After the tag")
    return dest


def site_repository(dest, top):
    """A site's states repository at ``dest`` holding ``top`` as its top.sls (branch main)."""
    dest.mkdir(parents=True)
    (dest / "top.sls").write_text(top)
    git(dest, "init", "--quiet", "--initial-branch=main")
    git(dest, "add", "top.sls")
    git(dest, "commit", "--quiet", "--message", "The site's top file")
    return dest


def show(repo, ref, path):
    """The bytes of ``path`` at ``ref`` in ``repo``."""
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull)
    return subprocess.run(["git", "show", f"{ref}:{path}"], cwd=repo, env=env, check=True, capture_output=True).stdout  # noqa: S603,S607


def tree(repo, ref, directory):
    """The files of ``directory`` (one level) at ``ref`` in ``repo``."""
    return sorted(git(repo, "ls-tree", "--name-only", f"{ref}:{directory}").split())


def master_config(formula, site):
    """The salt-master options serving ``formula`` pinned to :data:`TAG` and ``site``'s main
    branch through gitfs, and nothing else. Each remote maps only its ``base`` (no saltenv
    per branch or tag)."""
    return {
        "fileserver_backend": ["gitfs"],
        "gitfs_provider": PROVIDER,
        "gitfs_remotes": [
            {formula.as_uri(): [{"base": TAG}, {"disable_saltenv_mapping": True}]},
            {site.as_uri(): [{"base": "main"}, {"disable_saltenv_mapping": True}]},
        ],
    }


class GitfsMaster(SaltMaster):
    """A salt-master whose only fileserver backend is gitfs: pytest-salt-factories merges
    lists of overrides into its defaults, so ``fileserver_backend: [gitfs]`` would become
    ``[roots, gitfs]`` (roots serving the factory's state tree) without this."""

    @classmethod
    def configure(cls, *args, **kwargs):
        config = super().configure(*args, **kwargs)
        config["fileserver_backend"] = ["gitfs"]
        return config
