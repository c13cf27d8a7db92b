// pytest-ragbench report: sorts, filters and pages the per-query tables from the embedded JSON
// (#rb-data) and builds drill-downs on demand. Data reaches the page only through textContent
// and element properties, never as HTML. Without this script the page is a plain table.
(() => {
  "use strict";
  const dataEl = document.getElementById("rb-data");
  if (!dataEl) return;
  const DATA = JSON.parse(dataEl.textContent);
  const PAGE = DATA.page || 200;
  const DOCS = DATA.docs || {};
  // Positions in a row array; see CaseRow.compact() in html.py.
  const F_RET = 0, F_ID = 1, F_RUN = 2, F_Q = 3, F_ST = 4, F_V = 5, F_LAT = 6, F_COST = 7,
    F_D = 8;
  // As _STATUS_RANK in html.py (records.OUTCOMES): problems first.
  const STATUS_RANK = { error: 0, failed: 1, xpassed: 2, xfailed: 3, ok: 4 };
  const XFAIL_LABEL = {
    xfailed: "expected failure (xfailed)",
    xpassed: "expected to fail, but passed (xpassed)",
    failed: "expected to fail, but passed: a failure under a strict mark (XPASS(strict))",
  };
  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function isNum(v) {
    return typeof v === "number" && isFinite(v);
  }
  function fmt(v, digits, signed) {
    if (!isNum(v)) return "nan";
    const s = v.toFixed(digits);
    return signed && v >= 0 ? "+" + s : s;
  }
  // Same buckets as html.heat(): h0..h10, h10 best.
  function heat(v, direction) {
    if (!isNum(v) || v < 0 || v > 1) return "";
    const good = direction === "lower" ? 1 - v : v;
    return "h" + Math.floor(good * 10 + 0.5);
  }
  function kv(parent, key, value) {
    const span = el("span");
    span.append(el("span", "k", key), " " + value);
    parent.append(span);
  }
  function heading(parent, text) {
    parent.append(el("h4", null, text));
  }
  function note(parent, text) {
    parent.append(el("p", "rb-note", text));
  }
  function orDash(v) {
    return v === null || v === undefined ? "?" : v;
  }

  function docTable(rows, withRank) {
    const hasDocs = Object.keys(DOCS).length > 0;
    const table = el("table", "rb-docs");
    const head = table.createTHead().insertRow();
    const cols = withRank ? ["#", "document", "score", "grade"] : ["document", "grade"];
    if (hasDocs) cols.push("text");
    for (const c of cols) head.append(el("th", null, c));
    const body = table.createTBody();
    rows.forEach((doc, i) => {
      const tr = body.insertRow();
      if (withRank) {
        if (isNum(doc[2]) && doc[2] > 0) tr.className = "rel";
        tr.append(el("td", null, i + 1), el("td", null, doc[0]), el("td", null, fmt(doc[1], 4)),
          el("td", null, doc[2] === null ? "\u2013" : doc[2]));
      } else {
        tr.append(el("td", null, doc[0]), el("td", null, doc[1]));
      }
      if (hasDocs) tr.append(el("td", "rb-snip", DOCS[doc[0]] || ""));
    });
    return table;
  }

  // Mirrors the drill() macro in report.html.j2.
  function detailBody(row) {
    const d = row[F_D] || {};
    const body = el("div", "rb-drill-body");
    if (d.query !== undefined) {
      const p = el("p", "rb-q");
      p.append(el("span", "k", "question"), " " + d.query);
      body.append(p);
    }
    const meta = el("p", "rb-meta");
    if (d.type !== undefined) kv(meta, "type", d.type);
    if (d.difficulty !== undefined) kv(meta, "difficulty", d.difficulty);
    if (d.tags !== undefined) kv(meta, "tags", d.tags.join(", "));
    if (d.n_relevant !== undefined) kv(meta, "relevant docs", d.n_relevant);
    kv(meta, "latency", fmt(row[F_LAT], 2) + " ms");
    if (d.usage !== undefined) {
      kv(meta, "tokens", orDash(d.usage[0]) + " prompt + " + orDash(d.usage[1]) +
        " completion" + (d.usage[3] ? " (estimated: the endpoint sent no usage)" : "") +
        ", " + orDash(d.usage[2]) + " requests");
    }
    if (isNum(row[F_COST])) kv(meta, "cost", "$" + fmt(row[F_COST], 6));
    body.append(meta);
    if (d.xfail !== undefined) {
      const p = el("p", "rb-xfail");
      p.append(el("span", "k", XFAIL_LABEL[d.xfail[1]] ||
        "listed as a known failure, not applied (--runxfail)"), " " + d.xfail[0]);
      body.append(p);
    }
    if (d.no_relevant) {
      note(body, "No relevant document in the labels: scored 0, as trec_eval does.");
    }
    if (d.error !== undefined) {
      const p = el("p", "rb-err");
      p.append(el("span", "k", "error in " + d.error[0]), " " + d.error[1] + ": " + d.error[2]);
      body.append(p);
    }
    if (d.thresholds !== undefined) {
      heading(body, "per-query thresholds");
      const ul = el("ul", "rb-thr");
      // A missed threshold of an expected failure is not a failure to alarm anyone.
      const miss = row[F_ST] === "xfailed" ? "xfail" : "fail";
      for (const t of d.thresholds) {
        // null: the metric could not be computed, which neither passes nor fails
        const na = t[4] === null;
        ul.append(el("li", t[4] ? "pass" : na ? "na" : miss,
          (t[4] ? "PASS" : na ? "NOT COMPUTED" : miss.toUpperCase()) + " " +
          t[0] + " = " + fmt(t[3], 4) + ", expected " + t[1] + " " + t[2]));
      }
      body.append(ul);
    }
    if (d.ranks !== undefined) {
      const p = el("p", "rb-ranks");
      const ranks = d.ranks.map((r) => r[0] + " " + (r[1] === null ? "not retrieved" : "at " + r[1]));
      p.append(el("span", "k", "relevant documents by rank"), " " + ranks.join(", ") +
        (d.ranks_more ? " and " + d.ranks_more + " more" : ""));
      body.append(p);
    }
    if (d.retrieved !== undefined) {
      heading(body, "retrieved");
      body.append(docTable(d.retrieved, true));
      if (d.retrieved_more) {
        note(body, d.retrieved_more + " more retrieved documents are in cases.jsonl.");
      }
    }
    if (d.missed !== undefined) {
      heading(body, "missed relevant");
      body.append(docTable(d.missed, false));
      if (d.missed_more) note(body, d.missed_more + " more missed documents are in cases.jsonl.");
    }
    if (d.answer !== undefined) {
      heading(body, "answer");
      body.append(el("div", "rb-answer", d.answer));
    }
    if (d.contexts !== undefined) {
      heading(body, "contexts");
      const ol = el("ol", "rb-ctx");
      for (const c of d.contexts) ol.append(el("li", null, c));
      body.append(ol);
      if (d.contexts_more) note(body, d.contexts_more + " more contexts are in cases.jsonl.");
    }
    if (d.judge !== undefined) {
      heading(body, "judge");
      for (const metric of Object.keys(d.judge)) {
        const box = el("div", "rb-judge");
        box.append(el("h5", null, metric));
        const ul = el("ul");
        for (const line of d.judge[metric]) {
          const li = el("li");
          if (line[2] !== null) {
            li.append(el("span", "rb-v " + (line[2] ? "yes" : "no"), line[2] ? "\u2713" : "\u2717"),
              " ");
          }
          if (line[0]) li.append(el("span", "k", line[0]), " ");
          li.append(String(line[1]));
          if (line[3]) li.append(" ", el("span", "rb-why", line[3]));
          ul.append(li);
        }
        box.append(ul);
        body.append(box);
      }
    }
    return body;
  }

  function drillSummary(row) {
    const d = row[F_D] || {};
    let s = "details: " + (d.retrieved ? d.retrieved.length : 0) + " retrieved, " +
      (d.missed ? d.missed.length : 0) + " missed";
    if (d.error) s += ", error";
    if (d.xfail) s += ", expected failure";
    if (d.answer !== undefined) s += ", answer";
    if (d.judge) s += ", judge";
    return s;
  }

  function setup(table) {
    const spec = DATA.tables[Number(table.getAttribute("data-rb-table"))];
    if (!spec) return;
    const section = table.closest(".rb-cases");
    const tbody = table.tBodies[0];
    const columns = spec.columns.map((c) => ({ key: c[0], label: c[1], kind: c[2], dir: c[3] }));
    const rows = spec.rows;
    const state = { key: null, dir: 1, page: 0, text: "", status: "", retriever: "" };
    let view = rows.map((_, i) => i);
    let haystack = null;

    function search(i) {
      if (haystack === null) {
        haystack = rows.map((r) => {
          const d = r[F_D] || {};
          return [r[F_ID], r[F_Q], d.query || "", d.type || "", d.difficulty || "",
            (d.tags || []).join(" "), d.error ? d.error.join(" ") : ""].join("\n").toLowerCase();
        });
      }
      return haystack[i];
    }
    function sortValue(i, key) {
      const r = rows[i];
      switch (key) {
        case "id": return r[F_ID];
        case "retriever": return spec.retrievers[r[F_RET]];
        case "run": return r[F_RUN];
        case "query": return r[F_Q];
        case "status": return STATUS_RANK[r[F_ST]];
        case "latency": return isNum(r[F_LAT]) ? r[F_LAT] : null;
        case "cost": return isNum(r[F_COST]) ? r[F_COST] : null;
        default: {
          const v = r[F_V][Number(key.slice(1))];
          return isNum(v) ? v : null;
        }
      }
    }
    function compare(a, b) {
      const va = sortValue(a, state.key), vb = sortValue(b, state.key);
      // Missing values go last in either direction.
      if (va === null || va === undefined) return vb === null || vb === undefined ? a - b : 1;
      if (vb === null || vb === undefined) return -1;
      const c = typeof va === "string" ? collator.compare(va, String(vb)) : va - vb;
      return c !== 0 ? c * state.dir : a - b;
    }

    function cell(row, col) {
      const td = el("td");
      switch (col.key) {
        case "id": td.className = "rb-nw"; td.textContent = row[F_ID]; break;
        case "retriever": td.className = "rb-nw"; td.textContent = spec.retrievers[row[F_RET]];
          break;
        case "run": td.className = "num"; td.textContent = row[F_RUN]; break;
        case "query": td.className = "rb-query"; td.textContent = row[F_Q]; td.title = row[F_Q];
          break;
        case "status": {
          const st = Object.prototype.hasOwnProperty.call(STATUS_RANK, row[F_ST])
            ? row[F_ST] : "error";
          td.append(el("span", "badge st-" + st, st));
          break;
        }
        case "latency": td.className = "num"; td.textContent = fmt(row[F_LAT], 1); break;
        case "cost": td.className = "num";
          td.textContent = isNum(row[F_COST]) ? fmt(row[F_COST], 6) : ""; break;
        default: {
          const v = row[F_V][Number(col.key.slice(1))];
          td.className = ("num " + heat(v, col.dir)).trim();
          td.textContent = fmt(v, 4);
        }
      }
      return td;
    }

    function rowElements(i) {
      const row = rows[i];
      const tr = el("tr", "rb-row st-" + row[F_ST]);
      for (const col of columns) tr.append(cell(row, col));
      const drill = el("tr", "rb-drill");
      const td = el("td");
      td.colSpan = columns.length;
      const details = el("details");
      details.append(el("summary", null, drillSummary(row)));
      // Built on first open: thousands of drill-downs would be wasted work up front.
      details.addEventListener("toggle", () => {
        if (details.open && details.childElementCount === 1) details.append(detailBody(row));
      });
      td.append(details);
      drill.append(td);
      return [tr, drill];
    }

    const pager = section.querySelector(".rb-pager");
    const pageInfo = section.querySelector(".rb-pageinfo");
    const count = section.querySelector(".rb-count");
    function pages() {
      return Math.max(1, Math.ceil(view.length / PAGE));
    }
    function render() {
      state.page = Math.max(0, Math.min(state.page, pages() - 1));
      const start = state.page * PAGE;
      const frag = document.createDocumentFragment();
      for (const i of view.slice(start, start + PAGE)) frag.append(...rowElements(i));
      tbody.replaceChildren(frag);
      const shown = view.length ? (start + 1) + "\u2013" + Math.min(start + PAGE, view.length)
        : "0";
      pageInfo.textContent = "page " + (state.page + 1) + " of " + pages() + " (rows " + shown +
        " of " + view.length + ")";
      count.textContent = view.length === rows.length ? rows.length + " rows"
        : view.length + " of " + rows.length + " rows match";
      pager.querySelector(".rb-first").disabled = state.page === 0;
      pager.querySelector(".rb-prev").disabled = state.page === 0;
      pager.querySelector(".rb-next").disabled = state.page >= pages() - 1;
      pager.querySelector(".rb-last").disabled = state.page >= pages() - 1;
      table.setAttribute("data-page", String(state.page + 1));
      table.setAttribute("data-rows", String(view.length));
    }
    function update() {
      const text = state.text.toLowerCase();
      const ret = state.retriever === "" ? -1 : Number(state.retriever);
      view = [];
      for (let i = 0; i < rows.length; i++) {
        const r = rows[i];
        if (state.status && r[F_ST] !== state.status) continue;
        if (ret >= 0 && r[F_RET] !== ret) continue;
        if (text && !search(i).includes(text)) continue;
        view.push(i);
      }
      if (state.key !== null) view.sort(compare);
      render();
    }

    // Sortable headers: the column labels become buttons (only with the script on).
    for (const th of table.tHead.rows[0].cells) {
      const key = th.getAttribute("data-key");
      if (!key) continue;
      const btn = el("button", "rb-sort", th.textContent);
      btn.type = "button";
      btn.title = "sort by " + th.textContent;
      th.textContent = "";
      th.append(btn);
      btn.addEventListener("click", () => {
        state.dir = state.key === key ? -state.dir : 1;
        state.key = key;
        for (const other of table.tHead.rows[0].cells) other.removeAttribute("aria-sort");
        th.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending");
        state.page = 0;
        update();
      });
    }

    const controls = section.querySelector(".rb-controls");
    const retSelect = controls.querySelector(".rb-ret");
    spec.retrievers.forEach((name, i) => {
      const opt = el("option", null, name);
      opt.value = String(i);
      retSelect.append(opt);
    });
    if (spec.retrievers.length < 2) controls.querySelector(".rb-ret-label").hidden = true;
    controls.querySelector(".rb-text").addEventListener("input", (ev) => {
      state.text = ev.target.value;
      state.page = 0;
      update();
    });
    controls.querySelector(".rb-status").addEventListener("change", (ev) => {
      state.status = ev.target.value;
      state.page = 0;
      update();
    });
    retSelect.addEventListener("change", (ev) => {
      state.retriever = ev.target.value;
      state.page = 0;
      update();
    });
    pager.querySelector(".rb-first").addEventListener("click", () => { state.page = 0; render(); });
    pager.querySelector(".rb-prev").addEventListener("click", () => { state.page -= 1; render(); });
    pager.querySelector(".rb-next").addEventListener("click", () => { state.page += 1; render(); });
    pager.querySelector(".rb-last").addEventListener("click", () => {
      state.page = pages() - 1;
      render();
    });
    controls.hidden = false;
    pager.hidden = false;
    const staticNote = section.querySelector(".rb-static-note");
    if (staticNote) staticNote.remove();
    update();
    table.setAttribute("data-ready", "1");
  }

  for (const table of document.querySelectorAll("table[data-rb-table]")) setup(table);
  document.documentElement.setAttribute("data-rb-ready", "1");
})();
