// The lineage page (templates/lakehouse/lineage.html): a large graph opens scrolled to its top
// left corner, far from the table or job it is about; centre its frame on that node instead.
(function () {
  "use strict";

  function centreOnFocus() {
    var frame = document.querySelector(".lineage-scroll");
    var focus = frame && frame.querySelector(".lineage-node.focus rect");
    if (!focus) {
      return;
    }
    var outer = frame.getBoundingClientRect();
    var node = focus.getBoundingClientRect();
    frame.scrollLeft += node.left + node.width / 2 - (outer.left + outer.width / 2);
    frame.scrollTop += node.top + node.height / 2 - (outer.top + outer.height / 2);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", centreOnFocus);
  } else {
    centreOnFocus();
  }
})();
