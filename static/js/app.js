// Small progressive enhancements; the UI works without them. No inline scripts (CSP).
(function () {
  "use strict";

  function updateCount(textarea) {
    var out = document.querySelector('[data-count-for="' + textarea.id + '"]');
    if (!out) return;
    var max = parseInt(textarea.getAttribute("data-count-max"), 10);
    out.textContent = textarea.value.length;
    out.parentElement.classList.toggle("over", !isNaN(max) && textarea.value.length > max);
  }

  // Copy a field's value (a new API token) and say so where a screen reader hears it.
  function copyFrom(button) {
    var id = button.getAttribute("data-copy-from");
    var field = document.getElementById(id);
    var status = document.querySelector('[data-copy-status="' + id + '"]');
    if (!field) return;
    function done(ok) {
      if (status) status.textContent = ok ? "Copied to the clipboard." : "Copy failed: select the token and copy it by hand.";
      if (ok) button.textContent = button.getAttribute("data-copied-text") || "Copied";
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(function () { done(true); }, function () { done(false); });
    } else {
      field.focus();
      field.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      done(ok);
    }
  }

  function init(root) {
    root.querySelectorAll("textarea[data-count-max]").forEach(function (el) {
      updateCount(el);
      el.addEventListener("input", function () { updateCount(el); });
    });
    root.querySelectorAll("[data-copy-from]").forEach(function (button) {
      button.addEventListener("click", function () { copyFrom(button); });
    });
    root.querySelectorAll("[data-select-on-focus]").forEach(function (el) {
      el.addEventListener("focus", function () { el.select(); });
    });
    // A table's header box ticks or unticks every row box of its form on the page.
    root.querySelectorAll("[data-select-all]").forEach(function (box) {
      var name = box.getAttribute("data-select-all");
      box.addEventListener("change", function () {
        document.querySelectorAll('input[type="checkbox"][name="' + name + '"]').forEach(function (row) {
          row.checked = box.checked;
        });
      });
    });
    document.documentElement.classList.add("js");
  }

  document.addEventListener("DOMContentLoaded", function () { init(document); });
})();
