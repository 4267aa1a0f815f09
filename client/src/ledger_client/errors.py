"""What the client raises to the agent.

Recording never raises for delivery problems (a portal that is down or refuses a batch is
logged and counted, see ``LedgerClient.stats``); gating does, because a tool call that was not
cleared must not run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .gating import Decision


class LedgerClientError(Exception):
    """Base class of everything the client raises."""


class GateError(LedgerClientError):
    """The tool call was not cleared to run; ``decision`` is the portal's last answer (None
    when there was none)."""

    def __init__(self, message: str, decision: Decision | None = None):
        super().__init__(message)
        self.decision = decision

    @property
    def policy_version(self) -> str | None:
        """``"<policy> v<number>"`` of the version that decided, if any."""
        return self.decision.policy_version if self.decision else None

    @property
    def matched_rules(self) -> list[dict[str, Any]]:
        return list(self.decision.matched_rules) if self.decision else []


class ToolCallDenied(GateError):
    """The policy denies the call (or the approval covers a different call)."""


class ApprovalRejected(GateError):
    """A person rejected the approval request."""

    def __init__(self, message: str, decision: Decision | None, approval_id: int):
        super().__init__(message, decision)
        self.approval_id = approval_id


class ApprovalTimedOut(GateError):
    """No decision on the approval request in time (the client's wait, or the request expired
    on the portal)."""

    def __init__(self, message: str, decision: Decision | None, approval_id: int):
        super().__init__(message, decision)
        self.approval_id = approval_id


class SandboxOnly(GateError):
    """The call may only run as a dry run, and no dry-run function was given."""


class DecisionUnavailable(GateError):
    """The portal could not be asked (down, or refused the request): the call fails closed."""


__all__ = ["ApprovalRejected", "ApprovalTimedOut", "DecisionUnavailable", "GateError",
           "LedgerClientError", "SandboxOnly", "ToolCallDenied"]
