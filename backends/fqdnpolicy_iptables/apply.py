"""Applying renderings to the kernel: sets first, then rules, and undoing on refusal.

A full apply, in a namespace whose current state it reads first (``ipset list -n``,
``iptables-save -t filter`` per family):

1. one ``ipset restore`` batch: leftover temporary sets of ours are destroyed, every set is
   built under its temporary name, then each is swapped with its live set (``ipset swap``:
   the contents change in one step) or, when new, renamed to its live name;
2. one ``iptables-restore --noflush`` transaction per family: our chains are declared (which
   flushes those that exist) and filled, chains of ours the rendering no longer has are
   flushed and deleted, and our jump in ``FORWARD`` is inserted if missing (extra copies
   deleted); nothing else in the table is touched;
3. one ``ipset restore`` batch destroying the swapped-out contents and our sets no longer
   rendered (now unreferenced).

If ipset refuses a line in step 1, the swaps already made are swapped back and the
temporary and new sets destroyed. If a rules transaction is refused, the families already
committed get their previous chains back (from what ``iptables-save`` showed), and the sets
are undone as well: the previous state stays in place, and the error names the tool's
message and the offending line.
"""

from __future__ import annotations

import contextlib

from fqdnpolicy.backend_tools import scratch_namespace
from fqdnpolicy.backends import BackendError
from fqdnpolicy_iptables.kernel import Saved, ToolRefused, ToolRunner
from fqdnpolicy_iptables.names import Names
from fqdnpolicy_iptables.render import Document, declared_chains
from fqdnpolicy_iptables.rules import jump_rule

__all__ = ["Applier"]

_FILTER = "*filter\n"
_COMMIT = "COMMIT\n"


class Applier:
    """Applies documents (:class:`~fqdnpolicy_iptables.render.Document`) with one runner.

    Args:
        runner: Runs the tools of the chosen iptables variant.
        names: The names of the backend's prefix (what is ours).
    """

    def __init__(self, runner: ToolRunner, names: Names) -> None:
        self.runner = runner
        self.names = names
        self._jump = jump_rule(names)

    # --------------------------------------------------------------------------- full

    def full(self, doc: Document, *, netns: str | None) -> None:
        """Apply a full rendering (see the module docstring).

        Raises:
            BackendError: a tool refused; the previous state was put back.
        """
        runner = self.runner
        existing = runner.ipset_names(netns=netns)
        saved = {family: runner.save(family, netns=netns) for family in doc.rules}
        swapped = self._sets(doc, existing, netns)
        committed: list[int] = []
        try:
            for family, section in doc.rules.items():
                runner.restore(family, self.rules_transaction(section, saved[family]), netns=netns)
                committed.append(family)
        except BackendError:
            for family in committed:
                with contextlib.suppress(BackendError):
                    self._roll_back(family, doc.rules[family], saved[family], netns)
            self._undo_sets(doc, swapped, len(doc.commits), netns)
            raise
        live = {live for _, live in doc.commits}
        stale = sorted(s for s in existing if self.names.owns_set(s) and s not in live)
        garbage = [temporary for temporary, live in doc.commits if live in swapped]
        self._destroy([*garbage, *stale], netns)

    def _sets(self, doc: Document, existing: set[str], netns: str | None) -> set[str]:
        """Build, then swap or rename, every set; return the live names swapped."""
        leftovers = [f"destroy {t}\n" for t, _ in doc.commits if t in existing]
        swapped = {live for _, live in doc.commits if live in existing}
        commits = [
            f"{'swap' if live in swapped else 'rename'} {temporary} {live}\n"
            for temporary, live in doc.commits
        ]
        try:
            self.runner.ipset_restore(
                "".join(leftovers) + doc.ipset_build + "".join(commits), netns=netns
            )
        except ToolRefused as exc:
            first_commit = len(leftovers) + doc.ipset_build.count("\n") + 1
            done = 0 if exc.line is None else max(0, exc.line - first_commit)
            self._undo_sets(doc, swapped, done, netns)
            raise
        return swapped

    def _undo_sets(self, doc: Document, swapped: set[str], done: int, netns: str | None) -> None:
        """Put back the sets of the first ``done`` commits; destroy the temporary ones."""
        lines = []
        for temporary, live in reversed(doc.commits[:done]):
            if live in swapped:
                lines.append(f"swap {temporary} {live}\n")
            else:
                lines.append(f"destroy {live}\n")  # new: no rule of the old state uses it
        with contextlib.suppress(BackendError):
            self.runner.ipset_restore("".join(lines), netns=netns)
        now = self.runner.ipset_names(netns=netns)
        self._destroy([t for t, _ in doc.commits if t in now], netns)

    def _destroy(self, sets: list[str], netns: str | None) -> None:
        """Destroy sets; one still in use (by a rule not ours) is left in place."""
        if not sets:
            return
        try:
            self.runner.ipset_restore("".join(f"destroy {s}\n" for s in sets), netns=netns)
        except BackendError:
            for name in sets:
                with contextlib.suppress(BackendError):
                    self.runner.ipset_restore(f"destroy {name}\n", netns=netns)

    # -------------------------------------------------------------------------- rules

    def ours(self, saved: Saved) -> tuple[list[str], list[str]]:
        """Our chains in a saved table, and our jumps in ``FORWARD`` (as ``-A`` lines)."""
        chains = [c for c in saved.chains if self.names.owns_chain(c)]
        tail = f" -j {self.names.root}"
        jumps = [r for r in saved.rules if r.startswith("-A FORWARD ") and r.endswith(tail)]
        return chains, jumps

    def _body(self, section: str) -> str:
        """A rules section without its ``*filter`` line, our jump and ``COMMIT``."""
        if not section.startswith(_FILTER) or not section.endswith(_COMMIT):
            raise BackendError("a rules section must start with *filter and end with COMMIT")
        end = len(section) - len(_COMMIT)
        jump = self._jump + "\n"
        if section.endswith(jump, 0, end):
            end -= len(jump)
        return section[len(_FILTER) : end]

    def rules_transaction(self, section: str, saved: Saved) -> str:
        """The transaction that makes our chains those of ``section``, and only ours."""
        rendered = set(declared_chains(section))
        chains, jumps = self.ours(saved)
        stale = [c for c in chains if c not in rendered]
        # Ours inserted when missing; copies beyond the first (a crash, a restore) deleted.
        jump = "".join(f"-D {j[3:]}\n" for j in jumps[1:]) if jumps else self._jump + "\n"
        return "".join(
            [
                _FILTER,
                *(f":{c} - [0:0]\n" for c in stale),
                self._body(section),
                *(f"-X {c}\n" for c in stale),
                jump,
                _COMMIT,
            ]
        )

    def _roll_back(self, family: int, section: str, saved: Saved, netns: str | None) -> None:
        """Give one family its chains of before a committed ``section`` back."""
        rendered = declared_chains(section)
        chains, jumps = self.ours(saved)
        before = set(chains)
        transaction = [
            _FILTER,
            *(f":{c} - [0:0]\n" for c in dict.fromkeys([*rendered, *chains])),
            *(rule + "\n" for rule in saved.of_chains(before)),
            *(f"-X {c}\n" for c in rendered if c not in before),
        ]
        if not jumps:
            transaction.append(self._jump.replace("-I FORWARD 1 ", "-D FORWARD ", 1) + "\n")
        transaction.append(_COMMIT)
        self.runner.restore(family, "".join(transaction), netns=netns)

    # ------------------------------------------------------------------- other steps

    def delta(self, doc: Document, *, netns: str | None) -> None:
        """Apply a delta rendering: one ``ipset restore`` batch of ``-exist`` adds and dels.

        Raises:
            BackendError: ipset refused a line; the lines before it were applied (each is a
                member change the engine already reported, so applying them is right).
        """
        self.runner.ipset_restore(doc.ipset_build, netns=netns)

    def remove(self, *, netns: str | None) -> None:
        """Delete our jumps, chains (both families) and sets; nothing else.

        Raises:
            BackendError: a tool refused (a rule not ours still jumps to one of our chains,
                or uses one of our sets).
        """
        for family in (4, 6):
            chains, jumps = self.ours(self.runner.save(family, netns=netns))
            if not chains and not jumps:
                continue
            transaction = [
                _FILTER,
                *(f":{c} - [0:0]\n" for c in chains),
                *(f"-D {j[3:]}\n" for j in jumps),
                *(f"-X {c}\n" for c in chains),
                _COMMIT,
            ]
            self.runner.restore(family, "".join(transaction), netns=netns)
        ours = sorted(s for s in self.runner.ipset_names(netns=netns) if self.names.owns_set(s))
        if ours:
            self.runner.ipset_restore("".join(f"destroy {s}\n" for s in ours), netns=netns)

    def check(self, doc: Document, base: Document | None) -> None:
        """Validate a rendering in a scratch namespace created and deleted here.

        A full rendering: its sets are created there, then each rules section is tested
        with ``iptables-restore --test``. A delta: ``base`` (the last full rendering) is
        applied there first, then the delta.

        Raises:
            BackendError: a tool refused it, or the scratch namespace cannot be made.
        """
        with scratch_namespace(self.runner.ip) as scratch:
            if base is not None:
                self.full(base, netns=scratch)
                self.delta(doc, netns=scratch)
                return
            renames = "".join(f"rename {t} {live}\n" for t, live in doc.commits)
            self.runner.ipset_restore(doc.ipset_build + renames, netns=scratch)
            for family, section in doc.rules.items():
                self.runner.restore(family, section, netns=scratch, test=True)
