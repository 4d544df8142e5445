// Operator console: log in, follow the live board (snapshot, then ordered deltas), resume on reconnect.
"use strict";
const SOURCE = { camera: "雪亮工程", hotline: "12345热线", app: "随手拍" };
const SEV = { 1: "I级", 2: "II级", 3: "III级", 4: "IV级" };
const state = { token: sessionStorage.getItem("token"), seq: null, incidents: new Map(), ws: null, retry: 0, cmd: 0,
  applied: [], resumes: 0, resyncs: 0, moves: 0 };  // applied: "incident@version" of every delta shown (checked by tests)
const $ = (s) => document.querySelector(s);

function setConn(kind, text) { const c = $("#conn"); c.className = "conn " + kind; c.textContent = text; c.dataset.state = kind; }
function esc(s) { return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c])); }
function bj(iso) { return iso ? new Date(iso).toLocaleString("zh-CN", { timeZone: "Asia/Shanghai", hour12: false }) : ""; }
function eta(s) { return s < 60 ? `${s}秒` : `${Math.round(s / 60)}分钟`; }
function who(r) { return r ? `${esc(r.name)} <small>${esc(r.org)} · ${Math.round(r.distance_m)}米 · 约${eta(r.eta_s)}</small>` : "<small>—</small>"; }

function notice(text) {
  const n = $("#notice"); n.textContent = text; n.hidden = false;
  clearTimeout(notice.timer); notice.timer = setTimeout(() => { n.hidden = true; }, 8000);
}

function safeUrl(u) { return /^(https?|rtsp|rtmp):\/\//.test(u || "") ? esc(u) : ""; }
function extra(i) {
  const bits = [];
  if (i.camera && safeUrl(i.camera.snapshot_url)) bits.push(`<a href="${safeUrl(i.camera.snapshot_url)}" target="_blank" rel="noopener">现场快照</a>`);
  if (i.camera && safeUrl(i.camera.stream_url)) bits.push(`<a href="${safeUrl(i.camera.stream_url)}" target="_blank" rel="noopener">视频连线</a>`);
  if (i.caller_phone) bits.push(`来电 ${esc(i.caller_name || "")} ${esc(i.caller_phone)}`);
  if ((i.photo_urls || []).length) bits.push(`照片 ${i.photo_urls.length} 张`);
  return bits.length ? `<br><small>${bits.join(" · ")}</small>` : "";
}

const TASK_STATE = { offered: "待接单", accepted: "已接单", en_route: "途中", on_scene: "到场", done: "完成",
  declined: "拒绝", expired: "超时", cancelled: "撤回" };
function taskLine(i) {
  const live = (i.tasks || []).filter((t) => t.round === (i.round || 0));
  if (!live.length) return "";
  return "<br><small>" + live.map((t) => `${esc(t.responder_name)}·${TASK_STATE[t.state] || t.state}`).join("，") + "</small>";
}
function actions(i) {
  const canDispatch = ["new", "reopened", "dispatched", "in_progress"].includes(i.status) && state.role !== "viewer";
  return canDispatch ? `<br><button class="dispatch" data-id="${esc(i.incident_id)}">一键派遣</button>` : "";
}
function send(frame) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) { notice("未连接，命令未发送"); return false; }
  frame.id = `${frame.type}-${Date.now()}-${++state.cmd}`;
  state.ws.send(JSON.stringify(frame));
  return true;
}

// --- the map: grids, incidents by severity, responders by kind and status ------------------
// Responders' moves are pushed (`positions` frames, applied at once); the poll of
// /api/v1/responders/live brings statuses, duty and the forces board, and places responders the
// page has no marker for yet. A marker keeps the time of its position: nothing older moves it.
const RESPONDERS_POLL_MS = 15000;
const SEV_COLOR = { 1: "#c8102e", 2: "#e5661a", 3: "#c9a227", 4: "#3b7dd8" };
const KIND_COLOR = { police: "#4d9bff", grid_worker: "#2fbf71", volunteer: "#f2a33a" };
const KIND_LABEL = { police: "民警", grid_worker: "网格员", volunteer: "志愿者" };
const map = { m: null, incidents: null, responders: null, timer: null,
  markers: new Map() };  // responder id -> { marker, at (epoch ms of its position) }

async function authed(url, init) {
  const opts = init || {};
  const r = await fetch(url, { ...opts, headers: { ...(opts.headers || {}), Authorization: `Bearer ${state.token}` } });
  if (r.status === 401) { logout("登录已过期，请重新登录"); throw new Error(`${url}: 401`); }
  if (!r.ok) {
    let message = `${r.status}`;
    try { message = (await r.json()).message || message; } catch (e) { /* not JSON */ }
    const err = new Error(message); err.status = r.status; throw err;
  }
  return r.status === 204 ? null : r.json();
}

// Photos need the session: fetched with the token, shown from a blob URL (no token in any URL).
const photoCache = new Map();
async function photoSrc(url) {
  if (!photoCache.has(url)) {
    photoCache.set(url, (async () => {
      const r = await fetch(url, { headers: { Authorization: `Bearer ${state.token}` } });
      if (!r.ok) throw new Error(`photo ${r.status}`);
      return URL.createObjectURL(await r.blob());
    })());
  }
  return photoCache.get(url);
}
function ownPhoto(u) { try { return new URL(u, location.href).origin === location.origin && new URL(u, location.href).pathname.startsWith("/api/v1/photos/"); } catch (e) { return false; } }
async function showPhotos(container, urls) {
  for (const u of urls) {
    if (!ownPhoto(u)) continue;
    try {
      const img = document.createElement("img"); img.className = "photo"; img.alt = "处置照片";
      img.src = await photoSrc(u); container.appendChild(img);
    } catch (e) { console.warn(e); }
  }
}

async function initMap() {
  if (map.m || typeof L === "undefined") {
    if (typeof L === "undefined") $("#map-note").textContent = "地图库未安装（运行 ./centre run 会自动安装）";
    return;
  }
  map.m = L.map("map", { zoomControl: true, attributionControl: false, preferCanvas: true });
  const grids = await authed("/api/v1/grids");
  const layer = L.geoJSON(grids, {
    style: { color: "#3d5f99", weight: 1, fillColor: "#17325c", fillOpacity: 0.25 },
    onEachFeature: (f, l) => l.bindTooltip(`${f.properties.community_name} · ${f.properties.name}`),
  }).addTo(map.m);
  map.m.fitBounds(layer.getBounds());
  map.responders = L.layerGroup().addTo(map.m);
  map.incidents = L.layerGroup().addTo(map.m);
  drawIncidents();
  await drawResponders();
  map.timer = setInterval(() => drawResponders().catch((e) => console.warn(e)), RESPONDERS_POLL_MS);
}

async function drawResponders() {
  if (!map.m) return;
  const { responders } = await authed("/api/v1/responders/live");
  showForces(responders);
  const shown = new Set();
  for (const r of responders) {
    if (!r.on_duty) continue;
    shown.add(r.responder_id);
    const busy = r.status !== "available";
    const style = { radius: busy ? 4 : 2.5, weight: busy ? 2 : 0, color: "#fff",
      fillColor: busy ? "#8a8f98" : KIND_COLOR[r.kind] || "#999", fillOpacity: busy ? 1 : 0.75 };
    const tip = `${esc(r.name)}（${KIND_LABEL[r.kind] || r.kind}，${esc(r.org)}）${busy ? "·执行任务中" : ""}`;
    const at = r.at || 0;
    const known = map.markers.get(r.responder_id);
    if (!known) {
      const marker = L.circleMarker([r.lat, r.lon], style).bindTooltip(tip).addTo(map.responders);
      map.markers.set(r.responder_id, { marker, at });
      continue;
    }
    known.marker.setStyle(style);
    known.marker.setTooltipContent(tip);
    if (at > known.at) { known.marker.setLatLng([r.lat, r.lon]); known.at = at; }
  }
  for (const [id, known] of map.markers) {
    if (!shown.has(id)) { map.responders.removeLayer(known.marker); map.markers.delete(id); }
  }
}

// A `positions` frame: [[responder_id, lon, lat, at_ms], ...]; only responders on the map move.
function movePositions(positions) {
  for (const [id, lon, lat, at] of positions) {
    const known = map.markers.get(id);
    if (!known || at <= known.at) continue;
    known.marker.setLatLng([lat, lon]);
    known.at = at;
    state.moves++;
  }
}

function drawIncidents() {
  if (!map.incidents) return;
  map.incidents.clearLayers();
  const now = Date.now();
  for (const i of state.incidents.values()) {
    const loc = i.location || {};
    if (loc.lat == null) continue;
    const ageMin = (now - new Date(i.occurred_at).getTime()) / 60000;
    L.circleMarker([loc.lat, loc.lon], { radius: 9, weight: ageMin > 30 ? 4 : 2, color: ageMin > 30 ? "#ffd400" : "#fff",
      fillColor: SEV_COLOR[i.severity] || "#999", fillOpacity: 0.9 })
      .bindTooltip(`${SEV[i.severity]} ${esc(i.title)}（${esc(i.status_label)}）`)
      .addTo(map.incidents);
  }
}

// --- clocks: the step due soonest, counting down, coloured by status ------------------------
function fmt(ms) {
  const neg = ms < 0; let s = Math.floor(Math.abs(ms) / 1000);
  const d = Math.floor(s / 86400); s %= 86400; const h = Math.floor(s / 3600); s %= 3600; const m = Math.floor(s / 60); s %= 60;
  const t = d ? `${d}天${h}时` : h ? `${h}时${m}分` : `${m}分${String(s).padStart(2, "0")}秒`;
  return neg ? `超时${t}` : `剩余${t}`;
}
function clockLine(i) {
  const clocks = (i.clocks || []).slice().sort((a, b) => a.due_at.localeCompare(b.due_at));
  if (!clocks.length) return "";
  const c = clocks[0]; const now = Date.now();
  const cls = now >= Date.parse(c.due_at) ? "overdue" : now >= Date.parse(c.warn_at) ? "at_risk" : "ok";
  return `<br><small class="clock ${cls}" data-due="${esc(c.due_at)}" data-warn="${esc(c.warn_at)}">${esc(c.step_label)}·${fmt(Date.parse(c.due_at) - now)}</small>`;
}
setInterval(() => {
  const now = Date.now();
  for (const el of document.querySelectorAll(".clock[data-due]")) {
    const due = Date.parse(el.dataset.due); const warn = Date.parse(el.dataset.warn);
    el.className = "clock " + (now >= due ? "overdue" : now >= warn ? "at_risk" : "ok");
    el.textContent = el.textContent.split("·")[0] + "·" + fmt(due - now);
  }
}, 1000);

// --- the incident panel ------------------------------------------------------------------
const SOURCE_LABEL = { camera: "雪亮工程", hotline: "12345热线", app: "随手拍" };
async function select(id) {
  state.selected = id; render();
  const i = state.incidents.get(id); if (!i) return;
  $("#panel").hidden = false;
  $("#p-title").textContent = `${SEV[i.severity]} ${i.title}`;
  $("#p-meta").textContent = `${SOURCE_LABEL[i.source] || i.source} · ${i.status_label} · ${(i.location || {}).community_name || "辖区外"} ${(i.location || {}).grid_name || ""}`;
  $("#p-links").innerHTML = extra(i);
  $("#p-tasks").innerHTML = (i.tasks || []).map((t) => `<li>${esc(t.responder_name)}（${esc(t.org)}）· ${t.kind === "verification" ? "核查" : "处置"} · ${TASK_STATE[t.state] || t.state}${t.note ? "：" + esc(t.note) : ""}<div class="photos" data-task="${esc(t.task_id)}"></div></li>`).join("") || '<li class="muted">尚未派遣</li>';
  for (const t of i.tasks || []) {
    const box = document.querySelector(`.photos[data-task="${CSS.escape(t.task_id)}"]`);
    if (box && (t.photo_urls || []).length) showPhotos(box, t.photo_urls);
  }
  if (state.revealed !== id) { $("#p-reveal-result").textContent = ""; state.revealed = null; }
  $("#p-reveal").hidden = !(state.perms || []).includes("reveal") || !hasContact(i);
  send({ type: "recommend", incident_id: id });
  try {
    const full = await (await fetch(`/api/v1/incidents/${encodeURIComponent(id)}`, { headers: { Authorization: `Bearer ${state.token}` } })).json();
    $("#p-reports").innerHTML = (full.reports || []).map((r) => `<li>${SOURCE_LABEL[r.source] || r.source} ${esc(r.source_id)} · ${bj(r.received_at)}${r.payload.caller_phone ? " · 来电 " + esc(r.payload.caller_phone) : ""}</li>`).join("");
    $("#p-timeline").innerHTML = (full.timeline || []).map((e) => `<li>${bj(e.at)} ${esc(EVENT_LABEL[e.type] || e.type)}${e.reason ? "：" + esc(e.reason) : ""}${e.data && e.data.text ? "：" + esc(e.data.text) : ""}</li>`).join("");
  } catch (e) { console.warn(e); }
}
// a masked number in free text shows as digits around a run of asterisks: 138****8000
const MASKED_NUMBER = /\*{4,}\d{4}/;
function hasContact(i) {
  if (i.caller_phone || i.caller_name || i.reporter_id) return true;
  return [i.description, i.title, (i.location || {}).address, ...(i.tasks || []).map((t) => t.note)].some((t) => MASKED_NUMBER.test(t || ""));
}
const FIELD_LABEL = { caller_phone: "来电号码", caller_name: "来电人", reporter_id: "上报人" };
const TEXT_LABEL = { description: "描述", title: "标题", address: "地址", text: "记录", note: "处置说明", reason: "原因", comment: "评价", message: "留言" };
// 查看号码: the unmasked contact, on request with a reason; the server audits every reveal.
async function reveal() {
  const id = state.selected; if (!id) return;
  const reason = (window.prompt("查看完整号码将被记录（谁、何时、何事）。请填写查看事由：", "回访核实") || "").trim();
  if (!reason) return;
  if (reason.length < 2) { notice("事由至少2个字"); return; }
  try {
    const r = await authed(`/api/v1/incidents/${encodeURIComponent(id)}/reveal`, { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ reason }) });
    const parts = [];
    const seen = new Set();  // a text is shown once, though the incident and its report both hold it
    for (const f of ["caller_name", "caller_phone", "reporter_id"]) if (r[f]) parts.push(`${FIELD_LABEL[f]} ${esc(r[f])}`);
    for (const rep of r.reports || []) {
      const bits = ["caller_name", "caller_phone", "reporter_id"].filter((f) => rep[f] && rep[f] !== r[f]).map((f) => `${FIELD_LABEL[f]} ${esc(rep[f])}`);
      for (const t of rep.texts || []) {
        if (!seen.has(t.text)) bits.push(`${TEXT_LABEL[t.where.split(".").pop()] || "文字"}「${esc(t.text)}」`);
        seen.add(t.text);
      }
      if (bits.length) parts.push(`${SOURCE_LABEL[rep.source] || rep.source}：${bits.join(" ")}`);
    }
    // numbers typed into free text (description, notes, reasons), shown here unmasked
    for (const t of r.texts || []) {
      if (seen.has(t.text)) continue;
      seen.add(t.text);
      parts.push(`${TEXT_LABEL[t.where.split(".").pop()] || "文字"}「${esc(t.text)}」`);
    }
    state.revealed = id;
    $("#p-reveal-result").innerHTML = (parts.join("；") || "无联系信息") + ' <small class="muted">（已记录查看）</small>';
  } catch (e) { notice(`查看号码失败：${e.message}`); }
}

// --- the audit log (operators, commanders, administrators) -------------------------------
const AUDIT_KIND = { command: "指令", login: "登录", logout: "退出", reveal: "查看号码", admin: "管理" };
const AUDIT_OUTCOME = { ok: "成功", wrong_credentials: "密码错误", disabled: "账号已停用", delayed: "须等待后再试",
  too_frequent: "登录过于频繁", applied: "已执行", refused: "被拒绝", failed: "执行失败", revealed: "已查看",
  nothing_to_reveal: "无可查看" };
const LANE_LABEL = { device: "已登录过的设备", pair: "账号+地址", user: "账号（任意地址）", ip: "地址（任意账号）" };
async function refreshAudit() {
  if (!(state.perms || []).includes("audit.read")) return;
  try {
    const kind = $("#audit-kind").value;
    const r = await authed(`/api/v1/audit?limit=30${kind ? "&kind=" + encodeURIComponent(kind) : ""}`);
    $("#audit").innerHTML = r.entries.map((e) => `<li><small>${bj(e.at)}</small> ${esc(AUDIT_KIND[e.kind] || e.kind)} · ${esc(e.actor)} · ${esc(e.action)} · ${esc(AUDIT_OUTCOME[e.outcome] || e.outcome)}${e.incident_id ? " · " + esc(e.incident_id) : ""}${e.detail ? "：" + esc(e.detail) : ""}${e.origin ? ` <small class="muted">${esc(e.origin)}</small>` : ""}</li>`).join("") || '<li class="muted">暂无</li>';
  } catch (e) { console.warn(e); }
  refreshThrottles();
}
// administrators: the login lanes that are slowing someone down (GET /api/v1/auth/throttles)
async function refreshThrottles() {
  const box = $("#throttles-box");
  box.hidden = !(state.perms || []).includes("users.write");
  if (box.hidden) return;
  try {
    const r = await authed("/api/v1/auth/throttles");
    $("#throttles").innerHTML = r.lanes.map((t) => `<li>${esc(LANE_LABEL[t.lane] || t.lane)}：${esc(t.username || "任意账号")}`
      + `${t.address ? " · " + esc(t.address) : ""} · 失败${t.failures}次${t.next_attempt ? " · 下次可试 " + bj(t.next_attempt) : ""}</li>`).join("")
      || '<li class="muted">暂无</li>';
  } catch (e) { console.warn(e); }
}

const EVENT_LABEL = { "incident.file": "立案", "incident.dispatch": "派遣", "task.offer": "推送任务", "task.accept": "接单",
  "task.decline": "拒绝", "task.expire": "超时未接", "incident.reoffered": "自动改派", "task.en_route": "出发", "task.on_scene": "到场",
  "incident.start": "开始处置", "task.done": "完成", "incident.resolve": "处置完毕待核查", "incident.verify_pass": "核查通过",
  "incident.verify_fail": "核查未通过", "incident.close": "办结", "incident.reopen": "重启", "incident.cancel": "撤销",
  "incident.merge": "合并", "incident.absorbed": "合并同一事件", "incident.escalated": "督办预警", "incident.feedback": "居民评价",
  "task.cancel": "撤回任务", "incident.accepted": "已有人接单", "incident.split": "拆分", "incident.camera_recheck": "视频复核",
  "incident.note": "值班记录" };
function showRecommendation(msg) {
  if (msg.incident_id !== state.selected) return;
  $("#p-plan").textContent = `预案：${msg.plan}${msg.shortfall_text ? "（" + msg.shortfall_text + "）" : ""}`;
  $("#p-recs").innerHTML = msg.picks.map((p) => `<li>${esc(p.name)}（${KIND_LABEL[p.kind] || p.kind}，${esc(p.org)}）${Math.round(p.distance_m)}米 约${eta(p.eta_s)}
    <button class="small" data-pick="${esc(p.responder_id)}">派遣</button><br><small class="muted">${p.reasons.map(esc).join("；")}</small></li>`).join("") || '<li class="muted">附近暂无可派力量</li>';
}
function dispatchSelected(responders) {
  if (!state.selected || state.role === "viewer") return;
  const frame = { type: "dispatch", incident_id: state.selected };
  if (responders) frame.responders = responders;
  send(frame);
}

// --- alerts, escalations, 三率, forces ------------------------------------------------------
function beep() {
  try { const c = new (window.AudioContext || window.webkitAudioContext)(); const o = c.createOscillator(); const g = c.createGain();
    o.frequency.value = 660; o.connect(g); g.connect(c.destination); g.gain.value = 0.2; o.start(); o.stop(c.currentTime + 0.6); } catch (e) { /* no audio */ }
}
function severeAlert(i) {
  const a = $("#alert"); a.textContent = `⚠ 重大事件：${SEV[i.severity]} ${i.title}`; a.hidden = false; beep();
  clearTimeout(severeAlert.t); severeAlert.t = setTimeout(() => { a.hidden = true; }, 10000);
}
function addEscalation(ev, i) {
  const ul = $("#escalations"); if (ul.querySelector(".muted")) ul.innerHTML = "";
  const li = document.createElement("li");
  li.className = ev.data.level === "overdue" ? "clock overdue" : "clock at_risk";
  li.textContent = `${bj(ev.at)} ${i.title}：${ev.data.message}`;
  ul.prepend(li);
}
async function refreshRates() {
  try {
    const r = await (await fetch("/api/v1/rates?by=all", { headers: { Authorization: `Bearer ${state.token}` } })).json();
    const row = r.rows[0]; const pct = (v) => (v === null || v === undefined ? "—" : `${(v * 100).toFixed(1)}%`);
    $("#rates").innerHTML = `<tr><th>响应率</th><td>${pct(row.response_rate)}</td><td class="muted">${row.responded}/${row.filed}</td></tr>
      <tr><th>解决率</th><td>${pct(row.resolution_rate)}</td><td class="muted">${row.resolved}/${row.filed}</td></tr>
      <tr><th>满意率</th><td>${pct(row.satisfaction_rate)}</td><td class="muted">${row.satisfied}/${row.rated}</td></tr>`;
  } catch (e) { console.warn(e); }
}
function showForces(responders) {
  const count = {};
  for (const r of responders) {
    const k = r.kind; count[k] = count[k] || { free: 0, busy: 0, off: 0 };
    if (!r.on_duty) count[k].off++; else if (r.status === "available") count[k].free++; else count[k].busy++;
  }
  $("#forces").innerHTML = "<tr><th></th><th>待命</th><th>任务中</th><th>不在岗</th></tr>" + ["police", "grid_worker", "volunteer"].map((k) =>
    `<tr><th>${KIND_LABEL[k]}</th><td>${(count[k] || {}).free || 0}</td><td>${(count[k] || {}).busy || 0}</td><td>${(count[k] || {}).off || 0}</td></tr>`).join("");
}

function render() {
  const rows = [...state.incidents.values()].sort((a, b) => a.severity - b.severity || a.occurred_at.localeCompare(b.occurred_at));
  $("#count").textContent = rows.length;
  $("#seq").textContent = state.seq ?? "-";
  $("#incidents tbody").innerHTML = rows.map((i) => {
    const n = (i.recommended && i.recommended.nearest) || {};
    const loc = i.location || {};
    const place = loc.out_of_area ? '<span class="out">辖区外</span>' : `${esc(loc.grid_name)}<br><small>${esc(loc.community_name)}</small>`;
    return `<tr data-id="${esc(i.incident_id)}" class="${i._fresh ? "fresh" : ""} ${i.incident_id === state.selected ? "selected" : ""}">
      <td><span class="sev sev${i.severity}">${SEV[i.severity]}</span></td>
      <td>${SOURCE[i.source] || esc(i.source)}</td>
      <td><strong>${esc(i.title)}</strong><br><small>${esc(i.description)}</small>${extra(i)}</td>
      <td>${place}</td><td>${bj(i.occurred_at)}</td><td>${esc(i.status_label)}${clockLine(i)}${taskLine(i)}${actions(i)}</td>
      <td>${who((n.police || [])[0])}</td><td>${who(i.recommended && i.recommended.own_grid_worker)}</td>
      <td>${who((n.grid_worker || [])[0])}</td><td>${who((n.volunteer || [])[0])}</td></tr>`;
  }).join("");
  for (const i of rows) delete i._fresh;
  drawIncidents();
}

function onFrame(msg) {
  if (msg.type === "positions") return movePositions(msg.positions);  // no seq, nothing to render
  if (msg.type === "snapshot") {
    state.incidents = new Map(msg.incidents.map((i) => [i.incident_id, i]));
    state.seq = msg.seq;
    if (msg.resync) { state.resyncs++; notice("连接中断期间的更新无法补齐，已重新加载全部在办事件"); }
  } else if (msg.type === "delta") {
    if (state.seq !== null && msg.seq !== state.seq + 1) { console.warn("gap", state.seq, msg.seq); return reconnect(); }
    state.seq = msg.seq;
    state.applied.push(`${msg.incident.incident_id}@${msg.event.version}`);
    const i = msg.incident; i._fresh = true;
    if (msg.event.type === "incident.file" && i.severity <= 2) severeAlert(i);
    if (msg.event.type === "incident.escalated") addEscalation(msg.event, i);
    if (["closed", "cancelled", "merged"].includes(i.status)) state.incidents.delete(i.incident_id);
    else state.incidents.set(i.incident_id, i);
  } else if (msg.type === "resumed") {
    state.resumes++;
  } else if (msg.type === "recommendation") {
    return showRecommendation(msg);
  } else if (msg.type === "error") {
    console.warn("server error", msg);
    if (msg.code === "refused" || msg.code === "forbidden") notice(`命令未执行：${msg.message}`);
    if (msg.code === "rate_limited") notice("操作过于频繁，请稍后再试");
    if (msg.code === "unauthorised" || msg.code === "session_expired") return logout("登录已过期，请重新登录");
  }
  render();
  if (msg.type === "delta" && msg.incident.incident_id === state.selected) select(state.selected);
}

function connect(url) {
  setConn("wait", "连接中…");
  const ws = new WebSocket(url);
  state.ws = ws;
  ws.onopen = () => {
    const hello = { type: "auth", id: `c${++state.cmd}`, token: state.token };
    if (state.seq !== null) hello.resume_from = state.seq;
    ws.send(JSON.stringify(hello));
    state.retry = 0;
    setConn("on", "实时");
  };
  ws.onmessage = (e) => onFrame(JSON.parse(e.data));
  ws.onclose = (e) => {
    if (state.ws !== ws) return;
    setConn("off", "已断开，重连中");
    if (e.code === 4401) return logout("登录已过期，请重新登录");
    if (e.code === 4403) return logout("此账号无权使用实时指挥台");
    // this account opened more windows than allowed elsewhere: this one was the oldest; a click reconnects
    if (e.code === 4409) { setConn("off", "已在其他窗口打开，点击重连"); notice("此账号在其他窗口打开过多，本窗口已断开"); document.querySelector("#conn").onclick = () => { document.querySelector("#conn").onclick = null; connect(url); }; return; }
    setTimeout(() => connect(url), Math.min(5000, 250 * 2 ** state.retry++));
  };
}

function reconnect() { if (state.ws) state.ws.close(); }

async function start() {
  $("#login-view").hidden = true; $("#board-view").hidden = false; $("#logout").hidden = false;
  const me = await fetch("/api/v1/auth/me", { headers: { Authorization: `Bearer ${state.token}` } });
  if (!me.ok) return logout("登录已过期，请重新登录");
  const user = await me.json();
  $("#who").textContent = `${user.display_name}（${user.username}）`;
  state.role = user.role; state.perms = user.permissions || [];
  $("#audit-card").hidden = !state.perms.includes("audit.read");
  refreshAudit(); state.auditTimer = setInterval(refreshAudit, 30000);
  const cfg = await (await fetch("/api/v1/config")).json();
  connect(cfg.ws_url);
  initMap().catch((e) => { console.warn(e); $("#map-note").textContent = "地图加载失败"; });
  refreshRates(); setInterval(refreshRates, 60000);
}

function logout(message, endSession) {
  if (endSession && state.token) {  // ends the session on the server too (not only in this tab)
    fetch("/api/v1/auth/logout", { method: "POST", headers: { Authorization: `Bearer ${state.token}` } }).catch(() => {});
  }
  clearInterval(state.auditTimer);
  for (const p of photoCache.values()) p.then((u) => URL.revokeObjectURL(u)).catch(() => {});
  photoCache.clear();
  $("#p-reveal-result").textContent = ""; state.revealed = null;
  sessionStorage.removeItem("token"); state.token = null;
  const ws = state.ws; state.ws = null; if (ws) ws.close();
  $("#login-view").hidden = false; $("#board-view").hidden = true; $("#logout").hidden = true;
  $("#login-error").textContent = message || ""; setConn("off", "未连接");
  $("#who").textContent = "";  // a shared command-room screen shows nobody as logged in
  const pw = $("#login input[name=password]"); if (pw) pw.value = "";
}

$("#login").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = new FormData(e.target);
  const r = await fetch("/api/v1/auth/login", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: f.get("username"), password: f.get("password"),
      device: localStorage.getItem(`device:${f.get("username")}`) || undefined }) });
  if (r.status === 429) { $("#login-error").textContent = ((await r.json()).message || "").split(" / ")[0] || "登录失败次数过多，请稍后再试"; return; }
  if (!r.ok) { $("#login-error").textContent = "用户名或密码错误"; return; }
  const body = await r.json();
  // this browser's device token: its next logins as this user count in a lane of their own
  if (body.device_token) localStorage.setItem(`device:${body.username}`, body.device_token);
  state.token = body.token; sessionStorage.setItem("token", state.token);
  start();
});
$("#logout").addEventListener("click", () => logout("", true));
$("#p-reveal").addEventListener("click", reveal);
$("#audit-kind").addEventListener("change", refreshAudit);
$("#audit-refresh").addEventListener("click", refreshAudit);
$("#incidents").addEventListener("click", (e) => {
  const b = e.target.closest("button.dispatch");
  if (b) { b.disabled = true; send({ type: "dispatch", incident_id: b.dataset.id }); return; }
  const row = e.target.closest("tr[data-id]");
  if (row && !e.target.closest("a")) select(row.dataset.id);
});
$("#p-dispatch").addEventListener("click", () => dispatchSelected(null));
$("#p-note").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = e.target.text.value.trim();
  if (!text || !state.selected) return;
  if (send({ type: "note", incident_id: state.selected, text })) e.target.text.value = "";
});
$("#p-recs").addEventListener("click", (e) => {
  const b = e.target.closest("button[data-pick]"); if (b) { b.disabled = true; dispatchSelected([b.dataset.pick]); }
});
document.addEventListener("keydown", (e) => {
  if (e.target.closest("input, textarea")) return;
  if (e.key === "d" || e.key === "D") dispatchSelected(null);
});
if (state.token) start();
