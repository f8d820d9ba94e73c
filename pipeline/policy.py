"""The action policy: which enforcement action each decision gets.

Enforce owns the settings behind it (``enforce.on_flag_csam``…) and acts on it; other roles
read the same policy through this contract (reconcile, to know whether a flagged object
still present is waiting for an action), so the rule is written once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.events import ActionType, Decision

DESTRUCTIVE = frozenset({ActionType.DELETE, ActionType.QUARANTINE})


@dataclass(frozen=True, slots=True)
class ActionPolicy:
    """Decision → action, and whether actions are only recorded (dry run)."""

    actions: Mapping[Decision, ActionType] = field(default_factory=dict)
    dry_run: bool = False

    def action_for(self, decision: Decision) -> ActionType | None:
        """The configured action for ``decision``; None for ``allow``."""
        return self.actions.get(decision)

    def destructive(self, decision: Decision) -> bool:
        """Whether ``decision`` removes the object from where it was (not in a dry run)."""
        return not self.dry_run and self.action_for(decision) in DESTRUCTIVE
