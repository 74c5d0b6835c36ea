// django-celery-beat's periodic task form in the admin: under the crontab field, say the chosen
// schedule in words. Upstream does this in an inline script, which our Content-Security-Policy
// does not run. Contract with templates/admin/djcelery/change_periodictask_form.html:
//   <script id="readable-crontabs" type="application/json">{"<crontab id>": "<in words>"}</script>
//   <script src="this file" data-crontab-help="the field's help text"></script>
(function () {
  "use strict";

  const $ = window.django && window.django.jQuery;
  const data = document.getElementById("readable-crontabs");
  if (!$ || !data) return;
  const readableCrontabs = JSON.parse(data.textContent);
  const originalHelp = document.currentScript.dataset.crontabHelp || "";

  function updateCrontabHelp(words) {
    // Text nodes, not .html(): the schedule's words are data, never markup. No crontab chosen
    // (the admin fires "change" on load too): just the help text, not "Translation: undefined".
    const help = $(".field-crontab .help").empty().append(document.createTextNode(originalHelp));
    if (words) help.append($("<br>"), document.createTextNode("Translation: " + words));
  }

  $(".field-crontab_translation").hide();
  $(".field-crontab").change(function () {
    updateCrontabHelp(readableCrontabs[$("#id_crontab").val()]);
  });
})();
