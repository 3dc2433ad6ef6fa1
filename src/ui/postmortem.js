// medic's console, postmortem page: a Copy button for the draft, and the reader's own
// time zone when the page was asked for without one. Without JavaScript the button stays
// hidden, the draft can be selected by hand or downloaded, and times are in UTC.
(function () {
  var draft = document.getElementById("draft");
  var zone = document.getElementById("tz");
  if (zone && zone.dataset.chosen !== "yes" && window.Intl && Intl.DateTimeFormat) {
    var mine = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (mine && mine !== zone.value) {
      var url = new URL(window.location.href);
      url.searchParams.set("tz", mine);
      window.location.replace(url.toString());
      return;
    }
  }
  var button = document.getElementById("copy");
  var said = document.getElementById("copied");
  if (!draft || !button) return;
  function done(text) { if (said) said.textContent = text; }
  function bySelection() {
    var range = document.createRange();
    range.selectNodeContents(draft);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    done(ok ? "Copied." : "Selected: press Ctrl+C to copy.");
  }
  button.hidden = false;
  button.addEventListener("click", function () {
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(draft.textContent).then(
        function () { done("Copied."); },
        bySelection
      );
    } else {
      bySelection();
    }
  });
})();
