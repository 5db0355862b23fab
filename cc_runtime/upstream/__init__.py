"""Staged upstream PRs: each upstreamable fix kept as a ready-to-send change to its upstream project.

One folder per PR under ``prs/``: ``meta.toml`` (what the PR is, which release it is against, which
runtime patch it mirrors), ``change.patch`` (a unified diff against the pinned release, with upstream's
repository paths) and ``new/`` (the PR's new files, its tests, at their repository paths). Loaded by
:mod:`.staged`; proven by :mod:`.check`; written out for sending by :mod:`.export`; described by
:mod:`.describe`. Nothing here imports torch or an upstream library: the checks run them in a child
process.
"""
