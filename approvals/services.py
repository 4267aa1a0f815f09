"""HITL approvals: requesting, deciding (four-eyes), and the binding to the exact action."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.actors import Actor, key_of, person_of
from core.canonical import content_hash
from core.dates import shown_time
from core.jobs import enqueue_on_commit
from core.models import Tenant
from core.roles import Role
from core.tenancy import has_role
from runs.annotations import annotate
from runs.commitments import committer_for
from runs.models import AnnotationKind

from .models import ApprovalRequest, Kind, NotifyEvent, Status, Vote


class ApprovalError(ValidationError):
    pass


#: The fields an approval is bound to, as the reason of a refusal names them.
BOUND_FIELDS = ("run_id", "call_id", "agent_id", "asked by", "tool", "arguments",
                "policy version")


def binding_of(tenant_id: int, *, run_id: str, call_id: str, agent_id: str, asked_by: str,
               requester_id: int | None, requester_key_id: int | None, tool: str,
               arguments: Any, version: Any) -> dict[str, Any]:
    """Everything an approval is bound to, as compared field by field when it is used."""
    return {
        "tenant": tenant_id, "run_id": run_id, "call_id": call_id, "agent_id": agent_id,
        "asked by": [asked_by, requester_id, requester_key_id], "tool": tool,
        "arguments": content_hash({"arguments": arguments}),
        "policy version": None if version is None else [
            version.policy.name, version.number, version.checksum],
    }


def action_hash(binding: dict[str, Any]) -> str:
    """The commitment to a binding (stored on the request, shown in exports)."""
    return content_hash(binding)


def binding_of_request(request: ApprovalRequest) -> dict[str, Any]:
    version = request.policy_version
    binding = binding_of(
        request.tenant_id, run_id=request.run_id, call_id=request.call_id,
        agent_id=request.agent_id, asked_by=request.requested_by,
        requester_id=request.requester_id, requester_key_id=request.requester_key_id,
        tool=request.tool, arguments=request.arguments, version=version)
    if version is not None:  # as it was when asked, whatever the version row says now
        binding["policy version"][2] = request.policy_checksum
    return binding


def binding_differences(request: ApprovalRequest, binding: dict[str, Any]) -> list[str]:
    """What of ``binding`` (a call about to use ``request``) differs from what the request was
    asked for: nothing means the approval is about exactly this call."""
    asked = binding_of_request(request)
    if action_hash(asked) != request.action_hash:
        return ["the request itself (its stored binding was altered)"]
    return [name for name in BOUND_FIELDS if asked[name] != binding[name]]


def request_approval(tenant: Tenant, *, tool: str, action_class: str, arguments: Any,
                     run_id: str = "", call_id: str = "", agent_id: str = "",
                     policy_version: Any = None, matched_rules: Any = None,
                     requested_by: str = "", requester: Any = None, requester_key: Any = None,
                     kind: str = Kind.TOOL_CALL) -> ApprovalRequest:
    timeout = timedelta(minutes=tenant.approval_timeout_minutes)
    binding = binding_of(
        tenant.pk, run_id=run_id, call_id=call_id, agent_id=agent_id, asked_by=requested_by,
        requester_id=getattr(requester, "pk", None),
        requester_key_id=getattr(requester_key, "pk", None), tool=tool, arguments=arguments,
        version=policy_version)
    request = ApprovalRequest.objects.create(
        tenant=tenant, kind=kind, run_id=run_id, call_id=call_id, agent_id=agent_id,
        tool=tool, action_class=action_class, arguments=arguments,
        action_hash=action_hash(binding), policy_version=policy_version,
        policy_checksum=getattr(policy_version, "checksum", ""),
        matched_rules=matched_rules or [], requested_by=requested_by, requester=requester,
        requester_key=requester_key, approvals_needed=2 if action_class == "exfil" else 1,
        due_at=timezone.now() + timeout)
    from .tasks import notify_approvers  # approvers hear of it once it is committed

    enqueue_on_commit(notify_approvers, (request.pk, NotifyEvent.CREATED))
    return request


def claim_approval(request: ApprovalRequest) -> bool:
    """Claim an approved request for the one decision about to use it, atomically: of any
    number of concurrent claims exactly one succeeds. Call inside that decision's
    transaction, then ``mark_consumed`` once the decision is stored."""
    return bool(ApprovalRequest.objects.filter(
        pk=request.pk, status=Status.APPROVED, consumed_at__isnull=True,
    ).update(consumed_at=timezone.now()))


def mark_consumed(request: ApprovalRequest, decision: Any) -> None:
    ApprovalRequest.objects.filter(pk=request.pk, consumed_by__isnull=True).update(
        consumed_by=decision)
    request.consumed_by = decision


def asked_by(request: ApprovalRequest, actor: Actor) -> bool:
    """Is ``actor`` (a person, or an API key's principal) whoever asked for ``request``?"""
    key = key_of(actor)
    if request.requester_key_id is not None:
        return key is not None and key.pk == request.requester_key_id
    if request.requester_id is not None:
        return getattr(actor, "pk", None) == request.requester_id
    return key is None and getattr(actor, "pk", None) is None and \
        request.requested_by == str(actor)


def caused_by(request: ApprovalRequest, person: Any) -> str:
    """How ``person`` caused ``request``, or "" when they did not: they asked for it
    themselves, or the API key that asked is one they minted."""
    pk = getattr(person, "pk", None)
    if pk is None:
        return ""
    if request.requester_id == pk:
        return "you asked for it"
    key = request.requester_key
    if key is not None and key.created_by_id == pk:
        return f"it was asked through the API key {key.name!r}, which you minted"
    return ""


@transaction.atomic
def withdraw_approval(request: ApprovalRequest, *, by: Actor, reason: str = "") -> ApprovalRequest:
    """The asker gives up waiting (its own timeout passed): the request can no longer be
    approved. Only the one who asked may withdraw it; a decided request stays as it is."""
    request = ApprovalRequest.objects.select_for_update().get(pk=request.pk)
    if not asked_by(request, by):
        raise PermissionDenied("only whoever asked for an approval may withdraw it")
    if request.status != Status.PENDING:
        return request
    return _close(request, Status.EXPIRED, by=None,
                  justification=f"withdrawn by {by}"
                  + (f": {reason.strip()}" if reason.strip() else ""))


def decide_approval(request: ApprovalRequest, *, by: Actor, approve: bool,
                    justification: str = "") -> ApprovalRequest:
    """Record ``by``'s vote. Four-eyes: nobody decides their own request; rejecting and exfil
    need a justification; exfil needs two approvers. Two approvers deciding at once give one
    outcome: the request row is locked while a vote is counted."""
    if expire_if_overdue(request):
        raise ApprovalError("this request expired before a decision")
    return _vote(request, by=by, approve=approve, justification=justification)


@transaction.atomic
def expire_if_overdue(request: ApprovalRequest, now: Any = None) -> bool:
    """Mark a pending request past its due time expired (annotated); True if it was."""
    overdue = ApprovalRequest.objects.select_for_update().filter(
        pk=request.pk, status=Status.PENDING, due_at__lte=now or timezone.now()).first()
    if overdue is None:
        return False
    _close(overdue, Status.EXPIRED, by=None, justification="expired before a decision")
    return True


@transaction.atomic
def _vote(request: ApprovalRequest, *, by: Actor, approve: bool, justification: str
          ) -> ApprovalRequest:
    request = ApprovalRequest.objects.select_for_update().get(pk=request.pk)
    if request.status == Status.PENDING and request.due_at <= timezone.now():
        raise ApprovalError("this request expired before a decision")
    if not has_role(by, Role.APPROVE, request.tenant_id):
        raise PermissionDenied("deciding needs the approve role on this tenant")
    if request.status != Status.PENDING:
        raise ApprovalError(f"this request is already {request.status}")
    why = caused_by(request, by)
    if why:
        raise PermissionDenied(f"nobody decides a request they caused (four-eyes): {why}")
    justification = justification.strip()
    if not justification and (not approve or request.action_class == "exfil"):
        raise ApprovalError("a justification is required to reject, and for exfil actions")
    approver = person_of(by)
    if approver is None:
        raise PermissionDenied("a request is decided by a person, not by an API key")
    try:
        with transaction.atomic():
            Vote.objects.create(request=request, approver=approver, approve=approve,
                                justification=justification)
    except IntegrityError as exc:
        raise ApprovalError("you have already decided on this request") from exc
    if not approve:
        return _close(request, Status.REJECTED, by=by, justification=justification)
    approvals = request.votes.filter(approve=True).count()
    if approvals >= request.approvals_needed:
        return _close(request, Status.APPROVED, by=by, justification=justification)
    annotate(request.tenant, AnnotationKind.APPROVAL,
             f"first of {request.approvals_needed} approvals for {request.tool}",
             run_id=request.run_id, by=by, target_call_id=request.call_id,
             data={"approval_request": request.pk, "approve": True,
                   "justification": justification})
    return request


def _action_commitment(request: ApprovalRequest) -> dict[str, str]:
    committer = committer_for(request.tenant_id)
    return {"key": committer.key_id, "hmac": committer.of_hash("action_hash",
                                                              request.action_hash)}


def _close(request: ApprovalRequest, status: str, *, by: Actor, justification: str
           ) -> ApprovalRequest:
    request.status, request.decided_at = status, timezone.now()
    request.save(update_fields=["status", "decided_at"])
    annotate(request.tenant, AnnotationKind.APPROVAL,
             f"{status} {request.kind} {request.tool}", run_id=request.run_id, by=by,
             target_call_id=request.call_id,
             data={"approval_request": request.pk, "status": status,
                   "justification": justification,
                   # Annotations are read at strict too: the action as a keyed commitment, not
                   # its hash (which a reader could test guessed arguments against).
                   "action_commitment": _action_commitment(request)})
    return request


def escalate_overdue(now: Any = None) -> dict[str, int]:
    """Beat task body: expire pending requests past their due time and escalate those pending
    longer than their tenant allows, notifying the tenant's approvers once each."""
    from .notify import notify_approvers

    now = now or timezone.now()
    expired = escalated = 0
    for request in ApprovalRequest.objects.filter(status=Status.PENDING, due_at__lte=now):
        if expire_if_overdue(request, now):
            expired += 1
            notify_approvers(request, NotifyEvent.EXPIRED)
    overdue = ApprovalRequest.objects.filter(status=Status.PENDING, escalated_at__isnull=True,
                                             due_at__gt=now).select_related("tenant")
    for request in overdue:
        if request.created_at + timedelta(minutes=request.tenant.approval_escalate_minutes) > now:
            continue
        # claim it: two beat runs never notify twice
        if ApprovalRequest.objects.filter(pk=request.pk, escalated_at__isnull=True).update(
                escalated_at=now):
            escalated += 1
            note_escalation(request, notify_approvers(request, NotifyEvent.ESCALATED))
    return {"expired": expired, "escalated": escalated}


def note_escalation(request: ApprovalRequest, deliveries: list[Any]) -> None:
    """Annotate the request's run with what its escalation actually delivered: each channel
    that reached approvers and each that failed (with why), and plainly when none did."""
    parts = [f"{d.channel} {'delivered' if d.delivered else 'failed'} ({d.detail})"
             + (f" via route {d.route.name!r}" if d.route is not None else "")
             for d in deliveries]
    if not deliveries:
        parts = [f"no route covers escalations of {request.action_class} requests"]
    reached = "" if any(d.delivered for d in deliveries) else "no approver was reached: "
    annotate(request.tenant, AnnotationKind.APPROVAL,
             f"escalated {request.get_kind_display()} {request.tool} (request {request.pk}), "
             f"waiting since {shown_time(request.created_at)}: {reached}"
             + "; ".join(parts), run_id=request.run_id, target_call_id=request.call_id,
             data={"approval_request": request.pk, "event": "escalated",
                   "deliveries": [{"channel": d.channel, "route": d.route_id,
                                   "delivered": d.delivered, "detail": d.detail}
                                  for d in deliveries]})
