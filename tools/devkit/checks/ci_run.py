"""Running `nox -s ci`: what the machine says (changed files, prebuilt binaries, nvcc),
the steps chosen for this checkout, each run as the nox session a contributor types,
and the summary table. The choice itself is devkit.checks.ci's (pure functions).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devkit import DevkitError
from devkit.artifacts import binaries, binstore, wheelindex
from devkit.checks.ci import (
    CPU_BUILD,
    KERNELS,
    PLUGINS,
    Need,
    Source,
    Step,
    needs_of,
    not_planned,
    rule_for,
    steps,
)
from devkit.foundation import gitbase
from devkit.foundation.envs import ROOT
from devkit.toolchains import cuda, plan, targets


def merge_base(base: str | None, root: Path = ROOT) -> tuple[str, str]:
    """(the base ref, the merge-base commit of HEAD with it): devkit.foundation.gitbase's."""
    try:
        return gitbase.merge_base(base, root)
    except DevkitError as exc:
        raise DevkitError(f"{exc}; or run everything with --all") from None


def changed_files(commit: str, root: Path = ROOT) -> list[str]:
    """Files changed since `commit`: committed, staged, unstaged and untracked."""
    # -z: names as they are (without it git quotes a non-ASCII name, which then
    # matches no path rule and counts as a change to everything).
    diff = gitbase.git("diff", "-z", "--name-only", "--no-renames", commit, root=root)
    untracked = gitbase.git("ls-files", "-z", "--others", "--exclude-standard", root=root)
    if diff.returncode != 0 or untracked.returncode != 0:
        raise DevkitError(f"git diff {commit[:12]} failed ({diff.stderr.strip()}); check the repo")
    return sorted(set(diff.stdout.split("\0") + untracked.stdout.split("\0")) - {""})


def precompiled_source(
    environ: Mapping[str, str] | None = None,
    root: Path = ROOT,
    store: binstore.Store | None = None,
) -> Source:
    """Whether CPU binaries of this checkout's binary key exist: in the local store, or
    in the index by key (whatever the merge-base)."""
    target = targets.get_target("cpu")
    try:
        key = binaries.lookup_key(target, plan.expected_torch(target), root=root, environ=environ)
        store = store or binstore.Store.default()
        index = wheelindex.default_index(environ, root)
        hit = binaries.find(key, target.version_suffix, store, index, environ)
        if hit is not None and hit.entry is not None:
            return Source(True, f"key {hit.key.short} in the local binary store {store.root}")
        if hit is not None and hit.meta is not None:
            commit = str(hit.meta.get("commit") or "?")[:12]
            at = f"by key {hit.key.short} (built at {commit})"
            return Source(True, f"{hit.meta['wheel']} from {index} {at}")
        if not index:
            return Source(
                False,
                f"key {key.short} is not in the local binary store, and no precompiled "
                f"index is configured ({wheelindex.INDEX_HINT})",
            )
    except DevkitError as exc:
        return Source(False, f"the prebuilt binaries can't be looked up ({exc})")
    return Source(False, f"neither the local binary store nor {index} has key {key.short}")


def nvcc_found() -> bool:
    try:
        cuda.find_cuda_home()
    except DevkitError:
        return False
    return True


@dataclass
class Outcome:
    step: Step
    result: str  # passed | failed | skipped | not run
    seconds: float = 0.0
    note: str = ""


@dataclass(frozen=True)
class Args:
    """What `nox -s ci -- ...` was asked."""

    base: str | None = None
    run_all: bool = False
    dry_run: bool = False
    skip: frozenset[str] = field(default_factory=frozenset)


def parse_args(posargs: Sequence[str]) -> Args:
    """`--base REF`, `--all`, `--dry-run`, `--skip NAME[,NAME]`; anything else is an error."""
    parser = argparse.ArgumentParser(prog="nox -s ci --", exit_on_error=False, add_help=False)
    parser.add_argument("--base")
    parser.add_argument("--all", action="store_true", dest="run_all")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--skip", action="append", default=[])
    try:
        ns, unknown = parser.parse_known_args(list(posargs))
    except argparse.ArgumentError as exc:
        raise DevkitError(f"nox -s ci: {exc}; e.g. nox -s ci -- --base origin/main") from None
    if unknown:
        raise DevkitError(
            f"nox -s ci takes --base REF, --all, --dry-run and --skip NAME, not {unknown[0]}"
        )
    skip = frozenset(name for value in ns.skip for name in value.split(",") if name)
    known = {s.session for s in steps({}, None, True, run_all=True)}
    known |= {s.session for s in steps(needs_of(["vllm/envs.py"]), Source(True, ""), True)}
    for name in sorted(skip - known):
        raise DevkitError(
            f"nox -s ci: --skip {name} names no step of ci; the steps are "
            f"{', '.join(sorted(known))}"
        )
    return Args(ns.base, ns.run_all, ns.dry_run, skip)


def choose_steps(
    args: Args, root: Path = ROOT, say: Callable[[str], None] = print
) -> tuple[list[Step], dict[str, str]]:
    """The steps for this checkout, printed with their reasons (and what is not run,
    why), and the environment they run with."""
    environ: dict[str, str] = {}
    needs: dict[str, Need] = {}
    if not args.run_all:
        ref, commit = merge_base(args.base, root)
        files = changed_files(commit, root)
        say(f"ci: {len(files)} file(s) changed against {ref} (merge-base {commit[:12]})")
        for name in files[:20]:
            rule = rule_for(name)
            say(f"  {name}: {', '.join(sorted(rule.needs))} ({rule.why})")
        if len(files) > 20:
            say(f"  ... and {len(files) - 20} more")
        needs = needs_of(files)
        source = None
        if CPU_BUILD not in needs and (KERNELS in needs or PLUGINS in needs):
            source = precompiled_source(root=root)
            say(f"ci: precompiled binaries: {source.note}")
            if not source.available:
                say("ci: no prebuilt binaries of this checkout's key: building instead")
        plan = steps(needs, source, nvcc_found())
    else:
        plan = steps(needs, None, nvcc_found(), run_all=True)
    plan = [
        Step(s.session, s.args, s.reason, "--skip") if s.session in args.skip else s for s in plan
    ]
    if not plan:
        say("ci: nothing changed against the base: nothing to run (--all runs everything)")
    for number, step in enumerate(plan, 1):
        skipped = f"  [skipped: {step.skip}]" if step.skip else ""
        say(f"  {number}. {step.command:42} {step.reason}{skipped}")
    if plan:
        for line in not_planned(needs, args.run_all):
            say(f"  {line}")
    return plan, environ


def run_steps(
    plan: Sequence[Step],
    environ: Mapping[str, str],
    root: Path = ROOT,
    say: Callable[[str], None] = print,
) -> list[Outcome]:
    """Runs each step as `python -m nox -s NAME -- ARGS`; stops at the first failure."""
    outcomes: list[Outcome] = []
    failed = False
    env = {**os.environ, **environ}
    for number, step in enumerate(plan, 1):
        if step.skip:
            outcomes.append(Outcome(step, "skipped", note=step.skip))
            continue
        if failed:
            outcomes.append(Outcome(step, "not run", note="an earlier step failed"))
            continue
        say(f"ci: [{number}/{len(plan)}] {step.command}  ({step.reason})")
        started = time.monotonic()
        cmd = [sys.executable, "-m", "nox", "-s", step.session]
        code = subprocess.run([*cmd, "--", *step.args] if step.args else cmd, cwd=root, env=env)
        seconds = time.monotonic() - started
        failed = code.returncode != 0
        result = "failed" if failed else "passed"
        outcomes.append(Outcome(step, result, seconds, f"exit code {code.returncode}" * failed))
        say(f"ci: {step.command} {result} in {seconds:.1f}s")
    return outcomes


def summary(outcomes: Sequence[Outcome], seconds: float) -> str:
    """The table a person reads at the end: session, result, time."""
    rows = [("session", "result", "time", "")]
    for o in outcomes:
        rows.append((o.step.command, o.result, f"{o.seconds:.1f}s" if o.seconds else "-", o.note))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    failed = sum(o.result == "failed" for o in outcomes)
    passed = sum(o.result == "passed" for o in outcomes)
    verdict = f"{failed} failed" if failed else "all passed"
    lines.append(f"ci: {verdict} ({passed} passed) in {seconds:.1f}s")
    return "\n".join(lines)
