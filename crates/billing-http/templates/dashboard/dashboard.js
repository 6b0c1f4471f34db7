// Progressive enhancement for the billing page: the custom amount's preview follows what is
// typed. Without this script the Preview button shows the same after a submit.
(function () {
  var input = document.getElementById('amount');
  var copy = document.getElementById('amount-copy');
  var button = document.getElementById('custom-top-up');
  if (!input || !copy || !button) return;
  var timer;
  input.addEventListener('input', function () {
    copy.value = input.value;
    clearTimeout(timer);
    timer = setTimeout(function () {
      fetch('/dashboard/billing/preview?amount=' + encodeURIComponent(input.value), {
        credentials: 'same-origin',
        redirect: 'error'
      })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          var box = document.getElementById('preview');
          if (html === null || !box || html.indexOf('id="preview"') < 0) return;
          box.outerHTML = html;
          var fresh = document.getElementById('preview');
          var ok = fresh !== null && fresh.getAttribute('data-ok') === 'true';
          button.disabled = !ok;
          input.setAttribute('aria-invalid', ok || input.value === '' ? 'false' : 'true');
        })
        .catch(function () { /* signed out or offline: the Preview button still works */ });
    }, 200);
  });
})();
