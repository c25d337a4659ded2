// The history page: picks a scope and draws it with uPlot from the Prometheus query API.
// Hand-written, no build step. The choice lives in the URL's hash (links can be shared); the
// bearer token, when the user gives one, in sessionStorage (gone with the tab) and is sent only
// to this recorder. <body data-state> says where the page is: loading, drawn, empty, error or
// unauthorized (the browser test reads it).
"use strict";
(() => {
  const API = "prometheus/api/v1/";
  const TOKEN_KEY = "kube-metrics-recorder.token";
  const TIMEOUT_MS = 30000;
  const POINTS = 300;
  const MAX_SERIES = 12;
  const RANGES = { "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800, "30d": 2592000, "400d": 34560000 };
  const LEVELS = ["namespace", "workload", "pod", "container"];
  const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939"];
  const $ = (id) => document.getElementById(id);
  const picks = [...LEVELS, "node"];
  let plot = null;
  let generation = 0;

  class Unauthorized extends Error {}

  const metric = (scope, resource) =>
    `recorder_${scope}_${resource === "cpu" ? "cpu_usage_cores" : "memory_working_set_bytes"}`;
  const quote = (value) => `"${value.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
  const selector = (name, pairs) =>
    `${name}{${pairs.map(([label, value]) => `${label}=${quote(value)}`).join(",")}}`;

  function state() {
    const s = { scope: $("scope").value, resource: $("resource").value, range: $("range").value };
    for (const id of picks) s[id] = $(id).value;
    return s;
  }

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    for (const id of ["scope", "resource", "range"]) {
      const value = params.get(id);
      if (value && [...$(id).options].some((o) => o.value === value)) $(id).value = value;
    }
    return params;
  }

  function writeHash(s) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(s)) if (value) params.set(key, value);
    history.replaceState(null, "", `#${params}`);
  }

  async function api(path, params) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(`${API}${path}?${params}`, {
      headers, signal: AbortSignal.timeout(TIMEOUT_MS), credentials: "omit",
    });
    if (response.status === 401) throw new Unauthorized();
    let body = null;
    try { body = await response.json(); } catch { /* not JSON: reported below */ }
    if (!response.ok || !body || body.status !== "success") {
      throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
    }
    return body.data;
  }

  function window_(s) {
    const end = Math.floor(Date.now() / 1000);
    const seconds = RANGES[s.range];
    const step = Math.max(15, Math.ceil(seconds / POINTS));
    return { start: end - seconds, end, step };
  }

  // The matchers chosen above ``level`` (all of them for the chart).
  function chosen(s, upto) {
    const levels = s.scope === "node" ? ["node"] : LEVELS;
    const pairs = [];
    for (const level of levels.slice(0, upto === undefined ? levels.length : levels.indexOf(upto))) {
      if (s[level]) pairs.push([level, s[level]]);
    }
    return pairs;
  }

  async function fill(id, s, want) {
    const { start, end } = window_(s);
    const match = selector(metric(s.scope, s.resource), chosen(s, id));
    const values = await api(`label/${encodeURIComponent(id)}/values`,
      new URLSearchParams({ "match[]": match, start, end }));
    const select = $(id);
    const all = id === "node" ? "all nodes" : `all ${id}s`;
    select.replaceChildren(new Option(all, ""), ...values.map((v) => new Option(v, v)));
    select.value = values.includes(want) ? want : "";
  }

  // A pick's value changed: refill the picks below it, then draw.
  async function refresh(from, wanted) {
    const mine = ++generation;
    const s = state();
    document.body.dataset.scope = s.scope;
    const levels = s.scope === "node" ? ["node"] : LEVELS;
    const index = from === undefined ? 0 : levels.indexOf(from) + 1;
    setState("loading", "Loading…");
    try {
      for (const id of levels.slice(Math.max(0, index))) {
        await fill(id, state(), wanted ? wanted.get(id) : "");
        if (mine !== generation) return;
      }
      await draw(state(), mine);
    } catch (error) {
      if (mine !== generation) return;
      if (error instanceof Unauthorized) {
        setState("unauthorized", sessionStorage.getItem(TOKEN_KEY)
          ? "The recorder refused this token (401): enter another one."
          : "This recorder needs a bearer token (401): enter it above.");
      } else {
        setState("error", `Could not load the history: ${error.message}`);
      }
    }
  }

  async function draw(s, mine) {
    writeHash(s);
    const { start, end, step } = window_(s);
    const pairs = chosen(s);
    const name = metric(s.scope, s.resource);
    let query = selector(name, pairs);
    if (s.scope === "container") {
      const open = LEVELS.find((level) => !s[level]);
      query = `sum by (${open || "container"}) (${query})`;
    }
    const data = await api("query_range", new URLSearchParams({ query, start, end, step }));
    if (mine !== generation) return;
    $("title").textContent = query;
    const series = data.result.slice(0, MAX_SERIES);
    const xs = [];
    for (let t = start; t <= end; t += step) xs.push(t);
    const ys = series.map((one) => {
      const column = new Array(xs.length).fill(null);
      for (const [t, v] of one.values) {
        const i = Math.round((t - start) / step);
        if (i >= 0 && i < xs.length) column[i] = Number(v);
      }
      return column;
    });
    render(s, xs, ys, series.map((one) => legend(one.metric)));
    const points = ys.reduce((n, column) => n + column.filter((v) => v !== null).length, 0);
    document.body.dataset.series = String(series.length);
    document.body.dataset.points = String(points);
    if (!series.length) {
      setState("empty", "No samples in this range for this choice.");
    } else {
      const more = data.result.length > MAX_SERIES ? ` (the first ${MAX_SERIES} of ${data.result.length})` : "";
      setState("drawn", `${series.length} series${more}, one point per ${step} s.`);
    }
  }

  function legend(labels) {
    const shown = Object.entries(labels).filter(([key]) => key !== "__name__");
    return shown.length ? shown.map(([key, value]) => `${key}=${value}`).join(", ") : "total";
  }

  function format(resource, value) {
    if (value === null || value === undefined) return "–";
    if (resource === "cpu") return value < 1 ? `${+(value * 1000).toPrecision(3)}m` : `${+value.toPrecision(3)}`;
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(value) >= 1024 && i < units.length - 1) { value /= 1024; i += 1; }
    return `${+value.toPrecision(3)} ${units[i]}`;
  }

  function render(s, xs, ys, labels) {
    if (plot) plot.destroy();
    const show = (u, values) => values.map((v) => format(s.resource, v));
    plot = new uPlot({
      width: Math.max(320, $("chart").clientWidth),
      height: 360,
      series: [{}, ...labels.map((label, i) => ({
        label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false,
        value: (u, v) => format(s.resource, v),
      }))],
      axes: [{}, { values: show, size: 70 }],
      scales: { y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
    }, [xs, ...ys], $("chart"));
  }

  function setState(name, message) {
    document.body.dataset.state = name;
    $("status").textContent = message;
  }

  function start() {
    const wanted = readHash();
    $("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
    for (const id of ["scope", "resource", "range"]) {
      $(id).addEventListener("change", () => refresh(undefined, new URLSearchParams(state())));
    }
    for (const id of picks) $(id).addEventListener("change", () => refresh(id));
    $("auth").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token").value.trim();
      if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
      refresh(undefined, new URLSearchParams(state()));
    });
    $("forget").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      $("token").value = "";
      refresh(undefined, new URLSearchParams(state()));
    });
    window.addEventListener("resize", () => {
      if (plot) plot.setSize({ width: Math.max(320, $("chart").clientWidth), height: 360 });
    });
    refresh(undefined, wanted);
  }

  start();
})();
