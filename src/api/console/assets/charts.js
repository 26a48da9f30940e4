// Keyhaven web console: the bar charts of the key page and the audit page (after core.js).
// SVG through createElementNS, with presentation attributes only (no inline style for the
// Content-Security-Policy to have to allow).
'use strict';

(() => {
  const { append, el, formatLocal } = window.Keyhaven;

  const SVG_NS = 'http://www.w3.org/2000/svg';
  // Okabe–Ito-like palette, distinguishable for most colour-blind readers; the last is "other".
  const SERIES_COLOURS = [
    '#0072b2', '#e69f00', '#009e73', '#cc79a7', '#56b4e9', '#d55e00', '#7b61c4', '#b8a400',
    '#8c8c8c',
  ];

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    if (attrs) {
      for (const [name, value] of Object.entries(attrs)) {
        if (value === undefined || value === null) continue;
        if (name === 'text') node.textContent = value;
        else node.setAttribute(name, String(value));
      }
    }
    return append(node, children);
  }

  function axisLabel(date, step) {
    if (step >= 86400000) return formatLocal(date, false).slice(0, 10);
    if (step >= 3600000) return formatLocal(date, false).slice(5);
    return formatLocal(date, step < 60000).slice(11);
  }

  // Stacked bars: `series` [{label, colour, counts[]}] over buckets of `step` ms from `start`.
  function barChart({ id, start, step, series, label, width, height }) {
    const buckets = series.length ? series[0].counts.length : 0;
    const margin = { top: 10, right: 30, bottom: 26, left: 36 };
    const plotW = width - margin.left - margin.right;
    const plotH = height - margin.top - margin.bottom;
    const totals = new Array(buckets).fill(0);
    for (const s of series) s.counts.forEach((c, i) => { totals[i] += c; });
    const max = Math.max(1, ...totals);
    const niceMax = max <= 5 ? max : Math.ceil(max / 5) * 5;
    const root = svg('svg', {
      id, class: 'chart', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img',
      'aria-label': label, preserveAspectRatio: 'xMinYMin meet',
    });
    root.appendChild(svg('title', { text: label }));
    const y = (v) => margin.top + plotH - (v / niceMax) * plotH;
    for (const tick of [0, niceMax / 2, niceMax]) {
      const ty = y(tick);
      root.appendChild(svg('line', { x1: margin.left, x2: width - margin.right, y1: ty, y2: ty,
        stroke: '#d0d4da', 'stroke-width': 1 }));
      if (tick === niceMax / 2 && !Number.isInteger(tick)) continue;
      root.appendChild(svg('text', { x: margin.left - 6, y: ty + 4, 'text-anchor': 'end',
        'font-size': 11, fill: '#555b63', text: String(tick) }));
    }
    const slot = plotW / Math.max(1, buckets);
    const barW = Math.max(1, slot * 0.8);
    for (let i = 0; i < buckets; i++) {
      let base = 0;
      const x = margin.left + i * slot + (slot - barW) / 2;
      const from = new Date(start + i * step);
      for (const s of series) {
        const c = s.counts[i];
        if (!c) continue;
        const top = y(base + c);
        const rect = svg('rect', { x: x.toFixed(2), y: top.toFixed(2), width: barW.toFixed(2),
          height: Math.max(0.5, y(base) - top).toFixed(2), fill: s.colour });
        rect.appendChild(svg('title', {
          text: `${s.label}: ${c} call(s) from ${formatLocal(from)}`,
        }));
        root.appendChild(rect);
        base += c;
      }
    }
    root.appendChild(svg('line', { x1: margin.left, x2: width - margin.right,
      y1: margin.top + plotH, y2: margin.top + plotH, stroke: '#8a9099', 'stroke-width': 1 }));
    // Axis labels at a regular interval of buckets, as many as fit.
    const every = Math.max(1, Math.ceil(buckets / Math.max(1, Math.floor(plotW / 120))));
    for (let i = 0; i < buckets; i += every) {
      const x = margin.left + i * slot + slot / 2;
      root.appendChild(svg('text', {
        x: x.toFixed(2), y: height - 8, 'font-size': 11, fill: '#555b63',
        'text-anchor': i === 0 ? 'start' : 'middle',
        text: axisLabel(new Date(start + i * step), step),
      }));
    }
    return root;
  }

  function legend(series) {
    return el('ul', { class: 'legend', id: 'audit-chart-legend' }, series.map((s) => {
      const swatch = svg('svg', { width: 12, height: 12, 'aria-hidden': 'true',
        class: 'swatch' }, svg('rect', { width: 12, height: 12, rx: 2, fill: s.colour }));
      return el('li', { title: s.title || s.label }, swatch, ' ', s.label, ` (${s.total})`);
    }));
  }

  const STEPS = [
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
    172800, 604800, 2592000,
  ].map((s) => s * 1000);

  function bucketStep(range) {
    const wanted = range / 60; // at most 60 buckets, and (steps grow ≤ 2.5×) at least 24
    return STEPS.find((s) => s >= wanted) || Math.ceil(wanted / 86400000) * 86400000;
  }

  function stepText(step) {
    const s = step / 1000;
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${s / 60} min`;
    if (s < 86400) return `${s / 3600} h`;
    return `${s / 86400} d`;
  }

  Object.assign(window.Keyhaven, { SERIES_COLOURS, barChart, legend, bucketStep, stepText });
})();
