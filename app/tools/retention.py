"""Which tags a repository's retention rule keeps, and why (applied by `storj-registry gc`).

A tag's push time is its object's Last-Modified: every push of a tag writes it. Tags an immutable rule names and
tags the rule's `keep_tags` match are always kept and not counted; of the others, a tag goes when it is older
than `expire_after`, or when it is not among the `keep_last` newest. A tag's manifest (and then its blobs) goes
in the same run only when nothing else keeps it and it is past the grace period, like any unreferenced manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from app.registry.policy import Policy, RetentionRule
from app.tools.inventory import StoredManifest


@dataclass(frozen=True)
class TagDecision:
    tag: StoredManifest
    keep: bool
    why: str


def judge_tags(name: str, tags: list[StoredManifest], policy: Policy, now: float) -> list[TagDecision]:
    """A decision per tag, newest push first; none when no retention rule names the repository."""
    rule = policy.retention_for(name)
    if rule is None:
        return []
    decisions = []
    counted = 0
    for tag in sorted(tags, key=lambda t: (t.info.last_modified or 0, t.reference), reverse=True):
        if immutable := policy.immutable_rule(name, tag.reference):
            decisions.append(TagDecision(tag, True, f"immutable rule {immutable.number}"))
        elif any(fnmatchcase(tag.reference, pattern) for pattern in rule.keep_tags):
            decisions.append(TagDecision(tag, True, f"keep_tags of retention rule {rule.number}"))
        else:
            counted += 1
            decisions.append(_judge(tag, rule, counted, now))
    return decisions


def _judge(tag: StoredManifest, rule: RetentionRule, rank: int, now: float) -> TagDecision:
    age = now - (tag.info.last_modified or 0)
    where = f"retention rule {rule.number}"
    if rule.expire_after is not None and age > rule.expire_after:
        return TagDecision(
            tag, False, f"pushed {_days(age)} ago, past expire_after {_days(rule.expire_after)} ({where})"
        )
    if rule.keep_last is not None and rank > rule.keep_last:
        return TagDecision(tag, False, f"push {rank} by age, past keep_last {rule.keep_last} ({where})")
    return TagDecision(tag, True, f"push {rank} by age, pushed {_days(age)} ago ({where})")


def _days(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds:.0f}s"
