/// The station's one page: HTML, CSS and JavaScript in one string, served from the binary (no
/// CDN, no build step). Colours of the dot map are the report's (SessionReport.colours in
/// SMPRender): done green, in flight blue, cut short orange, in doubt red, planned grey.
enum StationPage {
    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>smpctl station</title>
<style>
  :root { font-family: system-ui, sans-serif; color: #1a1a1a; background: #f5f5f5; }
  body { margin: 0; }
  header { display: flex; align-items: baseline; gap: 1em; padding: .6em 1em; background: #263238; color: #fff; }
  header h1 { font-size: 1.2em; margin: 0; }
  #phase { font-weight: bold; padding: .1em .6em; border-radius: .3em; background: #607d8b; }
  #phase.running { background: #2e7d32; } #phase.held { background: #ef6c00; }
  #phase.finished { background: #37474f; } #phase.preflight { background: #1565c0; }
  main { display: grid; grid-template-columns: minmax(300px, 1fr) 20em; gap: 1em; padding: 1em; }
  #map-box { background: #fff; border: 1px solid #cfd8dc; border-radius: .4em; padding: .5em; }
  #map { width: 100%; height: auto; display: block; }
  .legend span { display: inline-block; margin-right: 1em; font-size: .9em; }
  .legend i { display: inline-block; width: .8em; height: .8em; border-radius: 50%; margin-right: .3em; vertical-align: middle; }
  aside section { background: #fff; border: 1px solid #cfd8dc; border-radius: .4em; padding: .6em .8em; margin-bottom: .8em; }
  aside h2 { font-size: 1em; margin: 0 0 .4em; }
  #progress-bar { height: 1em; background: #eceff1; border-radius: .5em; overflow: hidden; }
  #progress-fill { height: 100%; width: 0; background: #2e7d32; }
  button { font-size: 1.1em; padding: .6em 1em; border-radius: .4em; border: 2px solid #37474f; background: #fff; cursor: pointer; }
  button:disabled { opacity: .35; cursor: not-allowed; }
  #hold { display: block; width: 100%; font-size: 2.2em; font-weight: bold; padding: .8em; background: #ef6c00; color: #fff; border-color: #bf360c; }
  .row { display: flex; gap: .5em; margin-top: .6em; flex-wrap: wrap; }
  .confirm { border: 2px solid #c62828; background: #ffebee; border-radius: .4em; padding: .6em; margin-top: .6em; }
  .hidden { display: none !important; }
  #estop { font-weight: bold; color: #b71c1c; }
  #notes { font-size: .85em; max-height: 12em; overflow: auto; margin: 0; padding-left: 1.2em; }
  #summary { border: 2px solid #37474f; }
  #blockers { color: #b71c1c; }
  dl { display: grid; grid-template-columns: auto 1fr; gap: .1em .8em; margin: 0; font-size: .95em; }
  dt { color: #546e7a; }
  dd { margin: 0; }
  #conn.lost { color: #b71c1c; font-weight: bold; }
</style>
</head>
<body>
<header>
  <h1>smpctl station</h1><span id="phase">connecting</span><span id="plan-id"></span>
  <span id="conn" style="margin-left:auto">connecting…</span>
</header>
<main>
  <div id="map-box">
    <canvas id="map" width="900" height="560" aria-label="dot map"></canvas>
    <div class="legend">
      <span><i style="background:#2e7d32"></i>done</span><span><i style="background:#1565c0"></i>in flight (next)</span>
      <span><i style="background:#c62828"></i>in doubt</span><span><i style="background:#ef6c00"></i>cut short</span>
      <span><i style="background:#b0bec5"></i>planned</span><span id="scale"></span>
    </div>
  </div>
  <aside>
    <section>
      <p id="estop">E-stop: the red hardware button on the machine. This page cannot stop the needle in an emergency.</p>
      <button id="hold" disabled>HOLD</button>
      <div class="row">
        <button id="resume" disabled>Resume…</button>
        <button id="end" disabled>End session…</button>
      </div>
      <div id="confirm-resume" class="confirm hidden">
        <p>Resume the session? Every interlock must be healthy (pedal pressed, contact made).</p>
        <div class="row"><button id="resume-yes">Resume now</button><button id="resume-no">Cancel</button></div>
      </div>
      <div id="confirm-end" class="confirm hidden">
        <p>End the session now? The needle retracts (a dot still in the skin is cut short: recorded, never
        repeated); the remaining dots stay resumable with <code>smpctl resume</code>.</p>
        <div class="row"><button id="end-yes">End the session</button><button id="end-no">Stay</button></div>
      </div>
      <p id="blockers"></p>
    </section>
    <section>
      <h2>Progress</h2>
      <div id="progress-bar"><div id="progress-fill"></div></div>
      <p id="progress">—</p>
      <dl>
        <dt>Device</dt><dd id="device">—</dd>
        <dt>Interlocks</dt><dd id="interlock">—</dd>
      </dl>
      <ul id="inputs"></ul>
    </section>
    <section id="preflight-box" class="hidden">
      <h2>Preflight</h2>
      <dl id="preflight"></dl>
      <div class="row"><button id="arm" disabled>Arm…</button><button id="decline" disabled>Do not arm</button></div>
      <div id="confirm-arm" class="confirm hidden">
        <p id="arm-question">Arm the applicator and start?</p>
        <div class="row"><button id="arm-yes">Yes, arm and start</button><button id="arm-no">Cancel</button></div>
      </div>
    </section>
    <section id="summary" class="hidden">
      <h2 id="headline">Session ended</h2>
      <ul id="summary-lines"></ul>
      <p><a id="report-link" class="hidden" href="#" target="_blank">Open the session's report</a></p>
    </section>
    <section>
      <h2>Messages</h2>
      <ol id="notes"></ol>
    </section>
  </aside>
</main>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token");
const suffix = token ? "?token=" + encodeURIComponent(token) : "";
const colours = { d: "#2e7d32", f: "#1565c0", q: "#c62828", x: "#ef6c00", p: "#b0bec5", s: "#6a1b9a" };
const $ = (id) => document.getElementById(id);
let plan = null, state = null, socket = null;

function send(command) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ command }));
}
function show(id, on) { $(id).classList.toggle("hidden", !on); }
function duration(s) {
  if (s == null || !isFinite(s)) return "—";
  s = Math.round(s); const m = Math.floor(s / 60), r = s % 60;
  return m > 0 ? m + " min " + r + " s" : r + " s";
}

$("hold").onclick = () => send("hold");
$("resume").onclick = () => { show("confirm-resume", true); show("confirm-end", false); };
$("resume-no").onclick = () => show("confirm-resume", false);
$("resume-yes").onclick = () => { show("confirm-resume", false); send("resume"); };
$("end").onclick = () => { show("confirm-end", true); show("confirm-resume", false); };
$("end-no").onclick = () => show("confirm-end", false);
$("end-yes").onclick = () => { show("confirm-end", false); send("end"); };
$("arm").onclick = () => show("confirm-arm", true);
$("arm-no").onclick = () => show("confirm-arm", false);
$("arm-yes").onclick = () => { show("confirm-arm", false); send("arm"); };
$("decline").onclick = () => send("decline");

function draw() {
  if (!plan || !state) return;
  const canvas = $("map"), ctx = canvas.getContext("2d");
  const n = plan.ids.length;
  let minX = Infinity, maxX = -Infinity, minY = Infinity, maxY = -Infinity;
  for (let i = 0; i < n; i++) {
    minX = Math.min(minX, plan.xMillimetres[i]); maxX = Math.max(maxX, plan.xMillimetres[i]);
    minY = Math.min(minY, plan.yMillimetres[i]); maxY = Math.max(maxY, plan.yMillimetres[i]);
  }
  if (n === 0) { minX = minY = 0; maxX = maxY = 1; }
  const pad = 30, w = canvas.width - 2 * pad, h = canvas.height - 2 * pad;
  const scale = Math.min(w / Math.max(maxX - minX, 1), h / Math.max(maxY - minY, 1));
  const ox = pad + (w - (maxX - minX) * scale) / 2, oy = pad + (h - (maxY - minY) * scale) / 2;
  const r = Math.max(3, Math.min(9, 0.35 * scale));
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
  const order = ["p", "s", "d", "x", "q", "f"];  // the dots that need eyes drawn last, on top
  for (const code of order) {
    ctx.fillStyle = colours[code];
    for (let i = 0; i < n; i++) {
      if (state.codes[i] !== code) continue;
      const x = ox + (plan.xMillimetres[i] - minX) * scale, y = oy + (maxY - plan.yMillimetres[i]) * scale;
      ctx.beginPath(); ctx.arc(x, y, code === "f" ? r * 1.6 : r, 0, 2 * Math.PI); ctx.fill();
    }
  }
  // A 10 mm scale bar (or 1 mm for a small plan), y up as on the client's scalp in the plan.
  const bar = (maxX - minX) > 20 ? 10 : 1;
  ctx.strokeStyle = "#000"; ctx.lineWidth = 2; ctx.beginPath();
  ctx.moveTo(pad, canvas.height - 10); ctx.lineTo(pad + bar * scale, canvas.height - 10); ctx.stroke();
  ctx.fillStyle = "#000"; ctx.font = "14px sans-serif"; ctx.fillText(bar + " mm", pad + bar * scale + 6, canvas.height - 5);
}

function render() {
  if (!state) return;
  const s = state;
  $("phase").textContent = { connecting: "connecting to the applicator", preflight: "preflight: waiting for the operator",
    running: "running", held: "HELD", finished: "session ended" }[s.phase] || s.phase;
  $("phase").className = s.phase;
  document.body.dataset.phase = s.phase;
  document.body.dataset.question = s.question;
  const armed = s.phase === "running" || s.phase === "held";
  $("hold").disabled = s.phase !== "running";
  $("resume").disabled = !(s.phase === "held" && s.question === "resume");
  $("end").disabled = !armed && s.phase !== "preflight";
  if (s.phase !== "held") show("confirm-resume", false);
  if (!armed && s.phase !== "preflight") show("confirm-end", false);
  show("preflight-box", !!s.preflight && s.phase === "preflight");
  if (s.preflight) {
    const p = s.preflight;
    $("plan-id").textContent = p.planID;
    const rows = [["Plan", p.planID], ["Dots", p.dotCount + (p.alreadyDone ? " (" + p.alreadyDone + " done earlier)" : "")],
      ["Regions", Object.entries(p.regions).map(([k, v]) => k + " " + v).join(", ") || "—"],
      ["Device", p.device], ["Firmware", p.firmware], ["Estimated", duration(p.estimatedSeconds)]];
    $("preflight").innerHTML = "";
    for (const [k, v] of rows) {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd"); dd.textContent = v;
      $("preflight").append(dt, dd);
    }
    $("arm-question").textContent = "Arm the applicator and start " + p.dotCount + " dots?";
  }
  const asking = s.question === "arm";
  $("arm").disabled = !asking; $("decline").disabled = !asking;
  if (!asking) show("confirm-arm", false);
  const pct = s.total ? 100 * s.done / s.total : 0;
  $("progress-fill").style.width = pct.toFixed(1) + "%";
  $("progress").textContent = "Done " + s.done + " of " + s.total + " dots · ETA " +
    (s.phase === "running" || s.phase === "held" ? duration(s.etaSeconds) : "—") +
    (s.holdReason ? " · held: " + s.holdReason : "");
  $("device").textContent = (s.device || "—") + (s.deviceFault ? " (fault " + s.deviceFault + ")" : "");
  $("interlock").textContent = (s.interlock || "—") + (s.sim ? " (simulated lines)" : "");
  $("inputs").innerHTML = "";
  for (const input of s.interlockInputs) {
    const li = document.createElement("li");
    li.textContent = input.name + " (" + input.role + "): " + input.reading + (input.healthy ? "" : " — not healthy");
    $("inputs").append(li);
  }
  $("blockers").textContent = s.blockers.length ? "Cannot resume yet: " + s.blockers.join("; ") : "";
  $("notes").innerHTML = "";
  for (const note of s.notes) { const li = document.createElement("li"); li.textContent = note; $("notes").append(li); }
  show("summary", !!s.summary);
  if (s.summary) {
    $("headline").textContent = s.summary.headline;
    $("summary-lines").innerHTML = "";
    for (const line of s.summary.lines.filter((l) => l !== s.summary.headline)) { const li = document.createElement("li"); li.textContent = line; $("summary-lines").append(li); }
    show("report-link", s.reportAvailable);
    $("report-link").href = "/report" + suffix;
  }
  draw();
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  socket = new WebSocket(scheme + location.host + "/ws" + suffix);
  socket.onopen = () => { $("conn").textContent = "live"; $("conn").className = ""; };
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "plan") plan = message; else if (message.type === "state") state = message;
    render();
  };
  socket.onclose = () => {
    $("conn").textContent = state && state.phase === "finished" ? "station closed" : "connection lost — retrying";
    $("conn").className = "lost";
    $("hold").disabled = true;
    setTimeout(connect, 1000);
  };
}
connect();
</script>
</body>
</html>
"""#
}
