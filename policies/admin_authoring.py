"""Authoring in the admin: rule widgets (choices, not JSON), a draft's add form with its
default effect, a condition checked as it is typed and tried on a recorded call, and two
versions compared rule by rule."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import PermissionDenied
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    JsonResponse,
)
from django.template.response import TemplateResponse

from core.actors import actor_of
from runs.models import ActionClass, Agent

from .authoring import rule_by_rule, try_condition
from .models import Effect, Mode, PolicyVersion, Rule

INHERIT, ABSTAIN = "inherit", "abstain"


class ListChoiceField(forms.MultipleChoiceField):
    """A JSON list of names, chosen among known ones; names already in the rule stay offered
    (an agent not seen yet, a rule copied from an older version)."""

    def prepare_value(self, value: Any) -> Any:
        return value if isinstance(value, list) else super().prepare_value(value)


class RuleForm(forms.ModelForm[Rule]):
    action_classes = ListChoiceField(
        choices=ActionClass.choices, required=False, widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: any class.")
    modes = ListChoiceField(choices=Mode.choices, required=False,
                            widget=forms.CheckboxSelectMultiple,
                            help_text="None ticked: any mode.")
    agents = ListChoiceField(required=False, widget=forms.SelectMultiple(attrs={"size": 4}),
                             help_text="None chosen: any agent.")

    class Meta:
        model = Rule
        fields = ["position", "name", "tool", "action_classes", "agents", "modes", "outage",
                  "condition", "effect"]
        widgets = {"condition": forms.Textarea(attrs={
            "rows": 2, "cols": 36, "class": "rule-condition",
            "placeholder": "e.g. args.amount_cents > 10000"}),
            "position": forms.NumberInput(attrs={"style": "width: 4em"}),
            "tool": forms.TextInput(attrs={"size": 14}),
            "name": forms.TextInput(attrs={"size": 16})}

    def __init__(self, *args: Any, tenant_id: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        known = list(Agent.objects.filter(tenant_id=tenant_id).order_by("agent_id")
                     .values_list("agent_id", flat=True)) if tenant_id else []
        chosen = list(self.instance.agents or []) if self.instance.pk else []
        agents = self.fields["agents"]
        assert isinstance(agents, forms.ChoiceField)
        agents.choices = [(a, a) for a in sorted({*known, *chosen})]


class DraftAddForm(forms.ModelForm[PolicyVersion]):
    """A new draft: its policy, its default effect and why. It starts from the policy's
    published version (its rules and settings); the default is kept unless chosen here, so
    drafting never loosens a default by accident."""

    # not the model's field: "inherit" and "abstain" are choices of this form, not effects
    default = forms.ChoiceField(
        label="Default effect", initial=INHERIT, help_text="The effect when no rule matches.",
        choices=[(INHERIT, "as the published version (allow for a new policy)"),
                 *Effect.choices, (ABSTAIN, "none: leave unmatched calls to the other policies")])

    class Meta:
        model = PolicyVersion
        fields = ["policy", "change_note"]


def chosen_default(form: Any) -> dict[str, Any]:
    """The deciding settings the add form sets (none when the default is inherited)."""
    value = form.cleaned_data["default"]
    if value == INHERIT:
        return {}
    return {"default_effect": "" if value == ABSTAIN else value}


def try_condition_view(model_admin: Any, request: HttpRequest, pk: int) -> HttpResponse:
    """JSON for the rule editor: the condition's problems, and, given a call id, whether it
    matches that recorded call."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    version = model_admin.get_queryset(request).filter(pk=pk).select_related("tenant").first()
    if version is None:
        raise Http404("No such version among your policies.")
    try:
        trial = try_condition(version, request.POST.get("condition", "")[:5000],
                              request.POST.get("call_id", "")[:200], by=actor_of(request))
    except PermissionDenied as exc:
        return JsonResponse({"detail": str(exc)}, status=403)
    return JsonResponse({"problems": trial.problems, "outcome": trial.outcome,
                         "call": trial.call, "redacted": trial.redacted})


def diff_view(model_admin: Any, request: HttpRequest, old: int, new: int) -> HttpResponse:
    """Two versions of one policy side by side, rule by rule."""
    versions = {v.pk: v for v in model_admin.get_queryset(request).filter(
        pk__in=[old, new]).select_related("policy")}
    if len(versions) != 2 or versions[old].policy_id != versions[new].policy_id:
        raise Http404("No such pair of versions among your policies.")
    settings, rules = rule_by_rule(versions[old], versions[new])
    return TemplateResponse(request, "policies/diff.html", {
        **model_admin.admin_site.each_context(request),
        "title": f"{versions[new].policy.name}: v{versions[old].number} → "
        f"v{versions[new].number}", "old": versions[old], "new": versions[new],
        "settings": settings, "rules": rules, "opts": model_admin.model._meta,
        "fields": ["position", "tool", "action_classes", "agents", "modes", "outage",
                   "condition", "effect"],
        "unchanged": sum(r.change == "unchanged" for r in rules)})
