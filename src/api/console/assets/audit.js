// Keyhaven web console: the audit page, its filters, chart and table (after core.js and
// charts.js).
'use strict';

(() => {
  const {
    state, el, fill, setMain, breakable, loading, tableWrap, badge, field, formatLocal, parseTime,
    timeEl, timezoneLabel, showError, clearError, readAudit, listAllAliases, keyIdOfArn, keyLabel,
    resourceLink, SERIES_COLOURS, barChart, legend, bucketStep, stepText,
  } = window.Keyhaven;

  // ---------------------------------------------------------------------------------------
  // Audit log
  // ---------------------------------------------------------------------------------------
  function recordOutcome(r) {
    return r && r.outcome && typeof r.outcome === 'object' ? r.outcome : null;
  }

  function auditMatches(r, f, range) {
    if (r.phase === 'request' && !f.showRequests) return false;
    if (f.principal && !String(r.principal || '').toLowerCase()
      .includes(f.principal.toLowerCase())) return false;
    if (f.key) {
      const needle = f.key.toLowerCase();
      if (!Array.isArray(r.keys) || !r.keys.some((k) => String(k).toLowerCase().includes(needle))) {
        return false;
      }
    }
    if (f.operation && !String(r.operation || '').toLowerCase()
      .includes(f.operation.toLowerCase())) return false;
    const outcome = recordOutcome(r);
    if (f.outcome === 'Ok' && !(outcome && outcome.code === 'Ok')) return false;
    if (f.outcome === 'refused' && !(outcome && outcome.code !== 'Ok')) return false;
    if (range.from !== null || range.to !== null) {
      const t = Date.parse(r.time);
      if (Number.isNaN(t)) return false;
      if (range.from !== null && t < range.from) return false;
      if (range.to !== null && t > range.to) return false;
    }
    return true;
  }

  function localInputTime(text) {
    if (!text) return null;
    const t = new Date(text).getTime(); // datetime-local: a local time without offset
    return Number.isNaN(t) ? null : t;
  }

  function renderAudit(current) {
    const f = state.audit;
    const input = (id, value, props) => el('input', Object.assign({ id, value,
      autocomplete: 'off', spellcheck: 'false' }, props || {}));
    const principal = input('audit-principal', f.principal,
      { type: 'search', placeholder: 'user/alice' });
    const key = input('audit-key', f.key, { type: 'search', placeholder: 'key id or ARN' });
    const operation = input('audit-operation', f.operation,
      { type: 'search', placeholder: 'kms:Encrypt' });
    const outcome = el('select', { id: 'audit-outcome' },
      el('option', { value: 'any' }, 'any'), el('option', { value: 'Ok' }, 'Ok'),
      el('option', { value: 'refused' }, 'refused'));
    outcome.value = f.outcome;
    const from = input('audit-from', f.from, { type: 'datetime-local', step: '1' });
    const to = input('audit-to', f.to, { type: 'datetime-local', step: '1' });
    const lines = input('audit-lines', String(f.lines),
      { type: 'number', min: '1', max: '10000', step: '1', class: 'short' });
    const showRequests = el('input', { id: 'audit-show-requests', type: 'checkbox',
      checked: f.showRequests });
    const refresh = el('button', { id: 'audit-refresh', type: 'submit' }, 'Refresh');
    const form = el('form', { id: 'audit-filters', class: 'filters',
      'aria-label': 'Filter the audit log' },
    field('audit-principal', 'Principal', principal),
    field('audit-key', 'Key', key),
    field('audit-operation', 'Operation', operation),
    field('audit-outcome', 'Outcome', outcome),
    field('audit-from', 'From (local time)', from, null, 'wide-field'),
    field('audit-to', 'To (local time)', to, null, 'wide-field'),
    field('audit-lines', 'Last lines', lines),
    el('div', { class: 'field checkbox' }, showRequests,
      el('label', { for: 'audit-show-requests' }, 'Show "request" records')),
    el('div', { class: 'field actions-field' }, refresh));

    const count = el('p', { id: 'audit-count', class: 'count', 'aria-live': 'polite' });
    const chartBox = el('div', { class: 'chart-box', id: 'audit-chart-box' });
    const tableBox = el('div');
    setMain(el('h2', null, 'Audit log'), form, count,
      el('section', { class: 'card', 'aria-labelledby': 'audit-chart-title' },
        el('h3', { id: 'audit-chart-title' }, 'Calls per key over time'), chartBox),
      tableBox);

    let records = [];
    let loaded = false;

    function readFilters() {
      f.principal = principal.value.trim();
      f.key = key.value.trim();
      f.operation = operation.value.trim();
      f.outcome = outcome.value;
      f.from = from.value;
      f.to = to.value;
      f.showRequests = showRequests.checked;
      const n = Math.floor(Number(lines.value));
      f.lines = Number.isFinite(n) && n >= 1 ? Math.min(n, 10000) : 1000;
    }

    function redraw() {
      if (!loaded) return;
      readFilters();
      const range = { from: localInputTime(f.from), to: localInputTime(f.to) };
      const shown = records.filter((r) => auditMatches(r, f, range));
      count.textContent = `${shown.length} records match (of ${records.length} read)`;
      drawAuditChart(chartBox, shown, range);
      drawAuditTable(tableBox, shown);
    }

    let timer = 0;
    const soon = () => { window.clearTimeout(timer); timer = window.setTimeout(redraw, 150); };
    for (const control of [principal, key, operation, from, to]) {
      control.addEventListener('input', soon);
    }
    outcome.addEventListener('change', redraw);
    showRequests.addEventListener('change', redraw);
    from.addEventListener('change', redraw);
    to.addEventListener('change', redraw);

    async function load() {
      readFilters();
      lines.value = String(f.lines);
      clearError();
      refresh.disabled = true;
      fill(tableBox, loading());
      try {
        const [read] = await Promise.all([
          readAudit(f.lines),
          state.aliasesByKey.size ? null : listAllAliases().catch(() => null),
        ]);
        records = read;
      } catch (error) {
        refresh.disabled = false;
        if (!current()) return;
        showError(error);
        fill(tableBox, el('p', { class: 'muted' }, 'The audit log could not be read.'));
        return;
      }
      refresh.disabled = false;
      if (!current()) return;
      loaded = true;
      redraw();
    }
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      load();
    });
    load();
  }

  function drawAuditChart(box, shown, range) {
    // Key ARNs only: an alias ARN in `keys` (CreateAlias, DeleteAlias) is not a key.
    const keyed = shown
      .map((r) => ({ time: Date.parse(r.time),
        keys: (Array.isArray(r.keys) ? r.keys : []).filter((k) => keyIdOfArn(k)) }))
      .filter((r) => r.keys.length && !Number.isNaN(r.time));
    if (!keyed.length) {
      fill(box, el('p', { class: 'muted', id: 'audit-chart-empty' },
        'No matching record names a key.'));
      return;
    }
    const times = keyed.map((r) => r.time);
    let from = range.from !== null ? range.from : Math.min(...times);
    let to = range.to !== null ? range.to : Math.max(...times);
    if (to - from < 30000) from = to - 30000; // at least 30 one-second buckets
    const step = bucketStep(to - from);
    const start = Math.floor(from / step) * step;
    const buckets = Math.max(1, Math.floor((to - start) / step) + 1);

    const perKey = new Map();
    for (const r of keyed) for (const k of r.keys) perKey.set(k, (perKey.get(k) || 0) + 1);
    const ranked = Array.from(perKey.entries()).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    const top = ranked.slice(0, 8).map(([arn]) => arn);
    const index = new Map(top.map((arn, i) => [arn, i]));
    const series = top.map((arn, i) => ({
      label: keyLabel(arn), title: arn, colour: SERIES_COLOURS[i],
      counts: new Array(buckets).fill(0), total: 0,
    }));
    const other = { label: 'other', title: 'every other key', colour: SERIES_COLOURS[8],
      counts: new Array(buckets).fill(0), total: 0 };
    for (const r of keyed) {
      const b = Math.floor((r.time - start) / step);
      if (b < 0 || b >= buckets) continue;
      for (const k of r.keys) {
        const s = index.has(k) ? series[index.get(k)] : other;
        s.counts[b]++;
        s.total++;
      }
    }
    if (other.total) series.push(other);
    const width = Math.max(320, Math.min(1100, (box.clientWidth || 800)));
    const chart = barChart({
      id: 'audit-chart', start, step, series, width, height: 220,
      label: `Calls per key, ${buckets} buckets of ${stepText(step)} from ` +
        `${formatLocal(new Date(start))}`,
    });
    fill(box, chart, legend(series),
      el('p', { class: 'hint' }, `Buckets of ${stepText(step)}; times in ${timezoneLabel()}. ` +
        'A call naming several keys counts once for each.'));
  }

  function drawAuditTable(box, shown) {
    const newest = shown.slice().reverse().slice(0, 500);
    const tbody = el('tbody', null, newest.map((r) => {
      const o = recordOutcome(r);
      const t = parseTime(r.time);
      const keys = Array.isArray(r.keys) ? r.keys : [];
      const outcomeText = o ? o.code : (r.phase === 'request' ? '(pending)' : '');
      return el('tr', {
        dataset: { phase: r.phase || '', requestId: r.request_id || '', seq: String(r.seq ?? '') },
        class: o && o.code !== 'Ok' ? 'refused' : null,
      },
      el('td', { class: 'nowrap' }, timeEl(t)),
      el('td', { class: 'mono' }, r.operation || '',
        r.phase && r.phase !== 'call' && r.phase !== 'response'
          ? [' ', el('span', { class: 'phase' }, r.phase)] : null),
      el('td', { class: 'mono break-word',
        title: r.access_key_id ? `access key ${r.access_key_id}` : null }, breakable(r.principal)),
      el('td', { class: 'mono' }, keys.map((k, i) => [i ? el('br') : null, resourceLink(k)])),
      el('td', null,
        o ? badge(o.code, o.code === 'Ok' ? 'ok' : 'bad') : outcomeText,
        o && o.reason ? [' ', el('span', { class: 'reason' }, o.reason)] : null,
        r.count !== undefined ? ` (${r.count} refusals${r.throttled ? `, ${r.throttled} throttled` : ''})` : null),
      el('td', { class: 'mono' }, r.source || ''),
      el('td', { class: 'mono' }, r.door || ''));
    }));
    fill(box,
      shown.length > 500
        ? el('p', { class: 'hint' }, `The newest 500 of ${shown.length} are shown.`) : null,
      tableWrap(el('table', { id: 'audit-table', class: 'data' },
        el('thead', null, el('tr', null,
          ['Time', 'Operation', 'Principal', 'Keys', 'Outcome', 'Source', 'Door']
            .map((h) => el('th', { scope: 'col' }, h)))),
        tbody)));
  }

  Object.assign(window.Keyhaven, { renderAudit });
})();
