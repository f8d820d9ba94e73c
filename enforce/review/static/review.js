// pictguard review console: keyboard shortcuts. No inline script anywhere (the CSP forbids
// it); every action is a plain form the server checks, so this only saves keystrokes.
"use strict";

(function () {
  const page = document.body.dataset.page;
  const help = document.getElementById("help");

  function typing(event) {
    const t = event.target;
    return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.isContentEditable);
  }

  function go(id) {
    const link = document.getElementById(id);
    if (link) window.location.assign(link.href);
  }

  // The queue: j/k move a selection over the rows, o/Enter opens, x ticks for bulk.
  const rows = Array.from(document.querySelectorAll("tr.item"));
  let at = -1;
  function select(n) {
    if (!rows.length) return;
    at = Math.max(0, Math.min(rows.length - 1, n));
    rows.forEach((row, i) => row.classList.toggle("selected", i === at));
    rows[at].scrollIntoView({ block: "nearest" });
  }

  function decide(value) {
    const button = document.querySelector(`#decide button[value="${value}"]`);
    if (button) button.form.requestSubmit(button);
  }

  document.addEventListener("keydown", (event) => {
    if (event.altKey || event.ctrlKey || event.metaKey || typing(event)) return;
    const key = event.key;
    if (key === "?") {
      help.hidden = !help.hidden;
      event.preventDefault();
      return;
    }
    if (page === "queue") {
      if (key === "j") select(at + 1);
      else if (key === "k") select(at - 1);
      else if ((key === "o" || key === "Enter") && at >= 0) window.location.assign(rows[at].dataset.href);
      else if (key === "x" && at >= 0) {
        const box = rows[at].querySelector("input[type=checkbox]");
        if (box) box.checked = !box.checked;
      } else return;
      event.preventDefault();
    } else if (page === "item") {
      if (key === "j") go("next");
      else if (key === "k") go("prev");
      else if (key === "c") decide("confirm");
      else if (key === "a") decide("allow");
      else if (key === "d") decide("delete");
      else if (key === "q" || key === "Escape") go("to-queue");
      else return;
      event.preventDefault();
    }
  });

  if (page === "queue" && rows.length) select(0);
})();
