// posekit serve: the browser page. Plain JS, no libraries, nothing from the network but this server.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas"), ctx = canvas.getContext("2d");
  const state = { models: {}, key: sessionStorage.getItem("posekit-key") || "", ws: null, stream: null };
  const KPT_THR = 0.3;

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (state.key) h["Authorization"] = "Bearer " + state.key;
    return h;
  }
  function setStatus(text, isError) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "";
  }
  const rgb = (c) => "rgb(" + c[0] + "," + c[1] + "," + c[2] + ")";

  async function loadModels() {
    const r = await fetch("/v1/models", { headers: headers() });
    if (r.status === 401) {
      $("key-box").hidden = false;
      setStatus("this server needs an API key", true);
      return;
    }
    const body = await r.json();
    const sel = $("model");
    sel.innerHTML = "";
    for (const m of body.models) {
      state.models[m.name] = m;
      const o = document.createElement("option");
      o.value = m.name;
      o.textContent = m.name + " (" + m.paradigm + ")";
      sel.appendChild(o);
    }
    sel.value = body.default;
    showModel();
    setStatus("ready");
    document.body.dataset.ready = "1";
  }
  function showModel() {
    const m = state.models[$("model").value];
    if (m) $("model-info").textContent = m.name + ": " + m.kind + ", " + m.schema.keypoints.length +
      " keypoints (" + m.schema.name + "), input " + m.input_size.join("×") + ", " + m.backend;
  }

  // Skeletons in the schema's colours (RGB), keypoints above the limbs, boxes thin.
  function drawPeople(people, schema) {
    const lw = Math.max(2, Math.round(Math.max(canvas.width, canvas.height) / 300));
    for (const p of people) {
      ctx.strokeStyle = "rgba(255,255,255,0.8)";
      ctx.lineWidth = 1;
      ctx.strokeRect(p.box[0], p.box[1], p.box[2] - p.box[0], p.box[3] - p.box[1]);
      ctx.lineWidth = lw;
      schema.skeleton.forEach(([a, b], i) => {
        const ka = p.keypoints[a], kb = p.keypoints[b];
        if (ka[2] < KPT_THR || kb[2] < KPT_THR) return;
        ctx.strokeStyle = rgb(schema.skeleton_colors[i]);
        ctx.beginPath(); ctx.moveTo(ka[0], ka[1]); ctx.lineTo(kb[0], kb[1]); ctx.stroke();
      });
      p.keypoints.forEach((k, i) => {
        if (k[2] < KPT_THR) return;
        ctx.fillStyle = rgb(schema.keypoint_colors[i]);
        ctx.beginPath(); ctx.arc(k[0], k[1], lw + 1, 0, 2 * Math.PI); ctx.fill();
      });
    }
  }
  function showTimes(times) {
    const tb = $("times").querySelector("tbody");
    tb.innerHTML = "";
    let total = 0;
    for (const [k, v] of Object.entries(times)) {
      total += v;
      const tr = document.createElement("tr");
      tr.innerHTML = "<td></td><td></td>";
      tr.cells[0].textContent = k; tr.cells[1].textContent = v.toFixed(1);
      tb.appendChild(tr);
    }
    const tr = document.createElement("tr");
    tr.innerHTML = "<td><b>sum</b></td><td></td>";
    tr.cells[1].textContent = total.toFixed(1);
    tb.appendChild(tr);
  }
  function showResult(source, result) {
    const schema = state.models[result.model].schema;
    if (canvas.width !== result.image.width || canvas.height !== result.image.height) {
      canvas.width = result.image.width; canvas.height = result.image.height;
    }
    ctx.drawImage(source, 0, 0, canvas.width, canvas.height);
    drawPeople(result.people, schema);
    $("people-count").textContent = String(result.people.length);
    showTimes(result.times_ms);
  }

  async function runImage(file) {
    stopWebcam();
    document.body.dataset.drawn = "";
    setStatus("running " + $("model").value + "…");
    $("hint").hidden = true;
    let bitmap;
    try {
      bitmap = await createImageBitmap(file);
    } catch (e) {
      setStatus("the browser cannot read this file as an image", true);
      return;
    }
    const url = "/v1/pose?format=json&model=" + encodeURIComponent($("model").value);
    const r = await fetch(url, { method: "POST", body: file,
      headers: headers({ "Content-Type": file.type || "application/octet-stream" }) });
    const body = await r.json();
    if (!r.ok) { setStatus(r.status + ": " + body.error, true); return; }
    showResult(bitmap, body);
    setStatus("done: " + body.people.length + " people");
    document.body.dataset.drawn = "1";
  }

  // Live mode: frames go to /v1/stream as JPEG; the server keeps only the newest one, so the page sends a new
  // frame when the previous answer came back (and at most one more meanwhile).
  async function startWebcam() {
    if (state.stream) { stopWebcam(); return; }
    try {
      state.stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    } catch (e) {
      setStatus("no webcam: " + e.message, true);
      return;
    }
    const video = $("video");
    video.srcObject = state.stream;
    await video.play();
    $("hint").hidden = true;
    $("webcam").textContent = "stop webcam";
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(proto + "//" + location.host + "/v1/stream");
    ws.binaryType = "arraybuffer";
    state.ws = ws;
    const grab = document.createElement("canvas");
    let inFlight = 0, times = [];
    function sendFrame() {
      if (ws.readyState !== WebSocket.OPEN || inFlight >= 2) return;
      grab.width = video.videoWidth; grab.height = video.videoHeight;
      grab.getContext("2d").drawImage(video, 0, 0);
      inFlight++;
      grab.toBlob((b) => { if (b && ws.readyState === WebSocket.OPEN) ws.send(b); }, "image/jpeg", 0.8);
    }
    ws.onopen = () => {
      const settings = { model: $("model").value };
      if (state.key) settings.api_key = state.key;
      ws.send(JSON.stringify(settings));
      sendFrame(); sendFrame();
    };
    ws.onmessage = (ev) => {
      inFlight = Math.max(0, inFlight - 1);
      const msg = JSON.parse(ev.data);
      if (msg.error) { setStatus(msg.status + ": " + msg.error, true); }
      else {
        showResult(video, msg);
        const now = performance.now();
        times.push(now);
        times = times.filter((t) => now - t < 2000);
        $("fps").textContent = (times.length / 2).toFixed(1) + " frames/s (" + msg.dropped + " dropped)";
        setStatus("live");
      }
      sendFrame();
    };
    ws.onclose = (ev) => { if (state.ws === ws) { setStatus("stream closed " + (ev.reason || ev.code), true); stopWebcam(); } };
  }
  function stopWebcam() {
    if (state.ws) { const ws = state.ws; state.ws = null; ws.close(); }
    if (state.stream) { state.stream.getTracks().forEach((t) => t.stop()); state.stream = null; }
    $("webcam").textContent = "start webcam";
  }

  $("file").addEventListener("change", (e) => { if (e.target.files[0]) runImage(e.target.files[0]); });
  $("model").addEventListener("change", showModel);
  $("webcam").addEventListener("click", startWebcam);
  $("api-key").addEventListener("change", (e) => {
    state.key = e.target.value; sessionStorage.setItem("posekit-key", state.key); loadModels();
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    if (e.dataTransfer.files[0]) runImage(e.dataTransfer.files[0]);
  });
  loadModels().catch((e) => setStatus("cannot reach the server: " + e.message, true));
})();
