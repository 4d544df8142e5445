// Responder's phone: log in, share the position, get tasks pushed with sound and vibration, act on them.
"use strict";
const $ = (s) => document.querySelector(s);
const state = { token: sessionStorage.getItem("rtoken"), me: null, tasks: new Map(), ws: null, n: 0, watch: null, retry: 0 };
const STATE_LABEL = { offered: "待接单", accepted: "已接单", en_route: "前往途中", on_scene: "已到场", done: "已完成",
  declined: "已拒绝", expired: "超时未接", cancelled: "已取消" };
const SEV = { 1: "I级", 2: "II级", 3: "III级", 4: "IV级" };
const ACTIVE = new Set(["offered", "accepted", "en_route", "on_scene"]);
function esc(s) { return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c])); }
function notice(text) { const n = $("#notice"); n.textContent = text; n.hidden = false; clearTimeout(notice.t); notice.t = setTimeout(() => { n.hidden = true; }, 6000); }
function setConn(kind, text) { const c = $("#conn"); c.className = "conn " + kind; c.textContent = text; c.dataset.state = kind; }

function alertNewTask() {
  try { if (navigator.vibrate) navigator.vibrate([300, 120, 300]); } catch (e) { /* not on this device */ }
  try {
    const ctx = new (window.AudioContext || window.webkitAudioContext)();
    const o = ctx.createOscillator(); const g = ctx.createGain();
    o.frequency.value = 880; o.connect(g); g.connect(ctx.destination); g.gain.value = 0.2;
    o.start(); o.stop(ctx.currentTime + 0.4);
  } catch (e) { /* no audio */ }
}

function buttons(t) {
  const b = (action, label, cls = "") => `<button class="${cls}" data-act="${action}" data-task="${esc(t.task_id)}">${label}</button>`;
  if (t.state === "offered") return b("accept", "接单", "good") + b("decline", "拒绝", "bad");
  if (t.state === "accepted") return b("en_route", "出发") + b("on_scene", "已到场");
  if (t.state === "en_route") return b("on_scene", "已到场");
  if (t.state === "on_scene" && t.kind === "verification") return b("pass", "核查通过", "good") + b("fail", "核查不通过", "bad");
  if (t.state === "on_scene") return b("done", "处置完成", "good");
  return "";
}

function render() {
  const tasks = [...state.tasks.values()].filter((t) => ACTIVE.has(t.state));
  $("#empty").hidden = tasks.length > 0;
  $("#tasks").innerHTML = tasks.map((t) => {
    const i = t.incident || {}; const loc = i.location || {};
    const kind = t.kind === "verification" ? "核查任务" : "处置任务";
    return `<li class="task sev${i.severity} ${t._fresh ? "fresh" : ""}" data-task="${esc(t.task_id)}">
      <h3>${kind}｜${esc(i.title)}</h3>
      <div class="meta">${SEV[i.severity] || ""} · ${esc(i.category_label)} · ${esc(STATE_LABEL[t.state] || t.state)}</div>
      <div class="meta">${esc(loc.address || "")} ${esc(loc.community_name || "")} ${esc(loc.grid_name || "")}</div>
      <div class="meta">距离约 ${Math.round(t.distance_m || 0)} 米 · 预计 ${Math.max(1, Math.round((t.eta_s || 0) / 60))} 分钟</div>
      <div>${esc(i.description)}</div>
      ${(t.reasons || []).length ? `<div class="meta">派单理由：${t.reasons.map(esc).join("；")}</div>` : ""}
      ${t.state === "on_scene" ? `<textarea placeholder="处置情况说明" data-note="${esc(t.task_id)}"></textarea>
        <label class="meta">现场照片 <input type="file" accept="image/*" capture="environment" data-file="${esc(t.task_id)}"></label>
        <input type="hidden" data-photo="${esc(t.task_id)}">
        <span class="meta" data-photo-state="${esc(t.task_id)}"></span>` : ""}
      <div class="actions">${buttons(t)}</div>
    </li>`;
  }).join("");
  for (const t of tasks) delete t._fresh;
}

function send(frame) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) { notice("未连接，请稍后重试"); return false; }
  frame.id = `${frame.type}-${Date.now()}-${++state.n}`;
  state.ws.send(JSON.stringify(frame));
  return true;
}

function onFrame(msg) {
  if (msg.type === "ack") return;  // nothing to redraw (and the form being filled in stays as it is)
  if (msg.type === "tasks") {
    state.tasks = new Map(msg.tasks.map((t) => [t.task_id, t]));
    if (msg.tasks.some((t) => t.state === "offered")) alertNewTask();
  } else if (msg.type === "task") {
    const t = msg.task; const isNew = !state.tasks.has(t.task_id) && t.state === "offered";
    t._fresh = isNew; state.tasks.set(t.task_id, t);
    if (isNew) { alertNewTask(); notice(`新任务：${t.incident ? t.incident.title : ""}`); }
    if (t.state === "cancelled") notice("任务已被撤回");
  } else if (msg.type === "error") {
    if (msg.code === "unauthorised" || msg.code === "session_expired") return logout("登录已过期，请重新登录");
    notice(msg.code === "rate_limited" ? "操作过于频繁，请稍后再试" : `操作未成功：${msg.message}`);
  }
  render();
}

function connect(url) {
  setConn("wait", "连接中…");
  const ws = new WebSocket(url); state.ws = ws;
  ws.onopen = () => { ws.send(JSON.stringify({ type: "auth", id: `hello-${++state.n}`, token: state.token })); state.retry = 0; setConn("on", "在线"); };
  ws.onmessage = (e) => onFrame(JSON.parse(e.data));
  ws.onclose = (e) => {
    if (state.ws !== ws) return;
    setConn("off", "已断开，重连中");
    if (e.code === 4401) return logout("登录已过期，请重新登录");
    if (e.code === 4403) return logout("此账号无权接收任务");
    // this account opened more windows than allowed elsewhere: this one was the oldest; a click reconnects
    if (e.code === 4409) { setConn("off", "已在其他窗口打开，点击重连"); notice("此账号在其他窗口打开过多，本窗口已断开"); document.querySelector("#conn").onclick = () => { document.querySelector("#conn").onclick = null; connect(url); }; return; }
    setTimeout(() => connect(url), Math.min(5000, 250 * 2 ** state.retry++));
  };
}

function sharePosition(lon, lat, accuracy) {
  if (send({ type: "position", lon, lat, accuracy_m: accuracy })) {
    $("#pos").textContent = `${lon.toFixed(5)}, ${lat.toFixed(5)}`;
  }
}

async function start() {
  $("#login-view").hidden = true; $("#tasks-view").hidden = false;
  const me = await fetch("/api/v1/auth/me", { headers: { Authorization: `Bearer ${state.token}` } });
  if (!me.ok) return logout("登录已过期，请重新登录");
  state.me = await me.json();
  $("#who").textContent = state.me.display_name;
  const cfg = await (await fetch("/api/v1/config")).json();
  connect(cfg.ws_url);
}

function logout(message) {
  sessionStorage.removeItem("rtoken"); state.token = null;
  const ws = state.ws; state.ws = null; if (ws) ws.close();
  if (state.watch !== null && navigator.geolocation) navigator.geolocation.clearWatch(state.watch);
  $("#login-view").hidden = false; $("#tasks-view").hidden = true;
  $("#login-error").textContent = message || ""; setConn("off", "未连接");
}

$("#login").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = new FormData(e.target);
  const r = await fetch("/api/v1/auth/login", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: f.get("username"), password: f.get("password"),
      device: localStorage.getItem(`device:${f.get("username")}`) || undefined }) });
  if (r.status === 429) { $("#login-error").textContent = ((await r.json()).message || "").split(" / ")[0] || "登录失败次数过多，请稍后再试"; return; }
  if (!r.ok) { $("#login-error").textContent = "工号或密码错误"; return; }
  const body = await r.json();
  // this phone's device token: its next logins count in a lane of their own (docs/security.md)
  if (body.device_token) localStorage.setItem(`device:${body.username}`, body.device_token);
  if (body.role !== "responder") {  // not a phone login: end the session it just opened
    fetch("/api/v1/auth/logout", { method: "POST", headers: { Authorization: `Bearer ${body.token}` } }).catch(() => {});
    $("#login-error").textContent = "此页面供处置人员使用，值班员请使用指挥台"; return;
  }
  state.token = body.token; sessionStorage.setItem("rtoken", state.token);
  start();
});

$("#share").addEventListener("click", () => {
  if (!navigator.geolocation) { notice("此设备不支持定位，请手动填写位置"); return; }
  state.watch = navigator.geolocation.watchPosition(
    (p) => sharePosition(p.coords.longitude, p.coords.latitude, p.coords.accuracy),
    () => notice("无法获取定位，请手动填写位置"), { enableHighAccuracy: true, maximumAge: 10000 });
});
$("#manual").addEventListener("click", () => {
  const lon = parseFloat($("#lon").value); const lat = parseFloat($("#lat").value);
  if (!isFinite(lon) || !isFinite(lat)) { notice("请填写有效的经纬度"); return; }
  sharePosition(lon, lat, null);
});

$("#tasks").addEventListener("click", (e) => {
  const b = e.target.closest("button[data-act]"); if (!b) return;
  const id = b.dataset.task; const act = b.dataset.act;
  const frame = { type: "task", task_id: id };
  if (act === "decline") {
    const reason = prompt("拒绝原因（必填）");
    if (!reason) return;
    Object.assign(frame, { task_action: "decline", reason });
  } else if (act === "done" || act === "pass" || act === "fail") {
    const note = (document.querySelector(`[data-note="${CSS.escape(id)}"]`) || {}).value || "";
    const photo = (document.querySelector(`[data-photo="${CSS.escape(id)}"]`) || {}).value || "";
    Object.assign(frame, { task_action: "done" });
    if (note) frame.note = note;
    if (photo) frame.photo_urls = [photo];
    if (act !== "done") frame.passed = act === "pass";
    if (act === "fail") { const reason = prompt("未通过原因（必填）"); if (!reason) return; frame.reason = reason; }
  } else {
    frame.task_action = act;
  }
  b.disabled = true;
  send(frame);
});

$("#tasks").addEventListener("change", async (e) => {
  const input = e.target.closest("input[data-file]"); if (!input || !input.files.length) return;
  const id = input.dataset.file; const file = input.files[0];
  const status = document.querySelector(`[data-photo-state="${CSS.escape(id)}"]`);
  status.textContent = "照片上传中…";
  const r = await fetch("/api/v1/photos", { method: "POST", body: file,
    headers: { "Content-Type": file.type || "image/jpeg", Authorization: `Bearer ${state.token}` } });
  if (!r.ok) { status.textContent = "照片上传失败，请重试"; return; }
  document.querySelector(`[data-photo="${CSS.escape(id)}"]`).value = (await r.json()).url;
  status.textContent = "照片已上传";
});

if (state.token) start();
