// The run timeline: a long run's page shows each step with its first calls and a plain link
// to the rest (a page of their own). With this script the link loads them in place instead:
// the same URL with fragment=1 answers the table rows only (redacted as the page is).
"use strict";
document.addEventListener("click", function (event) {
  var link = event.target.closest && event.target.closest("a.more-calls-link");
  if (!link || event.ctrlKey || event.metaKey || event.shiftKey) { return; }
  var row = link.closest("tr.more-calls");
  if (!row) { return; }
  event.preventDefault();
  if (row.dataset.loading) { return; }
  row.dataset.loading = "1";
  link.textContent = "loading…";
  var url = new URL(link.href, window.location.href);
  url.searchParams.set("fragment", "1");
  fetch(url.toString(), {credentials: "same-origin", headers: {"Accept": "text/html"}})
    .then(function (answer) {
      if (!answer.ok) { throw new Error("HTTP " + answer.status); }
      return answer.text();
    })
    .then(function (html) {
      var holder = document.createElement("template");
      holder.innerHTML = html;  // rows the server built from escaped parts only
      row.replaceWith(holder.content);
    })
    .catch(function () {
      delete row.dataset.loading;
      window.location.href = link.href;  // the plain page still works
    });
});
