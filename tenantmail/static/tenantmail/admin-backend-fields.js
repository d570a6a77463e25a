/* tenantmail: show only the inputs of the chosen mail backend (TenantMailForm).
 *
 * Progressive enhancement: without this script every input is shown and the server refuses the
 * ones the backend does not use. With it, choosing a backend shows its inputs (opening their
 * section if it was collapsed), hides the others, and disables them so that values left in a
 * hidden input are not submitted.
 */
"use strict";
(function () {
  var PREFIX = "mail_option_";

  function rowOf(input) {
    return input.closest(".form-row, .fieldBox, p, li, tr") || input.parentElement;
  }

  function init() {
    var select = document.querySelector("select[data-tenantmail-fields]");
    if (!select || !select.form) {
      return;
    }
    var uses = JSON.parse(select.getAttribute("data-tenantmail-fields"));
    var form = select.form;
    var inputs = Array.prototype.slice.call(form.querySelectorAll("[name^='" + PREFIX + "']"));

    function update() {
      var used = uses[select.value];
      inputs.forEach(function (input) {
        // A choice the script does not know (a custom backend): show everything.
        var shown = !used || used.indexOf(input.name) !== -1;
        rowOf(input).hidden = !shown;
        input.disabled = !shown;
      });
      Array.prototype.forEach.call(form.querySelectorAll("fieldset"), function (fieldset) {
        var own = inputs.filter(function (input) { return fieldset.contains(input); });
        if (!own.length) {
          return;
        }
        var visible = own.some(function (input) { return !input.disabled; });
        fieldset.hidden = !visible;
        if (visible) {
          var details = fieldset.querySelector("details");
          if (details) {
            details.open = true; // Django >= 5.1 renders collapsible sections as <details>
          }
          fieldset.classList.remove("collapsed");
        }
      });
    }

    select.addEventListener("change", update);
    update();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
