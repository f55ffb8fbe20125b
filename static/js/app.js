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

  function init(root) {
    root.querySelectorAll("textarea[data-count-max]").forEach(function (el) {
      updateCount(el);
      el.addEventListener("input", function () { updateCount(el); });
    });
    root.querySelectorAll("select[data-autosubmit]").forEach(function (el) {
      el.addEventListener("change", function () { el.form.submit(); });
    });
    root.querySelectorAll("[data-select-on-focus]").forEach(function (el) {
      el.addEventListener("focus", function () { el.select(); });
    });
    document.documentElement.classList.add("js");
  }

  document.addEventListener("DOMContentLoaded", function () { init(document); });
})();
