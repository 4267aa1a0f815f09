"""The approval queue as every face shows it (the page, ``/api/v1/approvals/``, ``ledger
approvals``): the requests an approver may see, riskiest and oldest first, each with its
arguments redacted to the approver's clearance, who already voted, and whether this approver
may decide it and if not why. Deciding stays ``services.decide_approval``, which enforces the
same rules; this only tells people before they try.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Case, IntegerField, QuerySet, Value, When

from core.actors import Viewer, person_of
from core.roles import Role
from runs.services import ViewersByTenant

from .models import ApprovalRequest, Kind, Status, Vote
from .services import caused_by

#: Riskiest first: an exfil request waits on the most.
RISK = Case(When(action_class="exfil", then=Value(0)), When(action_class="delete", then=Value(1)),
            When(action_class="write", then=Value(2)), default=Value(3),
            output_field=IntegerField())


def visible_requests(viewer: Viewer, *, status: str | None = None,
                     tenant: str | None = None) -> QuerySet[ApprovalRequest]:
    """The requests of the tenants where ``viewer`` approves, with what the queue shows of
    them loaded in a fixed number of queries."""
    requests = ApprovalRequest.objects.for_user(viewer, Role.APPROVE).select_related(
        "tenant", "requester_key", "policy_version__policy").prefetch_related("votes__approver")
    if status:
        requests = requests.filter(status=status)
    if tenant:
        requests = requests.filter(tenant__slug=tenant)
    return requests


def pending_queue(viewer: Viewer, limit: int = 200) -> list[ApprovalRequest]:
    """Pending requests, riskiest and oldest first."""
    return list(visible_requests(viewer, status=Status.PENDING).annotate(risk=RISK)
                .order_by("risk", "created_at")[:limit])


def why_not_decide(request: ApprovalRequest, viewer: Viewer) -> str:
    """Why ``viewer`` may not decide ``request`` (as ``decide_approval`` would refuse), or ""
    when they may. Reads the prefetched votes."""
    if request.status != Status.PENDING:
        return f"it is already {request.status}"
    person = person_of(viewer)
    if person is None:
        return "a request is decided by a person, not by an API key"
    caused = caused_by(request, person)
    if caused:
        return f"{caused}: someone else decides it (four-eyes)"
    if any(vote.approver_id == person.pk for vote in request.votes.all()):
        return "you already voted on it"
    return ""


def what_approving_lifts(request: ApprovalRequest) -> str:
    """What approving ``request`` switches off, said loudly on every face, or ""."""
    if request.kind == Kind.LEAVE_SANDBOX:
        return (f"Approving lifts the sandbox: run {request.run_id} is replayed live, with real "
                "side effects, while its tenant is in outage mode.")
    if request.kind == Kind.LIVE_REPLAY:
        return (f"Approving replays run {request.run_id} live: its tool calls are sent again "
                "for real (idempotency keys reused).")
    freezes = [rule.get("name", "") for rule in request.matched_rules or []
               if str(rule.get("name", "")).startswith("freeze ")]
    if freezes:
        return (f"Approving lets this call through a freeze ({', '.join(freezes)}) that an "
                "operator placed on the tool.")
    return ""


@dataclass
class QueueEntry:
    """A request as the queue shows it to one approver."""

    request: ApprovalRequest
    arguments: Any  # redacted to the approver's clearance on the request's tenant
    votes: list[Vote] = field(default_factory=list)
    why_not: str = ""

    @property
    def lifts(self) -> str:
        return what_approving_lifts(self.request)

    @property
    def approvals(self) -> int:
        return sum(1 for vote in self.votes if vote.approve)

    @property
    def voters(self) -> list[str]:
        return [vote.approver.username for vote in self.votes]

    @property
    def may_decide(self) -> bool:
        return not self.why_not


def queue_entries(requests: list[ApprovalRequest], viewer: Viewer,
                  viewers: ViewersByTenant | None = None) -> list[QueueEntry]:
    viewers = viewers or ViewersByTenant(viewer)
    return [QueueEntry(request, viewers(request.tenant_id).redactor.redact(request.arguments,
                                                                           "arguments"),
                       list(request.votes.all()), why_not_decide(request, viewer))
            for request in requests]
