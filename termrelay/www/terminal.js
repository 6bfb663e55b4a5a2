// pgcloud terminal page: xterm.js <-> the relay's WebSocket.
// The token travels only in Sec-WebSocket-Protocol ("pgcloud.token.<token>"),
// never in the URL. A token may also be handed over in the URL fragment
// (#token=...), which browsers never send to a server; it is removed at once.
(function () {
  'use strict';
  var term = new Terminal({ cols: 100, rows: 30, convertEol: false, scrollback: 2000 });
  term.open(document.getElementById('terminal'));
  window.pgcloudTerm = term;
  window.pgcloudState = { state: 'idle', code: null, reason: null };
  var status = document.getElementById('status');
  var ws = null;

  function setState(state, code, reason) {
    window.pgcloudState = { state: state, code: code === undefined ? null : code, reason: reason || null };
    status.textContent = state + (code ? ' (' + code + (reason ? ' ' + reason : '') + ')' : '');
  }

  function open(token) {
    if (ws) { ws.close(); }
    var url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
    ws = new WebSocket(url, ['pgcloud.terminal', 'pgcloud.token.' + token]);
    ws.binaryType = 'arraybuffer';
    setState('connecting');
    ws.onopen = function () {
      setState('connected');
      ws.send('1' + JSON.stringify({ cols: term.cols, rows: term.rows }));
      term.focus();
    };
    ws.onmessage = function (ev) {
      term.write(typeof ev.data === 'string' ? ev.data : new Uint8Array(ev.data));
    };
    ws.onclose = function (ev) { setState('closed', ev.code, ev.reason); };
    ws.onerror = function () { if (window.pgcloudState.state === 'connecting') setState('error'); };
  }
  window.pgcloudOpen = open;

  term.onData(function (d) { if (ws && ws.readyState === 1) ws.send('0' + d); });
  term.onResize(function (s) {
    if (ws && ws.readyState === 1) ws.send('1' + JSON.stringify({ cols: s.cols, rows: s.rows }));
  });

  document.getElementById('connect').addEventListener('submit', function (ev) {
    ev.preventDefault();
    var input = document.getElementById('token');
    var token = input.value.trim();
    input.value = '';
    if (token) open(token);
  });

  var m = /^#token=([A-Za-z0-9_-]+)$/.exec(location.hash);
  if (m) {
    history.replaceState(null, '', location.pathname);
    open(m[1]);
  }
})();
