// The rule editor: each condition is checked as it is typed (the same checks as saving), and
// can be tried on a recorded call (by its call id) before the draft is saved.
(function () {
  "use strict";
  const tryUrl = window.location.pathname.replace(/change\/?$/, "try-condition/");
  if (tryUrl === window.location.pathname) return; // the add page: no version to try against

  function csrf() {
    const field = document.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  async function ask(condition, callId) {
    const body = new URLSearchParams({condition: condition, call_id: callId || ""});
    const answer = await fetch(tryUrl, {method: "POST", body: body,
      headers: {"X-CSRFToken": csrf()}, credentials: "same-origin"});
    return answer.json();
  }

  function attach(area) {
    // the formset's hidden template row is cloned for "Add another": leave it bare
    if (area.dataset.checked || area.name.indexOf("__prefix__") !== -1) return;
    area.dataset.checked = "1";
    const check = document.createElement("div");
    check.className = "condition-check";
    check.setAttribute("role", "status");
    const trying = document.createElement("div");
    trying.className = "condition-try";
    trying.innerHTML = '<input type="text" placeholder="call id to try it on" ' +
      'aria-label="call id to try the condition on"> <button type="button">Try</button>';
    const outcome = document.createElement("div");
    outcome.className = "condition-outcome";
    outcome.setAttribute("role", "status");
    area.after(check, trying, outcome);

    let timer = null;
    async function validate() {
      const found = await ask(area.value, "");
      const problems = found.problems || [];
      check.className = "condition-check " + (problems.length ? "problem" : "ok");
      check.textContent = problems.length ? problems.join(" ") :
        (area.value.trim() ? "valid condition" : "");
    }
    area.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(validate, 350);
    });
    trying.querySelector("button").addEventListener("click", async function () {
      const callId = trying.querySelector("input").value.trim();
      if (!callId) { outcome.textContent = "Type the call id of a recorded call."; return; }
      const found = await ask(area.value, callId);
      if (found.problems && found.problems.length) {
        outcome.textContent = "Fix the condition first: " + found.problems.join(" ");
      } else if (found.detail) {
        outcome.textContent = found.detail;
      } else {
        const call = found.call;
        outcome.textContent = (call ? call.tool + " (" + call.action_class + ") in run " +
          call.run_id + ": " : "") + found.outcome +
          (found.redacted ? " (tried on the arguments as you see them: redacted values read " +
            "as their markers)" : "");
      }
    });
  }

  function attachAll() {
    document.querySelectorAll("textarea.rule-condition").forEach(attach);
  }
  document.addEventListener("DOMContentLoaded", attachAll);
  document.addEventListener("formset:added", attachAll);
})();
